import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod/mini';
import type { EpochSource } from './createTokenService.js';
import type { SharedFamilies } from './SharedFamilies.js';
import { writeFileAtomic } from './writeFileAtomic.js';

export const SESSIONS_FILE = 'sessions.json';

/**
 * How long a bumped epoch is remembered. Past this, every access token issued before the bump
 * has expired (the longest allowed access token lifetime is 24 h), so the entry can go.
 */
export const DEFAULT_EPOCH_RETENTION_MS = 25 * 3600_000;

/**
 * How long the jti a rotation replaced still refreshes, for the client that holds the binding:
 * a refresh whose response was lost, or two tabs that refreshed at once, get the same successor
 * instead of revoking the session as reuse.
 */
export const DEFAULT_REUSE_GRACE_MS = 30_000;

/** Sessions one user may hold; a new sign-in beyond it ends the oldest (an account signing in again and again cannot grow the file). */
export const DEFAULT_MAX_FAMILIES_PER_USER = 20;

export const FamilyRecord = z.strictObject({
  userId: z.string(),
  /** The only jti of this family that a refresh may present. */
  jti: z.string(),
  /** Epoch ms; the family's lifetime is fixed at login and rotation does not extend it. */
  expiresAt: z.number(),
  revoked: z.boolean(),
  /** How the session began; refreshing an `account` session re-checks that the account still exists. */
  kind: z.enum(['invite', 'account']),
  /**
   * SHA-256 (base64url) of the binding value handed to the page at sign-in, which the page keeps
   * in its own (per-origin) storage and sends with every refresh. Absent in files written before
   * bindings existed: such a session cannot refresh.
   */
  binding: z.optional(z.string()),
  /** The jti the last rotation replaced, and when (epoch ms): it still refreshes within the grace window. */
  previousJti: z.optional(z.string()),
  rotatedAt: z.optional(z.number()),
  /** Epoch ms of the revocation; a revoked family is forgotten after the epoch retention time. */
  revokedAt: z.optional(z.number()),
});
export type FamilyRecord = z.infer<typeof FamilyRecord>;

const EpochRecord = z.strictObject({ epoch: z.int().check(z.gte(0)), changedAt: z.number() });

const SessionsFile = z.strictObject({
  version: z.literal(1),
  families: z.record(z.string(), FamilyRecord),
  epochs: z.record(z.string(), EpochRecord),
});

export const RefreshRefusal = {
  unknown: 'unknown',
  expired: 'expired',
  revoked: 'revoked',
  /** An already-rotated jti came back: the credential was copied. The family is now revoked. */
  reused: 'reused',
  /** The current jti without the session's binding value (missing or wrong): the session is left as it was. */
  unbound: 'unbound',
} as const;
export type RefreshRefusal = (typeof RefreshRefusal)[keyof typeof RefreshRefusal];

export type RotateResult =
  /** `replayed`: the jti was the one just rotated away, within the grace window; `jti` is the successor it already got. */
  | { readonly ok: true; readonly jti: string; readonly session: FamilyRecord; readonly replayed: boolean }
  | { readonly ok: false; readonly reason: RefreshRefusal; readonly userId?: string };

export interface SessionStoreOptions {
  now?: () => number;
  /** How long a bumped epoch, and a revoked family, are remembered. */
  epochRetentionMs?: number;
  reuseGraceMs?: number;
  maxFamiliesPerUser?: number;
  /**
   * `--redis`: families live there for every gateway, and this store's map is a cache of them,
   * brought up to date by `sync` before it is read. Epochs stay per gateway (the revocation bus
   * shares them).
   */
  shared?: SharedFamilies;
}

/** A binding value for a new session: 256 random bits, base64url. */
export function newBinding(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * Server-side state of refresh credentials and revocation, kept in `sessions.json` in the data
 * dir (mode 0600, replaced atomically on every change).
 *
 * - A family is one login session. Each refresh rotates its jti; presenting any older jti of
 *   the family is reuse, which revokes the family (the credential was stolen or copied), except
 *   the jti just replaced, presented with the binding within the grace window (a lost response,
 *   two tabs at once), which gets the same successor.
 * - A family is bound to a value the page keeps (its hash is stored here): a cookie presented
 *   without it refreshes nothing, so a cookie set or read by another port of the same host
 *   (cookies ignore ports) is useless there.
 * - Expired families go at once, revoked ones after the epoch retention time, and a user holds
 *   at most `maxFamiliesPerUser` (the oldest go first).
 * - A user's epoch goes up on logout and revocation; access tokens issued at a lower epoch are
 *   refused (see createTokenService). An epoch is forgotten once no token issued before it can
 *   still be alive, which keeps the file small.
 *
 * Invariant: every check-and-update happens synchronously in memory before the write is
 * awaited, so two concurrent refreshes with the same jti cannot both rotate: the second gets
 * the first one's successor (the grace window) or, without the binding, a refusal. With shared
 * families the same check-and-update is a compare-and-set of the family in Redis, which gives
 * the same answer across gateways.
 */
export class SessionStore implements EpochSource {
  private writing: Promise<void> = Promise.resolve();

  private readonly now: () => number;
  private readonly epochRetentionMs: number;
  private readonly reuseGraceMs: number;
  private readonly maxFamiliesPerUser: number;
  private readonly shared: SharedFamilies | undefined;

  private constructor(
    private readonly file: string,
    private readonly families: Map<string, FamilyRecord>,
    private readonly epochs: Map<string, { epoch: number; changedAt: number }>,
    options: SessionStoreOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.epochRetentionMs = options.epochRetentionMs ?? DEFAULT_EPOCH_RETENTION_MS;
    this.reuseGraceMs = options.reuseGraceMs ?? DEFAULT_REUSE_GRACE_MS;
    this.maxFamiliesPerUser = Math.max(1, options.maxFamiliesPerUser ?? DEFAULT_MAX_FAMILIES_PER_USER);
    this.shared = options.shared;
  }

  static async load(dataDir: string, options: SessionStoreOptions = {}): Promise<SessionStore> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const file = join(dataDir, SESSIONS_FILE);
    const { families, epochs } = await readState(file);
    const store = new SessionStore(file, families, epochs, options);
    if (store.prune()) await store.persist();
    return store;
  }

  /**
   * The file as it is, neither pruned nor ever written: for another process (the `parley key`
   * commands) while the server owns the file. Its answers are a snapshot of the last write.
   */
  static async read(dataDir: string): Promise<Pick<SessionStore, 'epochOf' | 'knows'>> {
    const { families, epochs } = await readState(join(dataDir, SESSIONS_FILE));
    return new SessionStore(join(dataDir, SESSIONS_FILE), families, epochs, {});
  }

  epochOf(userId: string): number {
    return this.epochs.get(userId)?.epoch ?? 0;
  }

  /** Whether the store has ever seen this user id (a live or revoked session, or an epoch). */
  knows(userId: string): boolean {
    if (this.epochs.has(userId)) return true;
    for (const record of this.families.values()) if (record.userId === userId) return true;
    return false;
  }

  /** With shared families: brings this family's cached copy up to date (a no-op without). */
  async sync(family: string): Promise<void> {
    if (this.shared) this.cache(family, await this.shared.load(family));
  }

  /** `knows`, also asking the shared families (a user whose sessions began on another gateway). */
  async isKnown(userId: string): Promise<boolean> {
    return this.knows(userId) || (this.shared !== undefined && (await this.shared.familiesOf(userId)).length > 0);
  }

  /** The session behind a family id, if it is still stored. */
  get(family: string): FamilyRecord | undefined {
    return this.families.get(family);
  }

  /**
   * Starts a login session bound to `binding` (the value the page keeps; only its hash is
   * stored); returns its family id and first jti. Past the per-user bound, the user's oldest
   * sessions are dropped.
   */
  async startFamily(userId: string, expiresAt: number, kind: FamilyRecord['kind'], binding: string): Promise<{ family: string; jti: string }> {
    this.prune();
    const family = `f_${randomId()}`;
    const jti = randomId();
    const record: FamilyRecord = { userId, jti, expiresAt, revoked: false, kind, binding: hashBinding(binding) };
    this.families.set(family, record);
    this.boundUser(userId);
    await this.shared?.add(family, record, this.maxFamiliesPerUser);
    await this.persist();
    return { family, jti };
  }

  /**
   * Accepts `jti` only if it is the family's current one and `binding` is the session's, and
   * replaces it with a new one. The jti just replaced, with the binding and within the grace
   * window, gets that same successor (nothing changes). Any other jti of a live family is
   * reuse: the whole family is revoked. The current jti without the binding changes nothing.
   *
   * Every check and update happens before the first await.
   */
  async rotate(family: string, jti: string, binding: string | undefined): Promise<RotateResult> {
    if (this.shared) {
      const { result, stored } = await this.shared.update(family, (record) => {
        const decision = this.decideRotation(record, jti, binding);
        return { ...(decision.record ? { record: decision.record } : {}), result: { result: decision.result, stored: decision.record ?? record } };
      });
      this.cache(family, stored);
      return result;
    }
    const decision = this.decideRotation(this.families.get(family), jti, binding);
    if (decision.record) {
      this.families.set(family, decision.record);
      await this.persist();
    }
    return decision.result;
  }

  /** What presenting `jti` and `binding` does to the family: its new record (none: unchanged) and the answer. */
  private decideRotation(record: FamilyRecord | undefined, jti: string, binding: string | undefined): { record?: FamilyRecord; result: RotateResult } {
    const state = this.classify(record, jti, binding);
    if (!record) return { result: { ok: false, reason: RefreshRefusal.unknown } };
    const { userId } = record;
    switch (state) {
      case Presented.current: {
        const next = { ...record, jti: randomId(), previousJti: record.jti, rotatedAt: this.now() };
        return { record: next, result: { ok: true, jti: next.jti, session: next, replayed: false } };
      }
      case Presented.justRotated:
        return { result: { ok: true, jti: record.jti, session: record, replayed: true } };
      case Presented.reused:
        return { record: { ...record, revoked: true, revokedAt: this.now() }, result: { ok: false, reason: RefreshRefusal.reused, userId } };
      default:
        return { result: { ok: false, reason: state, userId } };
    }
  }

  private cache(family: string, record: FamilyRecord | undefined): void {
    if (record) this.families.set(family, record);
    else this.families.delete(family);
  }

  /**
   * Whether `jti` with `binding` could refresh `family` right now (the current jti, or the one
   * just replaced within the grace window), without changing anything. Logout takes only such
   * a cookie as a credential: a rotated, revoked or unbound one signs no one out.
   */
  isCurrent(family: string, jti: string, binding: string | undefined): boolean {
    const state = this.classify(this.families.get(family), jti, binding);
    return state === Presented.current || state === Presented.justRotated;
  }

  /** Whether the family exists and is neither revoked nor expired. */
  isLive(family: string): boolean {
    const record = this.families.get(family);
    return record !== undefined && !record.revoked && record.expiresAt > this.now();
  }

  /** Whether `binding` is the one the family was started with (constant-time compare of the hashes). */
  isBound(family: string, binding: string | undefined): boolean {
    const stored = this.families.get(family)?.binding;
    return stored !== undefined && binding !== undefined && safeEqual(hashBinding(binding), stored);
  }

  /** Revokes one family; returns its user, if the family is known. */
  async revokeFamily(family: string): Promise<string | undefined> {
    if (this.shared) {
      const now = this.now();
      const stored = await this.shared.update(family, (record) => {
        if (!record || record.revoked) return { result: record };
        const revoked = { ...record, revoked: true, revokedAt: now };
        return { record: revoked, result: revoked };
      });
      this.cache(family, stored);
      return stored?.userId;
    }
    const record = this.families.get(family);
    if (!record) return undefined;
    if (!record.revoked) {
      this.families.set(family, { ...record, revoked: true, revokedAt: this.now() });
      await this.persist();
    }
    return record.userId;
  }

  /**
   * Ends everything the user holds: every family is revoked and the epoch goes up, so live
   * access tokens stop verifying. Returns the new epoch.
   */
  async revokeUser(userId: string): Promise<number> {
    const now = this.now();
    for (const [id, record] of this.families) {
      if (record.userId === userId && !record.revoked) this.families.set(id, { ...record, revoked: true, revokedAt: now });
    }
    if (this.shared) for (const family of await this.shared.familiesOf(userId)) await this.revokeFamily(family);
    return this.bumpEpoch(userId);
  }

  /** Raises the user's epoch, so every access token issued so far stops verifying. Returns the new epoch. */
  async bumpEpoch(userId: string): Promise<number> {
    const now = this.now();
    // The Unix second of the revocation, forced strictly upwards: an epoch that was pruned and
    // read as 0 can never come back at or below an `ep` that a live token still carries.
    const epoch = Math.max(this.epochOf(userId) + 1, Math.floor(now / 1000));
    this.epochs.set(userId, { epoch, changedAt: now });
    await this.persist();
    return epoch;
  }

  /**
   * Takes an epoch raised elsewhere (another gateway's logout or revocation, via the revocation
   * bus): the user's epoch becomes `epoch` if that is higher, never lower, and then every session
   * of the user held here is revoked too. Memory changes before the first await, so tokens below
   * `epoch` are refused from the moment this is called. Resolves to whether anything changed.
   */
  async raiseEpoch(userId: string, epoch: number): Promise<boolean> {
    if (!Number.isSafeInteger(epoch) || epoch <= this.epochOf(userId)) return false;
    const now = this.now();
    for (const [id, record] of this.families) {
      if (record.userId === userId && !record.revoked) this.families.set(id, { ...record, revoked: true, revokedAt: now });
    }
    this.epochs.set(userId, { epoch, changedAt: now });
    await this.persist();
    return true;
  }

  /** Every epoch still remembered, as [userId, epoch]: what this store would refuse below. */
  knownEpochs(): [string, number][] {
    return [...this.epochs].map(([userId, record]) => [userId, record.epoch]);
  }

  /**
   * Drops expired families, families revoked longer ago than the retention time (a revoked one
   * from an older file, without a time, at once) and epochs old enough to be forgotten. Returns
   * whether anything went.
   */
  prune(): boolean {
    const now = this.now();
    let changed = false;
    for (const [id, record] of this.families) {
      if (record.expiresAt <= now || (record.revoked && (record.revokedAt ?? 0) + this.epochRetentionMs <= now)) {
        this.families.delete(id);
        changed = true;
      }
    }
    for (const [userId, record] of this.epochs) {
      if (record.changedAt + this.epochRetentionMs <= now) {
        this.epochs.delete(userId);
        changed = true;
      }
    }
    return changed;
  }

  /** Resolves once every write asked of this store so far is done (or failed). */
  async settled(): Promise<void> {
    await this.writing;
  }

  /** Number of stored families (live, revoked and not yet pruned). */
  get size(): number {
    return this.families.size;
  }

  /** How the presented jti and binding stand against the family. */
  private classify(record: FamilyRecord | undefined, jti: string, binding: string | undefined): Presented {
    if (!record) return Presented.unknown;
    if (record.revoked) return Presented.revoked;
    if (record.expiresAt <= this.now()) return Presented.expired;
    const bound = record.binding !== undefined && binding !== undefined && safeEqual(hashBinding(binding), record.binding);
    if (record.jti === jti) return bound ? Presented.current : Presented.unbound;
    const justRotated = record.previousJti === jti && record.rotatedAt !== undefined && this.now() - record.rotatedAt <= this.reuseGraceMs;
    // Any other jti, or the last one from a client without the binding or after the grace window, is a copy.
    return justRotated && bound ? Presented.justRotated : Presented.reused;
  }

  /** Drops the user's oldest sessions (revoked ones first, then by expiry) beyond the per-user bound. */
  private boundUser(userId: string): void {
    const own = [...this.families].filter(([, record]) => record.userId === userId);
    if (own.length <= this.maxFamiliesPerUser) return;
    own.sort(([, a], [, b]) => Number(b.revoked) - Number(a.revoked) || a.expiresAt - b.expiresAt);
    for (const [id] of own.slice(0, own.length - this.maxFamiliesPerUser)) this.families.delete(id);
  }

  /** Writes are serialised, and each writes the state as it is when the write starts. */
  private persist(): Promise<void> {
    const next = this.writing.then(() => writeFileAtomic(this.file, JSON.stringify(this.snapshot())));
    this.writing = next.catch(() => undefined);
    return next;
  }

  private snapshot(): z.infer<typeof SessionsFile> {
    return { version: 1, families: Object.fromEntries(this.families), epochs: Object.fromEntries(this.epochs) };
  }
}

async function readState(file: string): Promise<{ families: Map<string, FamilyRecord>; epochs: Map<string, { epoch: number; changedAt: number }> }> {
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const families = new Map<string, FamilyRecord>();
  const epochs = new Map<string, { epoch: number; changedAt: number }>();
  if (text !== undefined) {
    let parsed;
    try {
      parsed = SessionsFile.parse(JSON.parse(text));
    } catch {
      throw new Error(`${file} is not a valid Parley sessions file; deleting it signs everyone out`);
    }
    for (const [id, record] of Object.entries(parsed.families)) families.set(id, record);
    for (const [userId, record] of Object.entries(parsed.epochs)) epochs.set(userId, record);
  }
  return { families, epochs };
}

const Presented = {
  ...RefreshRefusal,
  current: 'current',
  justRotated: 'just_rotated',
} as const;
type Presented = (typeof Presented)[keyof typeof Presented];

function hashBinding(binding: string): string {
  return createHash('sha256').update(binding, 'utf8').digest('base64url');
}

function safeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

function randomId(): string {
  return randomBytes(16).toString('base64url');
}

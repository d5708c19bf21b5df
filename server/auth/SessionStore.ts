import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod/mini';
import type { EpochSource } from './createTokenService.js';
import { writeFileAtomic } from './writeFileAtomic.js';

export const SESSIONS_FILE = 'sessions.json';

/**
 * How long a bumped epoch is remembered. Past this, every access token issued before the bump
 * has expired (the longest allowed access token lifetime is 24 h), so the entry can go.
 */
const DEFAULT_EPOCH_RETENTION_MS = 25 * 3600_000;

const FamilyRecord = z.strictObject({
  userId: z.string(),
  /** The only jti of this family that a refresh may present. */
  jti: z.string(),
  /** Epoch ms; the family's lifetime is fixed at login and rotation does not extend it. */
  expiresAt: z.number(),
  revoked: z.boolean(),
  /** How the session began; refreshing an `account` session re-checks that the account still exists. */
  kind: z.enum(['invite', 'account']),
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
} as const;
export type RefreshRefusal = (typeof RefreshRefusal)[keyof typeof RefreshRefusal];

export type RotateResult =
  | { readonly ok: true; readonly jti: string; readonly session: FamilyRecord }
  | { readonly ok: false; readonly reason: RefreshRefusal; readonly userId?: string };

/**
 * Server-side state of refresh credentials and revocation, kept in `sessions.json` in the data
 * dir (mode 0600, replaced atomically on every change).
 *
 * - A family is one login session. Each refresh rotates its jti; presenting any older jti of
 *   the family is reuse, which revokes the family (the credential was stolen or copied).
 * - A user's epoch goes up on logout and revocation; access tokens issued at a lower epoch are
 *   refused (see createTokenService). An epoch is forgotten once no token issued before it can
 *   still be alive, which keeps the file small.
 *
 * Invariant: every check-and-update happens synchronously in memory before the write is
 * awaited, so two concurrent refreshes with the same jti cannot both succeed.
 */
export class SessionStore implements EpochSource {
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly file: string,
    private readonly families: Map<string, FamilyRecord>,
    private readonly epochs: Map<string, { epoch: number; changedAt: number }>,
    private readonly now: () => number,
    private readonly epochRetentionMs: number,
  ) {}

  static async load(dataDir: string, options: { now?: () => number; epochRetentionMs?: number } = {}): Promise<SessionStore> {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const file = join(dataDir, SESSIONS_FILE);
    const { families, epochs } = await readState(file);
    const store = new SessionStore(file, families, epochs, options.now ?? Date.now, options.epochRetentionMs ?? DEFAULT_EPOCH_RETENTION_MS);
    if (store.prune()) await store.persist();
    return store;
  }

  /**
   * The file as it is, neither pruned nor ever written: for another process (the `parley key`
   * commands) while the server owns the file. Its answers are a snapshot of the last write.
   */
  static async read(dataDir: string): Promise<Pick<SessionStore, 'epochOf' | 'knows'>> {
    const { families, epochs } = await readState(join(dataDir, SESSIONS_FILE));
    return new SessionStore(join(dataDir, SESSIONS_FILE), families, epochs, Date.now, DEFAULT_EPOCH_RETENTION_MS);
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

  /** The session behind a family id, if it is still stored. */
  get(family: string): FamilyRecord | undefined {
    return this.families.get(family);
  }

  /** Starts a login session; returns its family id and first jti. */
  async startFamily(userId: string, expiresAt: number, kind: FamilyRecord['kind']): Promise<{ family: string; jti: string }> {
    this.prune();
    const family = `f_${randomId()}`;
    const jti = randomId();
    this.families.set(family, { userId, jti, expiresAt, revoked: false, kind });
    await this.persist();
    return { family, jti };
  }

  /**
   * Accepts `jti` only if it is the family's current one, and replaces it with a new one.
   * An older jti of a live family is reuse: the whole family is revoked.
   */
  async rotate(family: string, jti: string): Promise<RotateResult> {
    const record = this.families.get(family);
    if (!record) return { ok: false, reason: RefreshRefusal.unknown };
    const { userId } = record;
    if (record.revoked) return { ok: false, reason: RefreshRefusal.revoked, userId };
    if (record.expiresAt <= this.now()) return { ok: false, reason: RefreshRefusal.expired, userId };
    if (record.jti !== jti) {
      this.families.set(family, { ...record, revoked: true });
      await this.persist();
      return { ok: false, reason: RefreshRefusal.reused, userId };
    }
    const next = { ...record, jti: randomId() };
    this.families.set(family, next);
    await this.persist();
    return { ok: true, jti: next.jti, session: next };
  }

  /** Revokes one family; returns its user, if the family is known. */
  async revokeFamily(family: string): Promise<string | undefined> {
    const record = this.families.get(family);
    if (!record) return undefined;
    if (!record.revoked) {
      this.families.set(family, { ...record, revoked: true });
      await this.persist();
    }
    return record.userId;
  }

  /**
   * Ends everything the user holds: every family is revoked and the epoch goes up, so live
   * access tokens stop verifying. Returns the new epoch.
   */
  async revokeUser(userId: string): Promise<number> {
    for (const [id, record] of this.families) {
      if (record.userId === userId && !record.revoked) this.families.set(id, { ...record, revoked: true });
    }
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

  /** Drops expired families and epochs old enough to be forgotten. Returns whether anything went. */
  prune(): boolean {
    const now = this.now();
    let changed = false;
    for (const [id, record] of this.families) {
      if (record.expiresAt <= now) {
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

  /** Number of stored families (live, revoked and not yet pruned). */
  get size(): number {
    return this.families.size;
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

function randomId(): string {
  return randomBytes(16).toString('base64url');
}

import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import * as z from 'zod/mini';
import { API_KEY_NAME_MAX_LENGTH } from '../../shared/protocol.js';
import { FileDocument } from './FileDocument.js';
import { DocumentBusyError, type StateDocument } from './StateDocument.js';

export const API_KEYS_FILE = 'api-keys.json';
/** Every key starts with this, so people and secret scanners can tell a Parley key at a glance. */
export const API_KEY_PREFIX = 'pk-parley-';
/** The random part: 32 bytes (256 bits), 43 characters of base64url. */
const KEY_BYTES = 32;
const KEY_PATTERN = /^pk-parley-[A-Za-z0-9_-]{43}$/;
/** The characters after `pk-parley-` that name a key in lists and revocations. They are public. */
export const KEY_PREFIX_LENGTH = 8;
const PREFIX_PATTERN = /^[A-Za-z0-9_-]{8}$/;
/** Live keys one user may hold. */
export const MAX_KEYS_PER_USER = 20;
/** Revoked keys kept per user for `parley key list`; older ones are forgotten, which bounds the file. */
const MAX_REVOKED_KEPT = 20;
/** `lastUsedAt` is written at most this often per key: it is coarse on purpose, to spare the disk. */
export const LAST_USED_RESOLUTION_MS = 60_000;

/** How the key's user exists: a named account (`users.json`) or an invite user (a token `sub` only). */
export const KeyOwnerKind = { account: 'account', invite: 'invite' } as const;
export type KeyOwnerKind = (typeof KeyOwnerKind)[keyof typeof KeyOwnerKind];

const StoredKey = z.strictObject({
  prefix: z.string().check(z.regex(PREFIX_PATTERN)),
  /** SHA-256 of the whole key, base64url. The key itself is never stored. */
  hash: z.string().check(z.regex(/^[A-Za-z0-9_-]{43}$/)),
  userId: z.string().check(z.minLength(1)),
  kind: z.enum([KeyOwnerKind.account, KeyOwnerKind.invite]),
  /** The user's display name when the key was made: an invite user has no other record of it. */
  userName: z.string(),
  name: z.string(),
  createdAt: z.number(),
  lastUsedAt: z.optional(z.number()),
  revokedAt: z.optional(z.number()),
  /** The user's revocation epoch when the key was made: a later logout or admin revocation ends the key. */
  epoch: z.int().check(z.gte(0)),
});
type StoredKey = z.infer<typeof StoredKey>;

const ApiKeysFile = z.strictObject({ version: z.literal(1), keys: z.array(StoredKey) });

/** A key as stored, without its hash. */
export interface ApiKey {
  /** The 8 characters after `pk-parley-`; public, unique. */
  readonly prefix: string;
  readonly userId: string;
  readonly kind: KeyOwnerKind;
  readonly userName: string;
  readonly name: string;
  /** Epoch ms. */
  readonly createdAt: number;
  /** Epoch ms, to the minute (LAST_USED_RESOLUTION_MS); undefined when never used. */
  readonly lastUsedAt: number | undefined;
  /** Epoch ms; undefined while the key is live. */
  readonly revokedAt: number | undefined;
  readonly epoch: number;
}

export interface KeyOwner {
  readonly userId: string;
  readonly kind: KeyOwnerKind;
  readonly userName: string;
  /** The user's revocation epoch now (SessionStore.epochOf). */
  readonly epoch: number;
}

export const ApiKeyStoreFailure = {
  /** The name is empty, too long, or holds control characters. */
  badName: 'bad_name',
  /** The user already has MAX_KEYS_PER_USER live keys. */
  tooManyKeys: 'too_many_keys',
  /** No such key or user (the CLI's answers). */
  notFound: 'not_found',
  /** The document is not a Parley keys file, or another writer held it too long. */
  storage: 'storage',
} as const;
export type ApiKeyStoreFailure = (typeof ApiKeyStoreFailure)[keyof typeof ApiKeyStoreFailure];

export class ApiKeyStoreError extends Error {
  override name = 'ApiKeyStoreError';
  constructor(
    message: string,
    readonly reason: ApiKeyStoreFailure,
  ) {
    super(message);
  }
}

/** Whether a string has the shape of a Parley API key (says nothing about whether it is one). */
export function isApiKeyFormat(value: string): boolean {
  return KEY_PATTERN.test(value);
}

/**
 * The SHA-256 digest of a key, base64url. A fast hash is right here: the key is 256 random bits,
 * so there is nothing to guess that a slow hash would protect (unlike a password).
 */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('base64url');
}

/** A key's name as stored: trimmed, 1 to API_KEY_NAME_MAX_LENGTH characters, no control characters. */
export function normaliseKeyName(name: string): string {
  const trimmed = name.trim();
  // eslint-disable-next-line no-control-regex
  if (trimmed.length === 0 || trimmed.length > API_KEY_NAME_MAX_LENGTH || /[\u0000-\u001f\u007f]/.test(trimmed)) {
    throw new ApiKeyStoreError(`A key's name is 1-${API_KEY_NAME_MAX_LENGTH} characters, without control characters.`, ApiKeyStoreFailure.badName);
  }
  return trimmed;
}

interface State {
  /** The text this state was parsed from. */
  readonly text: string | undefined;
  readonly keys: readonly StoredKey[];
  readonly byHash: ReadonlyMap<string, StoredKey>;
}

const EMPTY: State = { text: undefined, keys: [], byHash: new Map() };

/**
 * API keys for the OpenAI-compatible API, in `api-keys.json` in the data dir (mode 0600,
 * replaced atomically). A key is shown once, when it is made; only its SHA-256 is kept, with
 * its public prefix, owner, name, times and revocation.
 *
 * Invariants:
 * - The document is the truth, shared with the `parley key` commands in other processes (the
 *   file, with a lock file `api-keys.json.lock`; see FileDocument) or with the other gateways
 *   (`--redis`; see RedisDocument): every lookup reads it as it is now, so a revocation from the
 *   CLI or another gateway holds from the next request on.
 * - Every change is a compare-and-set of the document as it is now (StateDocument.update), so
 *   the server's last-used updates can never write back a key revoked meanwhile.
 * - A key is looked up by its digest; the digest of a guess tells a timing observer nothing
 *   about any stored digest, so no constant-time comparison is needed on top.
 */
export class ApiKeyStore {
  private readonly document: StateDocument;
  private readonly now: () => number;
  private cache: State = EMPTY;
  private queue: Promise<unknown> = Promise.resolve();
  /** When this process last wrote (or decided to write) each key's lastUsedAt. */
  private readonly touched = new Map<string, number>();

  constructor(dataDir: string, options: { now?: () => number; document?: StateDocument } = {}) {
    this.document = options.document ?? new FileDocument(join(dataDir, API_KEYS_FILE), { lock: true });
    this.now = options.now ?? Date.now;
  }

  /** Makes a key for `owner`. The returned `key` is the only copy there will ever be. */
  async create(owner: KeyOwner, name: string): Promise<{ key: string; apiKey: ApiKey }> {
    const clean = normaliseKeyName(name);
    return this.change((keys) => {
      const live = keys.filter((stored) => stored.userId === owner.userId && stored.revokedAt === undefined).length;
      if (live >= MAX_KEYS_PER_USER) {
        throw new ApiKeyStoreError(`A user has at most ${MAX_KEYS_PER_USER} API keys; revoke one first.`, ApiKeyStoreFailure.tooManyKeys);
      }
      let key: string;
      let prefix: string;
      do {
        key = `${API_KEY_PREFIX}${randomBytes(KEY_BYTES).toString('base64url')}`;
        prefix = prefixOf(key);
      } while (keys.some((stored) => stored.prefix === prefix));
      const stored: StoredKey = {
        prefix,
        hash: hashApiKey(key),
        userId: owner.userId,
        kind: owner.kind,
        userName: owner.userName,
        name: clean,
        createdAt: this.now(),
        epoch: owner.epoch,
      };
      return { keys: [...keys, stored], result: { key, apiKey: toApiKey(stored) } };
    });
  }

  /** The user's keys, revoked ones included, newest first. */
  async list(userId: string): Promise<ApiKey[]> {
    const { keys } = await this.read();
    return keys.filter((stored) => stored.userId === userId).sort((a, b) => b.createdAt - a.createdAt).map(toApiKey);
  }

  /** The key with this prefix, whoever's it is. */
  async get(prefix: string): Promise<ApiKey | undefined> {
    const stored = (await this.read()).keys.find((candidate) => candidate.prefix === prefix);
    return stored ? toApiKey(stored) : undefined;
  }

  /** The stored key that `key` is, revoked or not; undefined for anything else (malformed included). */
  async find(key: string): Promise<ApiKey | undefined> {
    if (!isApiKeyFormat(key)) return undefined;
    const stored = (await this.read()).byHash.get(hashApiKey(key));
    return stored ? toApiKey(stored) : undefined;
  }

  /** Records a use of the key, at most once per LAST_USED_RESOLUTION_MS. */
  async markUsed(prefix: string): Promise<void> {
    const at = this.now();
    // Decided synchronously, so a burst of requests with one key writes once.
    if (at - (this.touched.get(prefix) ?? -Infinity) < LAST_USED_RESOLUTION_MS) return;
    this.touched.set(prefix, at);
    const current = (await this.read()).keys.find((stored) => stored.prefix === prefix);
    if (!current || (current.lastUsedAt !== undefined && at - current.lastUsedAt < LAST_USED_RESOLUTION_MS)) return;
    await this.change((keys) => {
      const index = keys.findIndex((stored) => stored.prefix === prefix);
      const stored = keys[index];
      if (!stored) return { result: undefined };
      const next = [...keys];
      next[index] = { ...stored, lastUsedAt: at };
      return { keys: next, result: undefined };
    });
  }

  /**
   * Revokes the key with this prefix; with `userId`, only if it is that user's. Returns the key
   * (revoked, also when it already was), or undefined when there is no such key (of that user).
   */
  async revoke(prefix: string, userId?: string): Promise<ApiKey | undefined> {
    return this.change((keys) => {
      const stored = keys.find((candidate) => candidate.prefix === prefix);
      if (!stored || (userId !== undefined && stored.userId !== userId)) return { result: undefined };
      if (stored.revokedAt !== undefined) return { result: toApiKey(stored) };
      const revoked = { ...stored, revokedAt: this.now() };
      return { keys: pruneRevoked(keys.map((candidate) => (candidate === stored ? revoked : candidate)), stored.userId), result: toApiKey(revoked) };
    });
  }

  /**
   * Revokes every live key of the user (the account was removed, or the user signed out or was
   * revoked); with `belowEpoch`, only keys made at an epoch below it. Returns how many.
   */
  async revokeUser(userId: string, options: { belowEpoch?: number } = {}): Promise<number> {
    const belowEpoch = options.belowEpoch ?? Infinity;
    const ends = (stored: StoredKey) => stored.userId === userId && stored.revokedAt === undefined && stored.epoch < belowEpoch;
    // Every logout comes here: most users have no key, and then nothing is locked or written.
    if (!(await this.read()).keys.some(ends)) return 0;
    return this.change((keys) => {
      const at = this.now();
      let count = 0;
      const next = keys.map((stored) => {
        if (!ends(stored)) return stored;
        count++;
        return { ...stored, revokedAt: at };
      });
      return count === 0 ? { result: 0 } : { keys: pruneRevoked(next, userId), result: count };
    });
  }

  /** Resolves once every change asked of this store so far is written (or failed). */
  async settled(): Promise<void> {
    await this.queue;
  }

  /** The document's state, parsed again only when its text changed since the last read. */
  private async read(): Promise<State> {
    return this.parse(await this.document.read());
  }

  private parse(text: string | undefined): State {
    if (text === undefined) return EMPTY;
    if (this.cache.text === text) return this.cache;
    let keys: StoredKey[];
    try {
      keys = ApiKeysFile.parse(JSON.parse(text)).keys;
    } catch {
      throw new ApiKeyStoreError(`${this.document.name} is not a valid Parley API keys file.`, ApiKeyStoreFailure.storage);
    }
    this.cache = { text, keys, byHash: new Map(keys.map((stored) => [stored.hash, stored])) };
    return this.cache;
  }

  /** Read-modify-write of the document as it is now (a compare-and-set: `apply` may run again on a newer state). */
  private change<T>(apply: (keys: readonly StoredKey[]) => { keys?: StoredKey[]; result: T }): Promise<T> {
    const run = this.document
      .update((text) => {
        const outcome = apply(this.parse(text).keys);
        return { result: outcome.result, ...(outcome.keys ? { text: `${JSON.stringify({ version: 1, keys: outcome.keys }, null, 2)}\n` } : {}) };
      })
      .catch((error: unknown) => {
        if (error instanceof DocumentBusyError) throw new ApiKeyStoreError(error.message, ApiKeyStoreFailure.storage);
        throw error;
      });
    this.queue = Promise.allSettled([this.queue, run]);
    return run;
  }
}

/** The public prefix of a key: the 8 characters after `pk-parley-`. */
export function prefixOf(key: string): string {
  return key.slice(API_KEY_PREFIX.length, API_KEY_PREFIX.length + KEY_PREFIX_LENGTH);
}

/** Whether a string can be a key's prefix (8 characters of base64url). */
export function isKeyPrefix(value: string): boolean {
  return PREFIX_PATTERN.test(value);
}

/** Keeps the user's MAX_REVOKED_KEPT most recently revoked keys and forgets older ones. */
function pruneRevoked(keys: StoredKey[], userId: string): StoredKey[] {
  const revoked = keys.filter((stored) => stored.userId === userId && stored.revokedAt !== undefined);
  if (revoked.length <= MAX_REVOKED_KEPT) return keys;
  const forget = new Set(revoked.sort((a, b) => (b.revokedAt ?? 0) - (a.revokedAt ?? 0)).slice(MAX_REVOKED_KEPT));
  return keys.filter((stored) => !forget.has(stored));
}

function toApiKey(stored: StoredKey): ApiKey {
  return {
    prefix: stored.prefix,
    userId: stored.userId,
    kind: stored.kind,
    userName: stored.userName,
    name: stored.name,
    createdAt: stored.createdAt,
    lastUsedAt: stored.lastUsedAt,
    revokedAt: stored.revokedAt,
    epoch: stored.epoch,
  };
}

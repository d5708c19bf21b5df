import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import * as z from 'zod/mini';
import { Role } from './Principal.js';
import { FileDocument } from './FileDocument.js';
import type { StateDocument } from './StateDocument.js';

export const USERS_FILE = 'users.json';

/** scrypt cost for new hashes (RFC 7914 §2; OWASP's minimum is N=2^17 with r=8, or N=2^14 with more p). */
export const ScryptParams = { N: 16384, r: 8, p: 1, keyLength: 64, saltLength: 16 } as const;
export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 1024;
/** Account names: a letter, then letters, digits, `.`, `_` or `-`; 32 at most. */
export const ACCOUNT_NAME = /^[A-Za-z][A-Za-z0-9._-]{0,31}$/;

const StoredUser = z.strictObject({
  /** Stable user id: the `sub` of this account's tokens. */
  id: z.string(),
  /** The name as typed at `user add`; lookups ignore case. */
  name: z.string(),
  role: z.enum([Role.user, Role.admin]),
  /** `scrypt$N=…,r=…,p=…$<salt>$<hash>`, base64url. */
  password: z.string(),
  createdAt: z.string(),
  /** Set when an admin revoked the account: it cannot sign in until an admin lifts the block. */
  blockedAt: z.optional(z.string()),
});
type StoredUser = z.infer<typeof StoredUser>;

const UsersFile = z.strictObject({ version: z.literal(1), users: z.record(z.string(), StoredUser) });
type UsersFile = z.infer<typeof UsersFile>;

export interface Account {
  readonly id: string;
  readonly name: string;
  readonly role: Role;
  /** Present (true) while an admin's block keeps the account from signing in. */
  readonly blocked?: true;
}

export class UserStoreError extends Error {
  override name = 'UserStoreError';
}

/**
 * Named accounts, in `users.json` in the data dir (mode 0600, replaced atomically), or with
 * `--redis` in a document every gateway shares (RedisDocument). The document is read on every
 * call, so `parley user add/remove` (on the file) or a block made on another gateway takes
 * effect at the next login or refresh; every change is a compare-and-set of it as it is now.
 *
 * Passwords are scrypt hashes with a per-user salt, and the parameters are stored with each
 * hash. A login for an unknown name runs the same scrypt work against a dummy hash, so the
 * response time does not tell which names exist.
 */
export class UserStore {
  private readonly document: StateDocument;
  private dummy: string | undefined;

  constructor(dataDir: string, options: { document?: StateDocument } = {}) {
    this.document = options.document ?? new FileDocument(join(dataDir, USERS_FILE));
  }

  async list(): Promise<Account[]> {
    return Object.values((await this.read()).users).map(toAccount);
  }

  async find(name: string): Promise<Account | undefined> {
    const user = lookup(await this.read(), name);
    return user ? toAccount(user) : undefined;
  }

  async findById(id: string): Promise<Account | undefined> {
    const user = Object.values((await this.read()).users).find((candidate) => candidate.id === id);
    return user ? toAccount(user) : undefined;
  }

  async add(name: string, password: string, role: Role = Role.user): Promise<Account> {
    if (!ACCOUNT_NAME.test(name)) {
      throw new UserStoreError('A name is 1-32 characters: a letter, then letters, digits, ".", "_" or "-".');
    }
    checkPassword(password);
    const hash = await hashPassword(password);
    const user: StoredUser = { id: `a_${randomBytes(12).toString('base64url')}`, name, role, password: hash, createdAt: new Date().toISOString() };
    return this.change((file) => {
      if (lookup(file, name)) throw new UserStoreError(`User "${name}" already exists.`);
      return { file: { ...file, users: { ...file.users, [key(name)]: user } }, result: toAccount(user) };
    });
  }

  /** Removes the account; returns it, or undefined when there was none. */
  async remove(name: string): Promise<Account | undefined> {
    return this.change((file) => {
      const user = lookup(file, name);
      if (!user) return { result: undefined };
      const users = { ...file.users };
      delete users[key(name)];
      return { file: { ...file, users }, result: toAccount(user) };
    });
  }

  /**
   * Blocks or unblocks an account, named by name (case-insensitive) or id; returns it as it is
   * now, or undefined when there is no such account. A blocked account's right password is
   * answered with a refusal, and its sessions cannot refresh.
   */
  async setBlocked(reference: string, blocked: boolean): Promise<Account | undefined> {
    const at = new Date().toISOString();
    return this.change((file) => {
      const entry = Object.entries(file.users).find(([name, user]) => name === key(reference) || user.id === reference);
      if (!entry) return { result: undefined };
      const [name, user] = entry;
      const { blockedAt: _was, ...rest } = user;
      const next: StoredUser = blocked ? { ...rest, blockedAt: user.blockedAt ?? at } : rest;
      if (next.blockedAt === user.blockedAt) return { result: toAccount(next) };
      return { file: { ...file, users: { ...file.users, [name]: next } }, result: toAccount(next) };
    });
  }

  /** The account when name and password match; undefined otherwise, after the same scrypt work. */
  async verify(name: string, password: string): Promise<Account | undefined> {
    const user = lookup(await this.read(), name);
    if (!user) {
      await verifyPassword(password, this.dummyHash());
      return undefined;
    }
    return (await verifyPassword(password, user.password)) ? toAccount(user) : undefined;
  }

  /**
   * A hash in the stored format whose digest is random bytes: checking a password against it costs
   * exactly one scrypt, as for a real account, and matches nothing. Made without hashing, so the
   * first unknown name after a start costs no more than the next (timing tells no names apart).
   */
  private dummyHash(): string {
    const { N, r, p, keyLength, saltLength } = ScryptParams;
    this.dummy ??= `scrypt$N=${N},r=${r},p=${p}$${randomBytes(saltLength).toString('base64url')}$${randomBytes(keyLength).toString('base64url')}`;
    return this.dummy;
  }

  private async read(): Promise<UsersFile> {
    return this.parse(await this.document.read());
  }

  private parse(text: string | undefined): UsersFile {
    if (text === undefined) return { version: 1, users: {} };
    try {
      return UsersFile.parse(JSON.parse(text));
    } catch {
      throw new UserStoreError(`${this.document.name} is not a valid Parley users file.`);
    }
  }

  /** A compare-and-set of the document as it is now: `apply` may run again on a newer state. */
  private change<T>(apply: (file: UsersFile) => { file?: UsersFile; result: T }): Promise<T> {
    return this.document.update((text) => {
      const outcome = apply(this.parse(text));
      return { result: outcome.result, ...(outcome.file ? { text: `${JSON.stringify(outcome.file, null, 2)}\n` } : {}) };
    });
  }
}

export function checkPassword(password: string): void {
  if (password.length < PASSWORD_MIN_LENGTH) throw new UserStoreError(`A password has at least ${PASSWORD_MIN_LENGTH} characters.`);
  if (password.length > PASSWORD_MAX_LENGTH) throw new UserStoreError(`A password has at most ${PASSWORD_MAX_LENGTH} characters.`);
}

export async function hashPassword(password: string): Promise<string> {
  const { N, r, p, keyLength, saltLength } = ScryptParams;
  const salt = randomBytes(saltLength);
  const hash = await derive(password, salt, keyLength, { N, r, p });
  return `scrypt$N=${N},r=${r},p=${p}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

/** Constant-time comparison; a malformed stored hash never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parseHash(stored);
  if (!parsed) return false;
  const actual = await derive(password, parsed.salt, parsed.hash.length, parsed.params);
  return timingSafeEqual(actual, parsed.hash);
}

function parseHash(stored: string): { params: { N: number; r: number; p: number }; salt: Buffer; hash: Buffer } | undefined {
  const match = /^scrypt\$N=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(stored);
  if (!match) return undefined;
  const [N, r, p] = [Number(match[1]), Number(match[2]), Number(match[3])];
  // Bounds keep a hand-edited file from asking for absurd memory or time.
  if (N < 2 || N > 1 << 20 || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return undefined;
  const salt = Buffer.from(match[4] as string, 'base64url');
  const hash = Buffer.from(match[5] as string, 'base64url');
  if (salt.length < 8 || hash.length < 16 || hash.length > 128) return undefined;
  return { params: { N, r, p }, salt, hash };
}

function derive(password: string, salt: Buffer, keyLength: number, params: { N: number; r: number; p: number }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keyLength, { ...params, maxmem: 256 * params.N * params.r }, (error, key) => (error ? reject(error) : resolve(key)));
  });
}

function key(name: string): string {
  return name.toLowerCase();
}

/** Own properties only: a name such as `__proto__` finds nothing. */
function lookup(file: UsersFile, name: string): StoredUser | undefined {
  return Object.hasOwn(file.users, key(name)) ? file.users[key(name)] : undefined;
}

function toAccount(user: StoredUser): Account {
  return { id: user.id, name: user.name, role: user.role, ...(user.blockedAt === undefined ? {} : { blocked: true as const }) };
}

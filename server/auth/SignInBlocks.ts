import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod/mini';
import { writeFileAtomic } from './writeFileAtomic.js';

export const BLOCKS_FILE = 'blocks.json';

/** The most devices and addresses kept per invite user; older ones are forgotten first. */
const MAX_TRACES = 16;


const Traces = z.strictObject({
  devices: z.array(z.string()),
  addresses: z.array(z.string()),
  /** Epoch ms of the last join (seen) or of the block (blocked). */
  at: z.number(),
});
type Traces = z.infer<typeof Traces>;

const BlocksFile = z.strictObject({
  version: z.literal(1),
  /** Invite users' joins: where each joined from, kept while their sessions can live. */
  seen: z.record(z.string(), Traces),
  /** Revoked invite users: joins from these devices and addresses are refused until lifted. */
  blocked: z.record(z.string(), Traces),
});
type BlocksFile = z.infer<typeof BlocksFile>;

export class SignInBlocksError extends Error {
  override name = 'SignInBlocksError';
}

/**
 * What keeps a revoked invite user from joining again. An invite user has no name or password
 * that could be blocked: each join with the invite is a new user. So every join records the
 * device id the page sends (a random id it keeps in localStorage) and the peer address, and an
 * admin's revocation blocks those: a later join from a blocked device or a blocked address is
 * refused until an admin lifts the block.
 *
 * Limits (SECURITY.md): a device id is the page's own; another browser, a private window or
 * cleared site data is a new device, and a client other than the page sends none. An address
 * block also refuses everyone else who joins from that address (NAT, a shared computer, a
 * reverse proxy), and a new address (another network, DHCP) is not blocked. Rotating the
 * invite is the complete answer.
 *
 * Kept in `blocks.json` in the data dir (mode 0600, replaced atomically); this process is the
 * file's only writer, so it is read once and written through.
 */
export class SignInBlocks {
  /** Blocked device id or address -> the user whose revocation blocked it. */
  private readonly devices = new Map<string, string>();
  private readonly addresses = new Map<string, string>();
  private writes: Promise<void> = Promise.resolve();

  private constructor(
    private readonly dataDir: string,
    private file: BlocksFile,
    /** How long a join is remembered: the refresh session's lifetime. */
    private readonly keepSeenMs: number,
    private readonly now: () => number,
  ) {
    this.index();
  }

  static async load(dataDir: string, options: { keepSeenMs: number; now?: () => number }): Promise<SignInBlocks> {
    const path = join(dataDir, BLOCKS_FILE);
    let file: BlocksFile = { version: 1, seen: {}, blocked: {} };
    try {
      const text = await readFile(path, 'utf8');
      try {
        file = BlocksFile.parse(JSON.parse(text));
      } catch {
        throw new SignInBlocksError(`${path} is not a valid Parley blocks file.`);
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    return new SignInBlocks(dataDir, file, options.keepSeenMs, options.now ?? Date.now);
  }

  /** Whether a join from this device (if the page sent one) or this address is blocked. */
  isBlocked(device: string | undefined, address: string): boolean {
    return (device !== undefined && this.devices.has(device)) || this.addresses.has(address);
  }

  /** Whether this user id has a block to lift. */
  isBlockedUser(userId: string): boolean {
    return Object.hasOwn(this.file.blocked, userId);
  }

  /** Records where an invite user joined from, so a revocation can block it. */
  recordJoin(userId: string, device: string | undefined, address: string): Promise<void> {
    const seen = Object.hasOwn(this.file.seen, userId) ? this.file.seen[userId] : undefined;
    const traces: Traces = {
      devices: addTrace(seen?.devices ?? [], device),
      addresses: addTrace(seen?.addresses ?? [], address),
      at: this.now(),
    };
    return this.change((file) => ({ ...file, seen: { ...file.seen, [userId]: traces } }));
  }

  /**
   * Blocks the devices and addresses the invite user joined from; returns what was blocked
   * (empty when the user never joined while this file kept their joins).
   */
  async block(userId: string): Promise<{ readonly devices: number; readonly addresses: readonly string[] }> {
    const seen = Object.hasOwn(this.file.seen, userId) ? this.file.seen[userId] : undefined;
    const before = Object.hasOwn(this.file.blocked, userId) ? this.file.blocked[userId] : undefined;
    const devices = [...new Set([...(before?.devices ?? []), ...(seen?.devices ?? [])])];
    const addresses = [...new Set([...(before?.addresses ?? []), ...(seen?.addresses ?? [])])];
    if (devices.length + addresses.length > 0) {
      await this.change((file) => ({ ...file, blocked: { ...file.blocked, [userId]: { devices, addresses, at: this.now() } } }));
    }
    return { devices: devices.length, addresses };
  }

  /** Lifts the user's block; false when there was none. */
  async unblock(userId: string): Promise<boolean> {
    if (!this.isBlockedUser(userId)) return false;
    await this.change((file) => {
      const blocked = { ...file.blocked };
      delete blocked[userId];
      return { ...file, blocked };
    });
    return true;
  }

  /** Applies a change in memory and writes the file; changes are written one at a time, in order. */
  private change(update: (file: BlocksFile) => BlocksFile): Promise<void> {
    this.file = prune(update(this.file), this.now() - this.keepSeenMs);
    this.index();
    const snapshot = this.file;
    const write = this.writes.then(async () => {
      await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
      await writeFileAtomic(join(this.dataDir, BLOCKS_FILE), `${JSON.stringify(snapshot, null, 2)}\n`);
    });
    // A failed write fails its own caller; the next write still runs.
    this.writes = write.catch(() => undefined);
    return write;
  }

  private index(): void {
    this.devices.clear();
    this.addresses.clear();
    for (const [userId, traces] of Object.entries(this.file.blocked)) {
      for (const device of traces.devices) this.devices.set(device, userId);
      for (const address of traces.addresses) this.addresses.set(address, userId);
    }
  }
}

/** The newest MAX_TRACES values, `value` last. */
function addTrace(values: readonly string[], value: string | undefined): string[] {
  if (value === undefined) return [...values];
  return [...values.filter((existing) => existing !== value), value].slice(-MAX_TRACES);
}

/** Forgets joins older than `oldest` (their sessions have expired); blocks stay until lifted. */
function prune(file: BlocksFile, oldest: number): BlocksFile {
  const seen = Object.fromEntries(Object.entries(file.seen).filter(([, traces]) => traces.at >= oldest));
  return { ...file, seen };
}

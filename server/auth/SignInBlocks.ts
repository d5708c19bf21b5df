import { join } from 'node:path';
import * as z from 'zod/mini';
import { FileDocument } from './FileDocument.js';
import type { StateDocument } from './StateDocument.js';

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

const EMPTY: BlocksFile = { version: 1, seen: {}, blocked: {} };

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
 * Kept in `blocks.json` in the data dir (mode 0600, replaced atomically), or with `--redis` in a
 * document every gateway shares. Every change is a compare-and-set of the document as it is
 * now; `sync` (before a join is checked) brings this copy up to date with the other gateways'.
 */
export class SignInBlocks {
  /** Blocked device id or address -> the user whose revocation blocked it. */
  private readonly devices = new Map<string, string>();
  private readonly addresses = new Map<string, string>();
  /** The text `file` was parsed from. */
  private text: string | undefined;

  private constructor(
    private readonly document: StateDocument,
    private file: BlocksFile,
    /** How long a join is remembered: the refresh session's lifetime. */
    private readonly keepSeenMs: number,
    private readonly now: () => number,
  ) {
    this.index();
  }

  static async load(dataDir: string, options: { keepSeenMs: number; now?: () => number; document?: StateDocument }): Promise<SignInBlocks> {
    const document = options.document ?? new FileDocument(join(dataDir, BLOCKS_FILE));
    const blocks = new SignInBlocks(document, EMPTY, options.keepSeenMs, options.now ?? Date.now);
    await blocks.sync();
    return blocks;
  }

  /** Reads the document again if it changed (another gateway blocked, unblocked or saw a join). */
  async sync(): Promise<void> {
    this.adopt(await this.document.read());
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
    const at = this.now();
    return this.change((file) => {
      const seen = Object.hasOwn(file.seen, userId) ? file.seen[userId] : undefined;
      const traces: Traces = { devices: addTrace(seen?.devices ?? [], device), addresses: addTrace(seen?.addresses ?? [], address), at };
      return { file: { ...file, seen: { ...file.seen, [userId]: traces } }, result: undefined };
    });
  }

  /**
   * Blocks the devices and addresses the invite user joined from; returns what was blocked
   * (empty when the user never joined while this file kept their joins).
   */
  async block(userId: string): Promise<{ readonly devices: number; readonly addresses: readonly string[] }> {
    const at = this.now();
    return this.change((file) => {
      const seen = Object.hasOwn(file.seen, userId) ? file.seen[userId] : undefined;
      const before = Object.hasOwn(file.blocked, userId) ? file.blocked[userId] : undefined;
      const devices = [...new Set([...(before?.devices ?? []), ...(seen?.devices ?? [])])];
      const addresses = [...new Set([...(before?.addresses ?? []), ...(seen?.addresses ?? [])])];
      const result = { devices: devices.length, addresses };
      if (devices.length + addresses.length === 0) return { result };
      return { file: { ...file, blocked: { ...file.blocked, [userId]: { devices, addresses, at } } }, result };
    });
  }

  /** Lifts the user's block; false when there was none. */
  async unblock(userId: string): Promise<boolean> {
    return this.change((file) => {
      if (!Object.hasOwn(file.blocked, userId)) return { result: false };
      const blocked = { ...file.blocked };
      delete blocked[userId];
      return { file: { ...file, blocked }, result: true };
    });
  }

  /** A compare-and-set of the document as it is now (`update` may run again); this copy then holds what was written. */
  private async change<T>(update: (file: BlocksFile) => { file?: BlocksFile; result: T }): Promise<T> {
    let written: string | undefined;
    const result = await this.document.update((text) => {
      written = undefined;
      const outcome = update(this.parse(text));
      if (!outcome.file) return { result: outcome.result };
      written = `${JSON.stringify(prune(outcome.file, this.now() - this.keepSeenMs), null, 2)}\n`;
      return { text: written, result: outcome.result };
    });
    if (written !== undefined) this.adopt(written);
    return result;
  }

  private adopt(text: string | undefined): void {
    if (text === this.text) return;
    this.file = this.parse(text);
    this.text = text;
    this.index();
  }

  private parse(text: string | undefined): BlocksFile {
    if (text === undefined) return EMPTY;
    try {
      return BlocksFile.parse(JSON.parse(text));
    } catch {
      throw new SignInBlocksError(`${this.document.name} is not a valid Parley blocks file.`);
    }
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

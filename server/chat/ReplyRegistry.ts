import { AbortReason } from './AbortReason.js';
import type { Reply, ReplyListener } from './Reply.js';

interface Entry {
  readonly reply: Reply;
  /** When it expires: for a detached running reply, the end of its grace period; for an ended one, grace after the end. */
  timer: NodeJS.Timeout | undefined;
}

/**
 * Every reply a user may still reach, keyed by (owner, request id): running ones (attached to a
 * listener or detached from a dropped one) and recently ended ones (so an end lost with a dying
 * connection can be replayed). Resume and "already ended" are answered from here alone.
 *
 * Invariants:
 * - Keys include the owner: another user can never reach a reply.
 * - A detached running reply is cancelled (AbortReason.disconnect) when its grace period ends,
 *   or at once when there is no grace or it is no longer resumable; that frees its slot.
 * - An ended reply is forgotten `graceMs` after it ended; each user keeps at most
 *   `maxEndedPerUser` of them (the oldest go first).
 * - A newer reply with the same key replaces the older one, which is cancelled if still running.
 */
export class ReplyRegistry {
  private readonly entries = new Map<string, Entry>();
  /** Per user, the keys of their ended replies, oldest end first: the cap never scans other users. */
  private readonly endedByUser = new Map<string, Set<string>>();

  constructor(
    private readonly graceMs: number,
    private readonly maxEndedPerUser = 16,
  ) {}

  /** Replies kept with no listener, running or ended. */
  get detachedCount(): number {
    let count = 0;
    for (const { reply } of this.entries.values()) if (reply.attached === undefined) count++;
    return count;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Registers an admitted reply, attached to `listener`. */
  add(reply: Reply, listener: ReplyListener): void {
    const key = keyOf(reply.userId, reply.id);
    const previous = this.entries.get(key);
    if (previous) this.forget(key, previous);
    this.entries.set(key, { reply, timer: undefined });
    reply.attach(listener);
  }

  /** The owner's reply with this id, wherever it is. */
  get(userId: string, id: string): Reply | undefined {
    return this.entries.get(keyOf(userId, id))?.reply;
  }

  /** The owner's reply with this id if no listener holds it (a dropped connection's). */
  peek(userId: string, id: string): Reply | undefined {
    const reply = this.get(userId, id);
    return reply?.attached === undefined ? reply : undefined;
  }

  /** A reply ended: it stays reachable for the grace period. */
  ended(reply: Reply): void {
    const key = keyOf(reply.userId, reply.id);
    const entry = this.entries.get(key);
    if (entry?.reply !== reply) return;
    this.arm(key, entry);
    if (!this.entries.has(key)) return;
    const ended = this.endedByUser.get(reply.userId) ?? new Set<string>();
    this.endedByUser.set(reply.userId, ended);
    ended.add(key);
    for (const oldest of ended) {
      if (ended.size <= this.maxEndedPerUser) break;
      this.forget(oldest, this.entries.get(oldest));
    }
  }

  /** The listener went away: each of its replies is kept for the grace period, or cancelled now if it cannot be resumed. */
  detachAll(listener: ReplyListener): void {
    for (const [key, entry] of [...this.entries]) {
      if (entry.reply.attached !== listener) continue;
      entry.reply.detach();
      if (!entry.reply.finished && (this.graceMs === 0 || !entry.reply.resumable)) {
        this.forget(key, entry);
        continue;
      }
      if (!entry.reply.finished) this.arm(key, entry);
    }
  }

  /**
   * Moves the owner's reply to `listener` (a resume). The listener that held it, if another, is
   * told with `released`. Resolves with the reply, or undefined when there is none to resume.
   */
  take(userId: string, id: string, listener: ReplyListener): Reply | undefined {
    const key = keyOf(userId, id);
    const entry = this.entries.get(key);
    if (!entry || !entry.reply.resumable) return undefined;
    const previous = entry.reply.attached;
    if (!entry.reply.finished) {
      clearTimeout(entry.timer);
      entry.timer = undefined;
    }
    entry.reply.detach();
    if (previous !== undefined && previous !== listener) previous.released(entry.reply);
    return entry.reply;
  }

  /** Forgets every reply of this user (signed out or revoked), cancelling those still running. */
  dropUser(userId: string): void {
    for (const [key, entry] of [...this.entries]) {
      if (entry.reply.userId === userId) this.forget(key, entry);
    }
  }

  /** Forgets every reply, cancelling those still running. */
  clear(): void {
    for (const [key, entry] of [...this.entries]) this.forget(key, entry);
  }

  private arm(key: string, entry: Entry): void {
    clearTimeout(entry.timer);
    if (this.graceMs === 0) {
      this.forget(key, entry);
      return;
    }
    entry.timer = setTimeout(() => this.forget(key, this.entries.get(key)), this.graceMs);
    entry.timer.unref();
  }

  private forget(key: string, entry: Entry | undefined): void {
    if (!entry || this.entries.get(key) !== entry) return;
    clearTimeout(entry.timer);
    this.entries.delete(key);
    const ended = this.endedByUser.get(entry.reply.userId);
    if (ended?.delete(key) && ended.size === 0) this.endedByUser.delete(entry.reply.userId);
    if (!entry.reply.finished) entry.reply.controller.abort(AbortReason.disconnect);
  }
}

function keyOf(userId: string, id: string): string {
  return `${userId}\u0000${id}`;
}

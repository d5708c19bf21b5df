import { AbortReason } from './AbortReason.js';
import type { Reply } from './Reply.js';

interface Kept {
  readonly reply: Reply;
  readonly timer: NodeJS.Timeout;
}

/**
 * Replies whose connection dropped, kept for `graceMs` so their owner can resume them.
 *
 * Invariants: a kept reply is attached to no connection; when its grace period ends it is
 * forgotten, and cancelled (AbortReason.disconnect) if still running, which frees its slot.
 * Keys are (owner, request id): another user can never take a reply, and a newer reply with the
 * same key replaces (and cancels) the older one.
 */
export class DetachedReplies {
  private readonly kept = new Map<string, Kept>();

  constructor(private readonly graceMs: number) {}

  get size(): number {
    return this.kept.size;
  }

  keep(reply: Reply): void {
    reply.detach();
    if (this.graceMs === 0 || !reply.resumable) {
      expire(reply);
      return;
    }
    const key = keyOf(reply.userId, reply.id);
    const previous = this.kept.get(key);
    if (previous) this.forget(key, previous);
    const timer = setTimeout(() => this.forget(key, this.kept.get(key)), this.graceMs);
    timer.unref();
    this.kept.set(key, { reply, timer });
  }

  /** The owner's kept reply with this id, left in place. */
  peek(userId: string, id: string): Reply | undefined {
    return this.kept.get(keyOf(userId, id))?.reply;
  }

  /** Removes and returns the owner's kept reply with this id. */
  take(userId: string, id: string): Reply | undefined {
    const key = keyOf(userId, id);
    const entry = this.kept.get(key);
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    this.kept.delete(key);
    return entry.reply;
  }

  /** Forgets every reply kept for this user (signed out or revoked), cancelling those still running. */
  dropUser(userId: string): void {
    for (const [key, entry] of [...this.kept]) {
      if (entry.reply.userId === userId) this.forget(key, entry);
    }
  }

  /** Forgets every kept reply, cancelling those still running. */
  clear(): void {
    for (const [key, entry] of [...this.kept]) this.forget(key, entry);
  }

  private forget(key: string, entry: Kept | undefined): void {
    if (!entry) return;
    clearTimeout(entry.timer);
    this.kept.delete(key);
    expire(entry.reply);
  }
}

function expire(reply: Reply): void {
  if (!reply.finished) reply.controller.abort(AbortReason.disconnect);
}

function keyOf(userId: string, id: string): string {
  return `${userId}\u0000${id}`;
}

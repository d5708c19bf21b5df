import type { TerminalFrame } from '../../shared/protocol.js';
import type { AbortReason } from '../chat/AbortReason.js';
import type { Reply } from '../chat/Reply.js';

/** Where a reply followed from another gateway goes: one socket's writer. */
export interface RelaySink {
  /** The first answer: the follow starts, deltas after `after` follow. */
  resumed(conversationId: string): void;
  delta(seq: number, text: string): void;
  queued(position: number): void;
  /** The reply's terminal frame, as the gateway that runs it made it. Called once; the follow is over. */
  ended(frame: TerminalFrame): void;
  /** The owner resumed the reply elsewhere. Called once; the follow is over. */
  released(): void;
  /**
   * The reply can no longer be followed (its gateway or its stream is gone, or the stream has a
   * gap). Called once; the follow is over.
   */
  lost(): void;
}

/** One socket's follow of a reply that another gateway runs. */
export interface RelayFollow {
  /** Stops the reply on its gateway (its terminal frame still comes through the sink). */
  cancel(reason: AbortReason): void;
  /** The socket went away: the reply's gateway starts its grace period again. */
  stop(): void;
}

export type FollowResult =
  | { readonly kind: 'following'; readonly follow: RelayFollow }
  /** No such reply of this user reachable from here (unknown, another user's, expired). */
  | { readonly kind: 'unavailable' }
  /** `after` is beyond the last seq the reply committed; nothing was started. */
  | { readonly kind: 'after_beyond'; readonly lastSeq: number };

/**
 * Live replies shared between gateways, so a socket that drops from one gateway and reconnects
 * to another resumes there with no gap and no duplicate. The reply keeps running on the
 * gateway that admitted it (it holds the engine request); the others follow a copy.
 *
 * Invariants:
 * - Everything a follower sees is what a local resume would send: the same seqs, the same text
 *   split, the same terminal frame.
 * - A reply is reachable only by its owner: every lookup is keyed by the user id.
 * - While a follower on another gateway holds a reply, its own gateway does not cancel it for a
 *   dropped socket; when that follower goes, the grace period starts again.
 */
export interface ReplyRelay {
  /** Starts taking part (control messages from the other gateways). */
  start(): Promise<void>;
  /** On the gateway that admitted `reply`: copies its commits and end out, and obeys followers elsewhere. */
  publish(reply: Reply): void;
  /** On any gateway: follows the user's reply `id`, run elsewhere, from after seq `after`. */
  follow(userId: string, id: string, after: number, sink: RelaySink): Promise<FollowResult>;
  /** Stops every follow and stops copying; safe to call twice. */
  close(): Promise<void>;
}

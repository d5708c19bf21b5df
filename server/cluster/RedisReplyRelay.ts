import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { isTerminalFrame, ServerFrame, type TerminalFrame } from '../../shared/protocol.js';
import { isAbortReason, type AbortReason } from '../chat/AbortReason.js';
import type { CommittedText, Reply, ReplyListener, ReplyTap } from '../chat/Reply.js';
import type { ReplyRegistry } from '../chat/ReplyRegistry.js';
import { toTerminalFrame } from '../chat/toTerminalFrame.js';
import type { OpenedRedis } from './openRedis.js';
import type { FollowResult, RelayFollow, RelaySink, ReplyRelay } from './ReplyRelay.js';

/** Claims, drops and cancels between gateways. */
const CONTROL_CHANNEL = 'parley:reply-control';
/** How long a follower's read waits for the next entry before it checks the stream is still there. */
const BLOCK_MS = 1000;
/** Entries kept while a reply that outgrew its resume buffer is followed live (a follower further behind ends). */
const FOLLOW_WINDOW = 1024;

/** A reply's stream, keyed by its owner: another user's resume names another key. */
export function replyStreamKey(userId: string, id: string): string {
  return `parley:reply:${userId}:${id}`;
}

/**
 * Control messages. `r` names one reply (a nonce per admitted reply), so a message about an
 * earlier reply with the same id changes nothing. `f` names one follow (gateway and counter).
 * - claim: follow `f` holds the reply now (its gateway keeps it running; other follows end);
 * - moved: a socket on the reply's own gateway took it (every follow ends);
 * - drop: follow `f`'s socket went away (the grace period starts again);
 * - cancel: follow `f`'s socket stops the reply, for `reason`.
 */
type Control =
  | { readonly op: 'claim' | 'drop'; readonly u: string; readonly id: string; readonly r: string; readonly f: string }
  | { readonly op: 'moved'; readonly u: string; readonly id: string; readonly r: string }
  | { readonly op: 'cancel'; readonly u: string; readonly id: string; readonly r: string; readonly f: string; readonly reason: AbortReason };

/** One stream entry, read back. */
type Entry =
  | { readonly k: 'meta'; readonly r: string; readonly conv: string }
  | { readonly k: 'text'; readonly r: string; readonly seq: number; readonly text: string }
  | { readonly k: 'queued'; readonly r: string; readonly pos: number }
  | { readonly k: 'end'; readonly r: string; readonly frame: TerminalFrame };

export interface RedisReplyRelayOptions {
  /** The resume grace period: how long a stream outlives its last write, and a follow outlives a silent Redis. */
  readonly graceMs: number;
  readonly logger: Logger;
}

/**
 * ReplyRelay over Redis streams and one pub/sub channel.
 *
 * On the gateway that admitted a reply, every committed piece (seq, text), each queue position
 * and the terminal frame are appended, in commit order, to the stream
 * `parley:reply:<userId>:<replyId>`, whose first entry names the conversation. Appends are
 * written to the command connection as the piece is committed, before the delta goes to the
 * socket, and never awaited. The stream expires `graceMs` after its last write, and is kept
 * alive while its reply runs. While the reply may be resumed, the stream holds at most the
 * reply's resume buffer (`--max-reply-bytes`); past it the stream is deleted, unless a follower
 * reads it live, when only the last FOLLOW_WINDOW entries are kept.
 *
 * On another gateway, a resume reads the stream (XRANGE), answers as a local resume would,
 * claims the reply, then reads on (XREAD BLOCK on a connection of its own) until the terminal
 * frame. The claim makes the owning gateway attach the reply to a listener that commits its
 * text at once (text a dropped socket left pending included), so the follower sees it live;
 * the owning gateway then does not cancel it at the end of the grace period until the follower
 * drops (then the grace period starts again) or stops it.
 *
 * Text a detached reply makes is committed only once a follower claims it, not as it comes: seqs
 * are assigned where the text is written, as for a local socket, and a dropped reply nobody
 * follows costs no Redis writes. One blocking connection per follow keeps each follow's reads
 * independent; follows are rare (a reconnect that lands on another gateway) and end with their
 * reply.
 *
 * Invariants:
 * - A follower sends seqs in order with no gap or duplicate: a stream that skips a seq (Redis
 *   lost writes) ends the follow with `lost` rather than a gap.
 * - Entries of another reply that had the same id (another nonce) are ignored.
 * - The text never appears in logs.
 */
export class RedisReplyRelay implements ReplyRelay {
  private readonly gatewayId = randomBytes(6).toString('base64url');
  private follows = 0;
  /** Replies this gateway runs and copies out, by stream key. */
  private readonly publications = new Map<string, Publication>();
  /** Follows on this gateway, by stream key. */
  private readonly followers = new Map<string, Set<Follower>>();
  private keepAlive: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly onMessage = (channel: string, message: string) => {
    if (channel === CONTROL_CHANNEL) this.control(message);
  };

  constructor(
    readonly redis: OpenedRedis,
    readonly replies: ReplyRegistry,
    readonly options: RedisReplyRelayOptions,
  ) {}

  async start(): Promise<void> {
    this.redis.subscriber.on('message', this.onMessage);
    await this.redis.subscriber.subscribe(CONTROL_CHANNEL);
    this.keepAlive = setInterval(() => this.refresh(), Math.max(100, Math.floor(this.options.graceMs / 3)));
    this.keepAlive.unref();
  }

  publish(reply: Reply): void {
    if (this.closed) return;
    const key = replyStreamKey(reply.userId, reply.id);
    this.publications.get(key)?.retire(false);
    const publication = new Publication(this, reply, key);
    this.publications.set(key, publication);
    publication.begin();
  }

  async follow(userId: string, id: string, after: number, sink: RelaySink): Promise<FollowResult> {
    if (this.closed) return { kind: 'unavailable' };
    const key = replyStreamKey(userId, id);
    let raw: [string, string[]][];
    try {
      raw = await this.redis.client.xrange(key, '-', '+');
    } catch (error) {
      this.options.logger.warn({ err: error, req: id }, 'reading a reply stream failed');
      return { kind: 'unavailable' };
    }
    const first = raw[0] === undefined ? undefined : parseEntry(raw[0][1]);
    if (first?.k !== 'meta') return { kind: 'unavailable' };
    const entries = raw.map(([streamId, fields]) => ({ streamId, entry: parseEntry(fields) })).filter((item) => item.entry?.r === first.r);
    let lastSeq = -1;
    for (const { entry } of entries) {
      if (entry?.k !== 'text') continue;
      if (entry.seq !== lastSeq + 1) return { kind: 'unavailable' };
      lastSeq = entry.seq;
    }
    if (after > lastSeq) return { kind: 'after_beyond', lastSeq };
    const follower = new Follower(this, { key, userId, id, nonce: first.r, tag: `${this.gatewayId}.${++this.follows}` }, sink, after);
    const ended = entries.some(({ entry }) => entry?.k === 'end');
    if (!ended) {
      const here = this.followers.get(key) ?? new Set<Follower>();
      this.followers.set(key, here);
      here.add(follower);
      this.send({ op: 'claim', u: userId, id, r: first.r, f: follower.tag });
    }
    sink.resumed(first.conv);
    let queued: number | undefined;
    for (const { entry } of entries) {
      if (entry === undefined || entry.k === 'meta') continue;
      if (entry.k === 'queued') queued = entry.pos;
      else if (entry.k === 'text') queued = undefined;
      follower.take(entry, true);
    }
    if (!follower.over) {
      if (queued !== undefined) sink.queued(queued);
      void follower.run(raw.at(-1)?.[0] ?? '0');
    }
    return { kind: 'following', follow: follower };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepAlive);
    for (const publication of [...this.publications.values()]) publication.retire(false);
    for (const here of [...this.followers.values()]) for (const follower of [...here]) follower.stop();
    this.redis.subscriber.off('message', this.onMessage);
    await this.redis.subscriber.unsubscribe(CONTROL_CHANNEL).catch(() => undefined);
  }

  /** Publishes a control message; a lost one is logged (the grace period still bounds the reply). */
  send(message: Control): void {
    this.redis.client.publish(CONTROL_CHANNEL, JSON.stringify(message)).catch((error: unknown) => {
      this.options.logger.warn({ err: error, op: message.op, req: message.id }, 'reply control message failed');
    });
  }

  forgetPublication(publication: Publication): void {
    if (this.publications.get(publication.key) === publication) this.publications.delete(publication.key);
  }

  forgetFollower(follower: Follower): void {
    const here = this.followers.get(follower.key);
    if (!here?.delete(follower) || here.size > 0) return;
    this.followers.delete(follower.key);
  }

  private refresh(): void {
    if (this.publications.size === 0) return;
    const pipeline = this.redis.client.pipeline();
    for (const key of this.publications.keys()) pipeline.pexpire(key, this.options.graceMs);
    pipeline.exec().catch(() => undefined);
  }

  private control(message: string): void {
    const control = parseControl(message);
    if (control === undefined) return;
    const key = replyStreamKey(control.u, control.id);
    const publication = this.publications.get(key);
    if (publication?.nonce === control.r) publication.control(control);
    for (const follower of [...(this.followers.get(key) ?? [])]) {
      if (follower.nonce !== control.r) continue;
      if (control.op === 'moved' || (control.op === 'claim' && control.f !== follower.tag)) follower.release();
    }
  }
}

/** One reply this gateway runs, copied to its stream (the tap), and held for a follower elsewhere (the listener). */
class Publication implements ReplyTap {
  readonly nonce = randomBytes(9).toString('base64url');
  /** The follow elsewhere that holds the reply now. */
  private follower: string | undefined;
  private retired = false;
  private endWritten = false;
  private expiry: NodeJS.Timeout | undefined;
  private failed = false;
  /** Attached while a follower elsewhere holds the reply: commits its text as it comes. */
  private readonly listener: ReplyListener = {
    queued: () => undefined,
    textPending: (reply) => void reply.takePending(),
    ended: () => undefined,
    // A socket on this gateway resumed it: the follower elsewhere ends with resumed_elsewhere.
    released: () => {
      this.follower = undefined;
      this.relay.send({ op: 'moved', u: this.reply.userId, id: this.reply.id, r: this.nonce });
    },
  };

  constructor(
    private readonly relay: RedisReplyRelay,
    private readonly reply: Reply,
    readonly key: string,
  ) {}

  begin(): void {
    // A stream left by an earlier reply with the same id goes first.
    this.write(['k', 'meta', 'r', this.nonce, 'conv', this.reply.conversationId], true);
    this.reply.tap(this);
  }

  committed(reply: Reply, piece: CommittedText): void {
    if (this.retired) return;
    // Past the resume buffer nobody new can resume it: the stream goes, unless a follower reads it now.
    if (!reply.resumable && this.follower === undefined) {
      this.retire(true);
      return;
    }
    this.write(['k', 'text', 'r', this.nonce, 'seq', String(piece.seq), 'text', piece.text]);
    if (reply.finished && !reply.hasPending) this.end();
  }

  queued(_reply: Reply, position: number): void {
    if (!this.retired) this.write(['k', 'queued', 'r', this.nonce, 'pos', String(position)]);
  }

  ended(reply: Reply): void {
    if (this.retired) return;
    // Text still pending is committed first, by whoever attaches; nobody does after the grace period.
    if (!reply.hasPending) this.end();
    else this.expiry = setTimeout(() => this.retire(false), this.relay.options.graceMs).unref();
  }

  control(control: Control): void {
    if (this.retired) return;
    const { replies } = this.relay;
    switch (control.op) {
      case 'claim': {
        if (replies.get(this.reply.userId, this.reply.id) !== this.reply) return;
        const taken = replies.take(this.reply.userId, this.reply.id, this.listener);
        if (taken !== this.reply) return;
        this.follower = control.f;
        this.reply.attach(this.listener);
        this.relay.options.logger.info({ event: 'reply_claimed', req: this.reply.id, lastSeq: this.reply.lastSeq, finished: this.reply.finished }, 'reply followed from another gateway');
        return;
      }
      case 'drop': {
        if (this.follower !== control.f) return;
        this.follower = undefined;
        // Kept for the grace period again, or cancelled now if it can no longer be resumed.
        replies.detachAll(this.listener);
        return;
      }
      case 'cancel': {
        if (this.follower === control.f) this.reply.controller.abort(control.reason);
        return;
      }
      case 'moved':
        return;
    }
  }

  /** Stops copying; `deleteStream` also removes what was copied. A follower holding the reply lets go of it. */
  retire(deleteStream: boolean): void {
    if (this.retired) return;
    this.retired = true;
    clearTimeout(this.expiry);
    this.reply.tap(undefined);
    this.relay.forgetPublication(this);
    if (deleteStream) this.relay.redis.client.del(this.key).catch(() => undefined);
    if (this.follower !== undefined) {
      this.follower = undefined;
      this.relay.replies.detachAll(this.listener);
    }
  }

  private end(): void {
    if (this.endWritten || this.reply.outcome === undefined) return;
    this.endWritten = true;
    this.write(['k', 'end', 'r', this.nonce, 'frame', JSON.stringify(toTerminalFrame(this.reply.id, this.reply.outcome))]);
    this.retired = true;
    clearTimeout(this.expiry);
    this.reply.tap(undefined);
    this.relay.forgetPublication(this);
  }

  /** Appends one entry and refreshes the expiry; pipelined, never awaited. A failed write retires the copy. */
  private write(fields: string[], fresh = false): void {
    const { client } = this.relay.redis;
    const pipeline = client.pipeline();
    if (fresh) pipeline.del(this.key);
    if (this.reply.resumable) pipeline.xadd(this.key, '*', ...fields);
    else pipeline.xadd(this.key, 'MAXLEN', '~', FOLLOW_WINDOW, '*', ...fields);
    pipeline.pexpire(this.key, this.relay.options.graceMs);
    pipeline
      .exec()
      .then((results) => {
        const failure = results?.find(([error]) => error !== null)?.[0];
        if (failure) throw failure;
      })
      .catch((error: unknown) => {
        if (this.failed) return;
        this.failed = true;
        this.relay.options.logger.warn({ err: error, req: this.reply.id }, 'copying a reply to redis failed; it can be resumed on this gateway only');
        this.retire(true);
      });
  }
}

/** One socket's follow of a reply another gateway runs. */
class Follower implements RelayFollow {
  readonly key: string;
  readonly userId: string;
  readonly id: string;
  readonly nonce: string;
  readonly tag: string;
  over = false;
  /** The next seq the socket has not seen. */
  private nextSeq: number;
  /** The seq the stream's next text entry must have (a gap ends the follow). */
  private expected = 0;
  private reader: ReturnType<OpenedRedis['client']['duplicate']> | undefined;

  constructor(
    private readonly relay: RedisReplyRelay,
    names: { key: string; userId: string; id: string; nonce: string; tag: string },
    private readonly sink: RelaySink,
    after: number,
  ) {
    ({ key: this.key, userId: this.userId, id: this.id, nonce: this.nonce, tag: this.tag } = names);
    this.nextSeq = after + 1;
  }

  cancel(reason: AbortReason): void {
    if (!this.over) this.relay.send({ op: 'cancel', u: this.userId, id: this.id, r: this.nonce, f: this.tag, reason });
  }

  stop(): void {
    if (this.over) return;
    this.finish();
    this.relay.send({ op: 'drop', u: this.userId, id: this.id, r: this.nonce, f: this.tag });
  }

  release(): void {
    if (this.over) return;
    this.finish();
    this.sink.released();
  }

  /** One entry of the stream, in order. `replaying`: read before the claim (queue positions are summed up by the caller). */
  take(entry: Entry, replaying = false): void {
    if (this.over) return;
    switch (entry.k) {
      case 'meta':
        return;
      case 'queued':
        if (!replaying) this.sink.queued(entry.pos);
        return;
      case 'text':
        if (entry.seq !== this.expected) {
          this.lose();
          return;
        }
        this.expected++;
        if (entry.seq >= this.nextSeq) {
          this.nextSeq = entry.seq + 1;
          this.sink.delta(entry.seq, entry.text);
        }
        return;
      case 'end':
        this.finish();
        this.sink.ended(entry.frame);
        return;
    }
  }

  /** Reads the stream live from entry `from` until the end, a release or a stop. */
  async run(from: string): Promise<void> {
    const { redis, options } = this.relay;
    const reader = redis.client.duplicate({ connectionName: 'parley-follow', lazyConnect: true });
    reader.on('error', () => undefined);
    this.reader = reader;
    let lastId = from;
    let lastHeard = Date.now();
    try {
      await reader.connect();
      while (!this.over) {
        let result: [string, [string, string[]][]][] | null;
        try {
          result = (await reader.xread('BLOCK', BLOCK_MS, 'STREAMS', this.key, lastId)) as [string, [string, string[]][]][] | null;
        } catch (error) {
          if (this.over) return;
          // Redis unreachable: retry for the grace period, then give up on the reply.
          if (Date.now() - lastHeard > options.graceMs) throw error;
          await new Promise((resolve) => setTimeout(resolve, 200));
          continue;
        }
        lastHeard = Date.now();
        if (result === null) {
          // Nothing new: still there? A gateway that died stops refreshing its streams.
          if ((await redis.client.exists(this.key).catch(() => 1)) === 0) this.lose();
          continue;
        }
        for (const [streamId, fields] of result[0]?.[1] ?? []) {
          lastId = streamId;
          const entry = parseEntry(fields);
          if (entry !== undefined && entry.r === this.nonce) this.take(entry);
        }
      }
    } catch (error) {
      if (this.over) return;
      options.logger.warn({ err: error, req: this.id }, 'following a reply on another gateway failed');
      this.lose();
    } finally {
      reader.disconnect();
    }
  }

  private lose(): void {
    if (this.over) return;
    this.finish();
    this.sink.lost();
  }

  private finish(): void {
    this.over = true;
    this.relay.forgetFollower(this);
    this.reader?.disconnect();
  }
}

function parseEntry(fields: readonly string[]): Entry | undefined {
  const map = new Map<string, string>();
  for (let index = 0; index + 1 < fields.length; index += 2) map.set(fields[index] as string, fields[index + 1] as string);
  const r = map.get('r');
  if (r === undefined) return undefined;
  switch (map.get('k')) {
    case 'meta': {
      const conv = map.get('conv');
      return conv === undefined ? undefined : { k: 'meta', r, conv };
    }
    case 'text': {
      const seq = Number(map.get('seq'));
      const text = map.get('text');
      return Number.isSafeInteger(seq) && seq >= 0 && text !== undefined ? { k: 'text', r, seq, text } : undefined;
    }
    case 'queued': {
      const pos = Number(map.get('pos'));
      return Number.isSafeInteger(pos) && pos > 0 ? { k: 'queued', r, pos } : undefined;
    }
    case 'end': {
      try {
        const frame = ServerFrame.parse(JSON.parse(map.get('frame') ?? ''));
        return isTerminalFrame(frame) ? { k: 'end', r, frame } : undefined;
      } catch {
        return undefined;
      }
    }
    default:
      return undefined;
  }
}

function parseControl(message: string): Control | undefined {
  let value: unknown;
  try {
    value = JSON.parse(message);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { op, u, id, r, f, reason } = value as Record<string, unknown>;
  if (typeof u !== 'string' || typeof id !== 'string' || typeof r !== 'string') return undefined;
  if (op === 'moved') return { op, u, id, r };
  if (typeof f !== 'string') return undefined;
  if (op === 'claim' || op === 'drop') return { op, u, id, r, f };
  if (op === 'cancel' && isAbortReason(reason)) return { op, u, id, r, f, reason };
  return undefined;
}

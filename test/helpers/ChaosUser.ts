import { setTimeout as sleep } from 'node:timers/promises';
import { mulberry32 } from '../../models/mulberry32.js';
import type { ClientFrame } from '../../shared/protocol.js';
import { RequestLedger, type LedgerConnection, type RequestRecord } from './RequestLedger.js';
import type { TestServer } from './startTestServer.js';
import type { TestClient } from './TestClient.js';

export interface ChaosOptions {
  /** Random actions the user takes. */
  readonly steps: number;
  /**
   * The user stops sending while this many of its requests lack a terminal frame. After a
   * reconnect every one of them is resumed at once, so this (plus a burst's sends and a probe)
   * must fit in a fresh socket's frame allowance: a rate-limited `resume` is answered without
   * an id, and its request would never learn its fate.
   */
  readonly maxPending: number;
  /** Longer than the server's maxTextChars: refused with message_too_long. */
  readonly tooLongText: string;
  /** Frames in a flood: enough refusals to close the socket with 4429. */
  readonly floodFrames: number;
  /** How long an absent user stays away: longer than the server's resumeGraceMs. */
  readonly awayMs: number;
}

/** What the user did; what the server answered is in the ledger. */
export interface ChaosActions {
  sends: number;
  sendsToConversation: number;
  regenerates: number;
  tooLong: number;
  cancels: number;
  unknownCancels: number;
  drops: number;
  /** Drops followed by an absence past the grace period. */
  absences: number;
  cleanCloses: number;
  /** Replies moved to a second socket while the first was still open. */
  moves: number;
  bursts: number;
  floods: number;
  probes: number;
  /** Sends written right before a drop, close or move. */
  racingSends: number;
  resumesSent: number;
  /** Sockets the server closed, by close code. */
  closedByServer: Record<string, number>;
  connectRetries: number;
}

const PROMPTS = ['tell me the whole story', 'hi', 'and then?', 'what about the harbor', 'ünïcödé ☃ prompt', 'more please'];

/**
 * One simulated user doing seeded random things to the server (send, cancel, drop, close,
 * move replies between sockets, bursts and floods of frames) and keeping the client-side
 * ledger of every request id across all of its sockets.
 *
 * Invariant: every id the user sends is either still pending in the ledger or has its frames
 * there; after each reconnect every pending id is resumed on the new socket, with `after` the
 * last seq seen, so each id can still reach exactly one terminal frame.
 */
export class ChaosUser {
  readonly ledger = new RequestLedger();
  readonly log: string[] = [];
  readonly actions: ChaosActions = {
    sends: 0,
    sendsToConversation: 0,
    regenerates: 0,
    tooLong: 0,
    cancels: 0,
    unknownCancels: 0,
    drops: 0,
    absences: 0,
    cleanCloses: 0,
    moves: 0,
    bursts: 0,
    floods: 0,
    probes: 0,
    racingSends: 0,
    resumesSent: 0,
    closedByServer: {},
    connectRetries: 0,
  };
  private readonly random: () => number;
  private token = '';
  private connection: LedgerConnection | undefined;
  private counter = 0;
  private readonly startedAt = Date.now();

  constructor(
    private readonly server: TestServer,
    readonly name: string,
    readonly seed: number,
    private readonly options: ChaosOptions,
  ) {
    this.random = mulberry32(seed);
  }

  async start(): Promise<void> {
    this.token = await this.server.token(this.name);
    this.connection = this.ledger.open(await this.connect());
  }

  async run(): Promise<void> {
    for (let step = 0; step < this.options.steps; step++) {
      // Drawn first and always, so the sequence of rolls depends on the seed alone.
      const roll = this.random();
      const pause = 10 + Math.floor(this.random() * 140);
      await this.reconnectIfClosed();
      await this.act(step, roll);
      await sleep(pause);
    }
  }

  /** Waits until every id has its terminal frame (or the deadline), reconnecting as needed. */
  async settle(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.reconnectIfClosed();
      this.ledger.readAll();
      if (this.ledger.pending().length === 0 || Date.now() > deadline) return;
      await sleep(20);
    }
  }

  /** Closes the current socket cleanly at the end of the run. */
  close(): void {
    this.current.client.close();
  }

  private get current(): LedgerConnection {
    if (!this.connection) throw new Error('ChaosUser.start() was not awaited');
    return this.connection;
  }

  private async act(step: number, roll: number): Promise<void> {
    const pick = this.random();
    // Whether a disconnect races a send: the send is written just before the socket goes away.
    const racing = this.random() < 0.4;
    const regenerate = this.random() < 0.3;
    this.ledger.readAll();
    const pending = this.ledger.pending();
    const canSend = pending.length < this.options.maxPending;
    if (roll < 0.3) {
      if (canSend) this.send();
      else this.note(step, 'wait (too many pending)');
    } else if (roll < 0.4) {
      const conversations = [...this.ledger.records.values()].map((record) => record.conversationId).filter((id) => id !== undefined);
      const conversationId = conversations[Math.floor(pick * conversations.length)];
      if (canSend) this.send(conversationId, undefined, regenerate && conversationId !== undefined);
    } else if (roll < 0.43) {
      if (canSend) this.send(undefined, this.options.tooLongText);
    } else if (roll < 0.55) {
      const running = pending.filter((record) => record.owner === this.current && (record.accepted || record.resumedFrames > 0));
      const target = running[Math.floor(pick * running.length)];
      if (target) {
        this.actions.cancels++;
        this.frame({ type: 'cancel', id: target.id });
        this.note(step, `cancel ${target.id}`);
      }
    } else if (roll < 0.59) {
      this.actions.unknownCancels++;
      this.frame({ type: 'cancel', id: `${this.name}-ghost-${++this.counter}` });
    } else if (roll < 0.66) {
      this.actions.drops++;
      if (racing && canSend) this.racingSend();
      this.note(step, 'drop');
      this.ledger.abandon(this.current);
      this.current.client.drop();
      await this.reopen(pick);
    } else if (roll < 0.7) {
      this.actions.cleanCloses++;
      if (racing && canSend) this.racingSend();
      this.note(step, 'close');
      this.ledger.abandon(this.current);
      this.current.client.close();
      await this.reopen(pick);
    } else if (roll < 0.74) {
      this.actions.moves++;
      this.note(step, 'move');
      const old = this.current;
      const fresh = this.ledger.open(await this.connect());
      // The resume on the new socket may reach the server before this send on the old one.
      if (racing && canSend) this.racingSend();
      this.ledger.abandon(old);
      this.connection = fresh;
      this.resumePending(pick);
      // The old socket stays open a moment while its replies stream on the new one.
      await sleep(Math.floor(pick * 100));
      old.client.close();
    } else if (roll < 0.8) {
      this.actions.bursts++;
      const size = 10 + Math.floor(pick * 7);
      this.note(step, `burst of ${size}`);
      for (let index = 0; index < size; index++) {
        const kind = this.random();
        if (kind < 0.15 && this.ledger.pending().length < this.options.maxPending + 3) this.send();
        else if (kind < 0.4) this.frame({ type: 'cancel', id: `${this.name}-ghost-${++this.counter}` });
        else this.frame({ type: 'list_conversations' });
      }
    } else if (roll < 0.82) {
      this.actions.floods++;
      this.note(step, 'flood');
      for (let index = 0; index < this.options.floodFrames; index++) this.frame({ type: 'list_conversations' });
    } else if (roll < 0.86) {
      const conversation = [...this.ledger.records.values()].find((record) => record.conversationId !== undefined)?.conversationId;
      this.frame(conversation && pick < 0.5 ? { type: 'get_conversation', conversationId: conversation } : { type: 'list_conversations' });
    } else if (roll < 0.88) {
      this.actions.absences++;
      // One reply known to be alive, so the absence outlives something the client was following.
      if (canSend) {
        const record = this.send();
        const deadline = Date.now() + 5000;
        while (!record.accepted && record.terminals.length === 0 && Date.now() < deadline) {
          await sleep(5);
          this.ledger.readAll();
        }
      }
      this.note(step, `drop, then away for ${this.options.awayMs} ms`);
      this.ledger.abandon(this.current);
      this.current.client.drop();
      await sleep(this.options.awayMs);
      await this.reopen(pick);
    } else {
      await sleep(100 + Math.floor(pick * 300));
    }
  }

  private send(conversationId?: string, text?: string, regenerate = false): RequestRecord {
    const id = `${this.name}-${++this.counter}`;
    const record = this.ledger.sent(id, this.current);
    if (text !== undefined) this.actions.tooLong++;
    else if (regenerate) this.actions.regenerates++;
    else if (conversationId !== undefined) this.actions.sendsToConversation++;
    else this.actions.sends++;
    const prompt = text ?? PROMPTS[this.counter % PROMPTS.length] ?? 'hi';
    this.frame({ type: 'send', id, text: prompt, ...(conversationId === undefined ? {} : { conversationId }), ...(regenerate ? { regenerate: true as const } : {}) });
    this.note(-1, `send ${id}${conversationId === undefined ? '' : ` into ${conversationId}`}${regenerate ? ' (regenerate)' : ''}${text === undefined ? '' : ' (too long)'}`);
    return record;
  }

  /** A send written just before the socket is dropped, closed or left: its fate is a race. */
  private racingSend(): void {
    this.actions.racingSends++;
    this.send();
  }

  /** A socket the server closed (flood, slow reader): the client reconnects and resumes. */
  private async reconnectIfClosed(): Promise<void> {
    this.ledger.readAll();
    const code = this.current.client.closeCode;
    if (code === undefined || this.current.abandoned) return;
    this.actions.closedByServer[code] = (this.actions.closedByServer[code] ?? 0) + 1;
    this.note(-1, `closed by the server with ${code}`);
    this.ledger.abandon(this.current);
    // No roll here: when the server closes a socket depends on timing, not on the seed.
    await this.reopen(1);
  }

  private async reopen(pick: number): Promise<void> {
    this.connection = this.ledger.open(await this.connect());
    this.resumePending(pick);
  }

  /** Resumes every pending id on the current socket; sometimes also an id never sent. */
  private resumePending(pick: number): void {
    for (const record of this.ledger.pending()) {
      const after = this.ledger.handOff(record, this.current);
      this.actions.resumesSent++;
      this.frame({ type: 'resume', id: record.id, after });
      this.note(-1, `resume ${record.id} after ${after} on socket ${this.current.index}`);
    }
    if (pick < 0.3) {
      const id = `${this.name}-probe-${++this.counter}`;
      this.ledger.probed(id, this.current);
      this.actions.probes++;
      this.frame({ type: 'resume', id, after: -1 });
    }
  }

  private async connect(): Promise<TestClient> {
    for (let attempt = 0; ; attempt++) {
      try {
        const client = await this.server.connect(this.token);
        // A socket the server destroys must not crash the test through an unhandled 'error'.
        client.socket.on('error', () => undefined);
        return client;
      } catch (error) {
        if (attempt >= 50) throw error;
        this.actions.connectRetries++;
        await sleep(50);
      }
    }
  }

  private frame(frame: ClientFrame): void {
    this.current.client.sendFrame(frame);
  }

  private note(step: number, text: string): void {
    this.log.push(`${Date.now() - this.startedAt}ms${step >= 0 ? ` step ${step}` : ''} socket ${this.current.index}: ${text}`);
  }
}

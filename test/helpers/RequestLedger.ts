import { isTerminalFrame, type ServerFrame, type TerminalFrame } from '../../shared/protocol.js';
import { assembleReply } from './assembleReply.js';
import type { TestClient } from './TestClient.js';

/** One socket of the user, and how far the ledger has read its frames. */
export interface LedgerConnection {
  readonly client: TestClient;
  /** 1-based, in the order the user opened its sockets. */
  readonly index: number;
  /** Frames before this index have been routed. */
  cursor: number;
  /**
   * The client stopped listening to this socket (it dropped it, closed it, or moved its replies
   * away): frames that arrive on it later are never read, as a real client would not see them.
   */
  abandoned: boolean;
}

/** Everything the client saw about one request id, across the sockets that carried it. */
export interface RequestRecord {
  readonly id: string;
  /** `send`: a request the client sent; `probe`: a resume of an id that was never sent. */
  readonly origin: 'send' | 'probe';
  /** The socket whose frames for this id the client reads now. */
  owner: LedgerConnection;
  /** Frames for this id, one array per ownership period, in order: the input of assembleReply. */
  readonly segments: ServerFrame[][];
  accepted: boolean;
  /** From `accepted` or `resumed`. */
  conversationId: string | undefined;
  resumedFrames: number;
  /** Resumes the client sent for this id. */
  resumes: number;
  lastSeq: number;
  readonly terminals: TerminalFrame[];
  /** Frames for this id read after its first terminal frame (must stay empty). */
  readonly afterTerminal: ServerFrame[];
}

/**
 * The client-side ledger of one user's requests across all of that user's sockets.
 *
 * Invariants: a frame for an id is read only from the socket that owns the id at that moment
 * (the one it was sent on, then each socket it was resumed on), and only up to the moment the
 * client abandoned that socket; so "what the client saw" is exact, and every id the client sent
 * must end with exactly one terminal frame in it, whatever happened to the sockets.
 */
export class RequestLedger {
  readonly records = new Map<string, RequestRecord>();
  /** Errors without an id (frame-level refusals), by code. */
  readonly errorsWithoutId = new Map<string, number>();
  /** Frames for ids this user never sent nor probed (must stay empty). */
  readonly strays: ServerFrame[] = [];
  /**
   * Frames for an id read on a listened socket that does not own it (must stay empty: a socket
   * the client moved a reply away from is abandoned, so only a misdirected frame lands here).
   */
  readonly misrouted: Array<{ connection: number; frame: ServerFrame }> = [];
  private readonly connections: LedgerConnection[] = [];

  /** Starts reading a new socket of this user. */
  open(client: TestClient): LedgerConnection {
    const connection: LedgerConnection = { client, index: this.connections.length + 1, cursor: 0, abandoned: false };
    this.connections.push(connection);
    return connection;
  }

  /** The client sent `send` with this fresh id on `connection`. */
  sent(id: string, connection: LedgerConnection): RequestRecord {
    return this.add(id, 'send', connection);
  }

  /** The client sent a resume of an id it never sent: resume_unavailable is its only frame. */
  probed(id: string, connection: LedgerConnection): RequestRecord {
    const record = this.add(id, 'probe', connection);
    record.resumes++;
    return record;
  }

  /** Reads every frame that arrived on the sockets still listened to. */
  readAll(): void {
    for (const connection of this.connections) this.read(connection);
  }

  /** Reads what `connection` received so far, then stops listening to it for good. */
  abandon(connection: LedgerConnection): void {
    this.read(connection);
    connection.abandoned = true;
  }

  /**
   * Moves `record` to `connection` before a resume is sent there, and returns the `after` to
   * send: the last seq the client saw, on any socket.
   */
  handOff(record: RequestRecord, connection: LedgerConnection): number {
    this.read(record.owner);
    record.owner = connection;
    record.segments.push([]);
    record.resumes++;
    return record.lastSeq;
  }

  /**
   * Frames that reached a socket after the client stopped listening to it, by type (`error:code`
   * for errors): a dropped socket's last bytes, a moved reply's frames in flight, a send that
   * lost the race with its resume. Not part of what the client saw; counted for the record.
   */
  leftBehind(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const connection of this.connections) {
      if (!connection.abandoned) continue;
      for (const frame of connection.client.frames.slice(connection.cursor)) {
        const key = frame.type === 'error' ? `error:${frame.code}` : frame.type;
        counts[key] = (counts[key] ?? 0) + 1;
      }
    }
    return counts;
  }

  /** Ids without a terminal frame yet. */
  pending(): RequestRecord[] {
    return [...this.records.values()].filter((record) => record.terminals.length === 0);
  }

  /**
   * Every breach of the terminal-frame rule, as readable sentences: not exactly one terminal,
   * a gap or duplicate in the deltas, a frame after the terminal, or a frame nobody asked for.
   */
  violations(): string[] {
    const problems: string[] = [];
    for (const record of this.records.values()) {
      if (record.terminals.length !== 1) {
        problems.push(`${record.id}: ${record.terminals.length} terminal frames (${JSON.stringify(record.terminals)})`);
      }
      if (record.afterTerminal.length > 0) {
        problems.push(`${record.id}: frames after its terminal frame: ${JSON.stringify(record.afterTerminal)}`);
      }
      try {
        assembleReply(record.id, record.segments);
      } catch (error) {
        problems.push(`${record.id}: ${(error as Error).message} (segments ${JSON.stringify(record.segments.map((segment) => segment.map(brief)))})`);
      }
      const terminal = record.terminals[0];
      const admitted = record.accepted || record.resumedFrames > 0;
      if (terminal && (terminal.type === 'done' || terminal.type === 'cancelled') && !admitted) {
        problems.push(`${record.id}: ${terminal.type} without accepted or resumed`);
      }
      if (terminal?.type === 'error' && terminal.code === 'resume_unavailable' && record.resumes === 0) {
        problems.push(`${record.id}: resume_unavailable but the client never resumed it`);
      }
      if (record.origin === 'probe' && (terminal?.type !== 'error' || terminal.code !== 'resume_unavailable')) {
        problems.push(`${record.id}: a resume of a never-sent id ended with ${JSON.stringify(terminal)}`);
      }
    }
    problems.push(...this.socketViolations());
    for (const frame of this.strays) problems.push(`a frame for an id never sent: ${JSON.stringify(frame)}`);
    for (const { connection, frame } of this.misrouted) problems.push(`socket ${connection} got a frame for a reply it does not hold: ${JSON.stringify(frame)}`);
    return problems;
  }

  /**
   * Ids the client was told it could not resume (`resume_unavailable`) that the server admitted
   * all the same on a socket the client had left: the `send` was still in flight there when the
   * resume overtook it. The client's view stays consistent, but the reply runs unseen.
   */
  admittedAfterUnavailable(): string[] {
    const admitted = new Set<string>();
    for (const connection of this.connections) {
      for (const frame of connection.client.frames) if (frame.type === 'accepted') admitted.add(frame.id);
    }
    return [...this.records.values()]
      .filter((record) => record.origin === 'send' && !record.accepted && record.resumedFrames === 0 && admitted.has(record.id))
      .filter((record) => record.terminals[0]?.type === 'error' && record.terminals[0].code === 'resume_unavailable')
      .map((record) => record.id);
  }

  /**
   * Every frame each socket received, whether or not the client still listened to it: per
   * socket and id, deltas run on from `accepted` (0) or `resumed` (after + 1) without a gap,
   * and nothing follows the socket's one terminal frame for the id.
   */
  private socketViolations(): string[] {
    const problems: string[] = [];
    for (const connection of this.connections) {
      const state = new Map<string, { nextSeq: number | undefined; ended: boolean }>();
      for (const frame of connection.client.frames) {
        if (!('id' in frame) || frame.id === undefined) continue;
        const where = `socket ${connection.index}, ${frame.id}`;
        const entry = state.get(frame.id) ?? { nextSeq: undefined, ended: false };
        state.set(frame.id, entry);
        if (entry.ended) {
          problems.push(`${where}: ${frame.type} after this socket's terminal frame`);
          continue;
        }
        if (frame.type === 'accepted') entry.nextSeq ??= 0;
        else if (frame.type === 'resumed') entry.nextSeq = frame.after + 1;
        else if (frame.type === 'delta') {
          if (entry.nextSeq === undefined) problems.push(`${where}: delta ${frame.seq} before accepted or resumed`);
          else if (frame.seq !== entry.nextSeq) problems.push(`${where}: delta ${frame.seq}, expected ${entry.nextSeq}`);
          entry.nextSeq = frame.seq + 1;
        } else if (isTerminalFrame(frame)) entry.ended = true;
      }
    }
    return problems;
  }

  private add(id: string, origin: RequestRecord['origin'], connection: LedgerConnection): RequestRecord {
    if (this.records.has(id)) throw new Error(`request id ${id} reused by the test`);
    const record: RequestRecord = {
      id,
      origin,
      owner: connection,
      segments: [[]],
      accepted: false,
      conversationId: undefined,
      resumedFrames: 0,
      resumes: 0,
      lastSeq: -1,
      terminals: [],
      afterTerminal: [],
    };
    this.records.set(id, record);
    return record;
  }

  private read(connection: LedgerConnection): void {
    if (connection.abandoned) return;
    const frames = connection.client.frames;
    for (; connection.cursor < frames.length; connection.cursor++) {
      this.route(connection, frames[connection.cursor] as ServerFrame);
    }
  }

  private route(connection: LedgerConnection, frame: ServerFrame): void {
    if (!('id' in frame) || frame.id === undefined) {
      if (frame.type === 'error') this.errorsWithoutId.set(frame.code, (this.errorsWithoutId.get(frame.code) ?? 0) + 1);
      return;
    }
    const record = this.records.get(frame.id);
    if (!record) {
      this.strays.push(frame);
      return;
    }
    if (record.owner !== connection) {
      this.misrouted.push({ connection: connection.index, frame });
      return;
    }
    if (record.terminals.length > 0) record.afterTerminal.push(frame);
    (record.segments.at(-1) as ServerFrame[]).push(frame);
    if (frame.type === 'accepted') {
      record.accepted = true;
      record.conversationId = frame.conversationId;
    }
    if (frame.type === 'resumed') {
      record.resumedFrames++;
      record.conversationId = frame.conversationId;
    }
    if (frame.type === 'delta') record.lastSeq = frame.seq;
    if (isTerminalFrame(frame)) record.terminals.push(frame);
  }
}

function brief(frame: ServerFrame): string {
  return frame.type === 'delta' ? `delta#${frame.seq}` : frame.type === 'error' ? `error:${frame.code}` : frame.type;
}

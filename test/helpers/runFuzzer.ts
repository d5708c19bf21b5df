import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerFrame } from '../../shared/protocol.js';
import type { FuzzFrame } from './fuzzFrame.js';
import type { TestServer } from './startTestServer.js';
import type { TestClient } from './TestClient.js';
import { waitUntil } from './waitUntil.js';

/** Refusals a fuzz frame may get (it is never admitted as a reply: see FuzzFrame). */
const ERRORS_WITHOUT_ID = new Set(['bad_json', 'bad_frame', 'binary_frame', 'unknown_request', 'unauthorized', 'conversation_not_found']);
const ERRORS_WITH_ID = new Set(['resume_unavailable', 'message_too_long', 'conversation_not_found']);

/** How the transport ends a socket for each kind of frame that ends one (see FuzzFrame). */
const CLOSE_CODES: Record<'oversize' | 'badUtf8', ReadonlySet<number>> = {
  // ws sends 1009 and 1007; uWS closes the connection without a close frame for both (the peer
  // sees 1006; uwsTransport.ts explains why no close frame can be sent there).
  oversize: new Set([1009, 1006]),
  badUtf8: new Set([1007, 1006]),
};
const FLOOD_CLOSE = 4429;

export interface FuzzerOptions {
  /**
   * The server's frame rate limit is in force: a refusal (`rate_limited`) is an acceptable
   * answer, and a flood close (4429) at any point is expected; the fuzzer reconnects and goes on.
   * Otherwise every ordinary frame must get exactly one answer and only its own frame may close a
   * socket.
   */
  readonly rateLimited: boolean;
}

export interface FuzzOutcome {
  readonly sent: number;
  readonly answers: number;
  readonly sockets: number;
  /** Sockets closed by the server, by close code. */
  readonly closes: Record<string, number>;
  readonly problems: readonly string[];
}

/**
 * Writes `frames` as one user, reconnecting whenever the server ends the socket.
 *
 * Invariants checked: each answer is a refusal or an empty conversation list, never a reply;
 * before a frame that ends the socket (oversize, invalid UTF-8) every earlier frame has its one
 * answer, and that frame closes the socket with its code and gets no answer itself; without
 * rate limits no ordinary frame closes a socket and each gets exactly one answer.
 */
export async function runFuzzer(server: TestServer, name: string, frames: readonly FuzzFrame[], options: FuzzerOptions): Promise<FuzzOutcome> {
  const token = await server.token(name);
  const closes: Record<string, number> = {};
  const problems: string[] = [];
  let sent = 0;
  let answers = 0;
  let sockets = 0;
  let client!: TestClient;
  /** Frames sent on the current socket, and how many of its received frames were audited. */
  let sentHere = 0;
  let audited = 1;
  const connect = async () => {
    client = await server.connect(token);
    client.socket.on('error', () => undefined);
    sockets++;
    sentHere = 0;
    audited = 1;
  };
  const answered = () => client.frames.length - 1;
  const audit = () => {
    for (const frame of client.frames.slice(audited)) {
      const problem = badAnswer(frame, options.rateLimited);
      if (problem) problems.push(`${name}: ${problem}: ${JSON.stringify(frame).slice(0, 300)}`);
    }
    answers += client.frames.length - audited;
    audited = client.frames.length;
  };
  /** The server closed the socket on its own: only a flood close, and only under rate limits. */
  const closedByServer = async (code: number) => {
    closes[code] = (closes[code] ?? 0) + 1;
    if (!(options.rateLimited && code === FLOOD_CLOSE)) problems.push(`${name}: socket closed with ${code} after ordinary frames`);
    audit();
    if (answered() > sentHere) problems.push(`${name}: ${sentHere} frames got ${answered()} answers`);
    await connect();
  };
  /** Waits for the answers to every frame sent on this socket (or its close). */
  const settle = async () => {
    await waitUntil(() => answered() >= sentHere || client.closeCode !== undefined, 30_000, `${name}: answers to ${sentHere} frames`);
    // Let any extra (wrong) answer arrive before counting.
    await sleep(20);
    if (client.closeCode !== undefined) return closedByServer(client.closeCode);
    audit();
    if (answered() !== sentHere) problems.push(`${name}: ${sentHere} frames got ${answered()} answers`);
  };

  await connect();
  for (const frame of frames) {
    sent++;
    if (frame.kind === 'text' || frame.kind === 'binary') {
      client.sendRaw(frame.kind === 'text' ? frame.data : Buffer.from(frame.data), frame.kind === 'binary');
      sentHere++;
      // Under rate limits, look up after each frame: a flood-closed socket must be replaced,
      // or the rest of the frames would go to a socket that is closing.
      if (options.rateLimited) {
        await sleep(1);
        if (client.closeCode !== undefined) await closedByServer(client.closeCode);
      }
      continue;
    }
    await settle();
    const before = client.frames.length;
    client.sendRaw(Buffer.from(frame.data), frame.kind === 'oversize' && typeof frame.data !== 'string');
    const code = await client.waitClose(10_000);
    closes[code] = (closes[code] ?? 0) + 1;
    if (!CLOSE_CODES[frame.kind].has(code) && !(options.rateLimited && code === FLOOD_CLOSE)) {
      problems.push(`${name}: a ${frame.kind} frame closed the socket with ${code}`);
    }
    if (client.frames.length !== before && !options.rateLimited) {
      problems.push(`${name}: a ${frame.kind} frame was answered: ${JSON.stringify(client.frames.slice(before))}`);
    }
    audit();
    await connect();
  }
  await settle();
  return { sent, answers, sockets, closes, problems };
}

/** Why `frame` is not an acceptable answer to a fuzz frame, or undefined if it is. */
function badAnswer(frame: ServerFrame, rateLimited: boolean): string | undefined {
  if (frame.type === 'conversations') return frame.items.length === 0 ? undefined : 'a fuzzer was shown conversations';
  if (frame.type !== 'error') return `unexpected ${frame.type} frame`;
  if (frame.message.length === 0) return 'error without a message';
  if (rateLimited && frame.code === 'rate_limited') return undefined;
  const allowed = frame.id === undefined ? ERRORS_WITHOUT_ID : ERRORS_WITH_ID;
  return allowed.has(frame.code) ? undefined : `unexpected error ${frame.code}${frame.id === undefined ? '' : ` for ${frame.id}`}`;
}

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { assembleReply } from '../helpers/assembleReply.js';
import { ChaosUser, type ChaosActions } from '../helpers/ChaosUser.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import type { RequestRecord } from '../helpers/RequestLedger.js';
import { loadGatedTinyEngine, startTestServer, TRANSPORTS } from '../helpers/startTestServer.js';
import { waitUntil } from '../helpers/waitUntil.js';

/** Change to explore other runs; a failure message names the seed of the user that saw it. */
const SEED = 0x5eed_c4a0;
const USERS = 6;
const STEPS = 45;
const MAX_TEXT_CHARS = 400;
const GRACE_MS = 2000;

/**
 * Small enough that every kind of refusal happens: 2 slots with a short queue (queue_full), a
 * low frame rate (rate_limited, floods), a per-user reply budget that runs out late in the run.
 * A fresh socket allows framesPerSecond + frameBurst frames at once: the resumes sent after a
 * reconnect (ChaosOptions.maxPending + a burst's sends + a probe) fit in it.
 */
const CHAOS_CONFIG = {
  maxTokens: 150,
  maxQueue: 6,
  maxQueuedPerUser: 3,
  maxTextChars: MAX_TEXT_CHARS,
  framesPerSecond: 5,
  frameBurst: 10,
  floodStrikes: 12,
  generationsPerMinute: 22,
  // Short, so a user who stays away longer (ChaosOptions.awayMs) finds its replies gone.
  resumeGraceMs: GRACE_MS,
  // Every socket comes from 127.0.0.1: the per-IP caps would otherwise refuse the reconnects.
  upgradesPerMinute: 100_000,
  tokenRequestsPerMinute: 10_000,
  maxConnectionsPerIp: 1000,
} as const;

const EXPECTED_TERMINAL_ERRORS = new Set(['rate_limited', 'queue_full', 'resume_unavailable', 'message_too_long', 'conversation_busy']);

interface Tally {
  requests: number;
  accepted: number;
  queued: number;
  resumed: number;
  deltas: number;
  done: number;
  cancelled: number;
  terminalErrors: Record<string, number>;
  errorsWithoutId: Record<string, number>;
  /** Frames that reached sockets after the client left them (see RequestLedger.leftBehind). */
  leftBehind: Record<string, number>;
  /**
   * Reported, not asserted: each socket still sees one terminal frame per id, but the request
   * runs although its owner was told it cannot be resumed (see RequestLedger).
   */
  admittedAfterUnavailable: string[];
  /** Replies the client saw alive (accepted or resumed) that a later resume found gone. */
  expired: number;
}

function tallyOf(users: readonly ChaosUser[]): Tally {
  const tally: Tally = { requests: 0, accepted: 0, queued: 0, resumed: 0, deltas: 0, done: 0, cancelled: 0, terminalErrors: {}, errorsWithoutId: {}, leftBehind: {}, admittedAfterUnavailable: [], expired: 0 };
  for (const user of users) {
    for (const record of user.ledger.records.values()) {
      tally.requests++;
      const frames = record.segments.flat();
      if (record.accepted) tally.accepted++;
      if (frames.some((frame) => frame.type === 'queued')) tally.queued++;
      tally.resumed += record.resumedFrames;
      tally.deltas += frames.filter((frame) => frame.type === 'delta').length;
      const last = record.terminals[0];
      if ((record.accepted || record.resumedFrames > 0) && last?.type === 'error' && last.code === 'resume_unavailable') tally.expired++;
      for (const terminal of record.terminals) {
        if (terminal.type === 'done') tally.done++;
        else if (terminal.type === 'cancelled') tally.cancelled++;
        else tally.terminalErrors[terminal.code] = (tally.terminalErrors[terminal.code] ?? 0) + 1;
      }
    }
    for (const [code, count] of user.ledger.errorsWithoutId) tally.errorsWithoutId[code] = (tally.errorsWithoutId[code] ?? 0) + count;
    tally.admittedAfterUnavailable.push(...user.ledger.admittedAfterUnavailable());
    for (const [type, count] of Object.entries(user.ledger.leftBehind())) tally.leftBehind[type] = (tally.leftBehind[type] ?? 0) + count;
  }
  return tally;
}

function actionsOf(users: readonly ChaosUser[]): ChaosActions {
  const sum: ChaosActions = { sends: 0, sendsToConversation: 0, regenerates: 0, tooLong: 0, cancels: 0, unknownCancels: 0, drops: 0, absences: 0, cleanCloses: 0, moves: 0, bursts: 0, floods: 0, probes: 0, racingSends: 0, resumesSent: 0, closedByServer: {}, connectRetries: 0 };
  for (const { actions } of users) {
    for (const key of Object.keys(sum) as Array<keyof ChaosActions>) {
      if (key === 'closedByServer') {
        for (const [code, count] of Object.entries(actions.closedByServer)) sum.closedByServer[code] = (sum.closedByServer[code] ?? 0) + count;
      } else {
        sum[key] += actions[key];
      }
    }
  }
  return sum;
}

/** What someone needs to replay a failure: the seed, the user's recent actions, the record. */
function reproduction(transport: string, user: ChaosUser, problems: readonly string[]): string {
  return [
    `transport ${transport}, user ${user.name}, seed ${user.seed} (SEED ${SEED} + user index), ${STEPS} steps`,
    ...problems.slice(0, 10),
    'last actions:',
    ...user.log.slice(-60),
  ].join('\n');
}

/** The reply text the client assembled; undefined when the deltas had a gap (reported apart). */
function textOf(record: RequestRecord): string | undefined {
  try {
    return assembleReply(record.id, record.segments).text;
  } catch {
    return undefined;
  }
}

for (const transport of TRANSPORTS) {
  describe(`chaos over ${transport}`, () => {
    let engine: GatedEngine;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 2, contextSize: 4096 });
    });
    after(async () => {
      await engine.dispose();
    });

    test('every request id ends with exactly one terminal frame through drops, moves, cancels, floods and rate limits', async (t) => {
      const server = await startTestServer(transport, engine, CHAOS_CONFIG);
      try {
        // The tiny model recites the same passage whatever the prompt: every full reply equals this.
        const witness = await server.client('witness');
        const witnessId = witness.send('tell me the whole story');
        assert.equal((await witness.terminal(witnessId)).type, 'done');
        const reference = witness.replyText(witnessId);
        witness.close();

        const users = Array.from(
          { length: USERS },
          (_, index) =>
            new ChaosUser(server, `chaos${index}`, SEED + index, { steps: STEPS, maxPending: 6, tooLongText: 'x'.repeat(MAX_TEXT_CHARS + 1), floodFrames: 40, awayMs: GRACE_MS + 500 }),
        );
        // Replies last as long on every machine (about 150 pieces at one per 2 ms, with both
        // slots busy), so the users' drops, moves and bursts meet running replies and a full queue.
        engine.gate.pace(1);
        const startedAt = Date.now();
        await Promise.all(users.map((user) => user.start()));
        await Promise.all(users.map((user) => user.run()));
        const ranMs = Date.now() - startedAt;
        await Promise.all(users.map((user) => user.settle(30_000)));
        engine.gate.open();
        const chat = server.started.server.chat;
        await waitUntil(() => chat.liveCount === 0 && chat.scheduler.activeCount === 0 && chat.scheduler.queuedCount === 0, 20_000, 'no reply left running');

        const tally = tallyOf(users);
        const actions = actionsOf(users);
        t.diagnostic(
          `${transport}: ${ranMs} ms of chaos, ${tally.requests} ids; accepted ${tally.accepted}, queued ${tally.queued}, resumed ${tally.resumed}, expired ${tally.expired}, deltas ${tally.deltas}, ` +
            `done ${tally.done}, cancelled ${tally.cancelled}, terminal errors ${JSON.stringify(tally.terminalErrors)}, errors without id ${JSON.stringify(tally.errorsWithoutId)}; ` +
            `left behind on sockets the client had left ${JSON.stringify(tally.leftBehind)}; ` +
            `admitted after resume_unavailable ${JSON.stringify(tally.admittedAfterUnavailable)}; ` +
            `actions ${JSON.stringify(actions)}`,
        );

        for (const user of users) {
          const problems = user.ledger.violations();
          for (const record of user.ledger.records.values()) {
            const text = textOf(record);
            const terminal = record.terminals[0];
            if (text === undefined || terminal === undefined) continue;
            if (terminal.type === 'done' && terminal.stopReason === 'max_tokens') {
              if (text !== reference) problems.push(`${record.id}: done, but its text differs from the reference (${text.length} vs ${reference.length} chars)`);
            } else if (!reference.startsWith(text)) {
              problems.push(`${record.id}: ${terminal.type} with text that is not a prefix of the reference`);
            }
          }
          assert.deepEqual(problems, [], reproduction(transport, user, problems));
        }

        // Every refusal the chaos provokes on purpose; anything else (engine_error, internal) is a bug.
        const unexpected = Object.keys(tally.terminalErrors).filter((code) => !EXPECTED_TERMINAL_ERRORS.has(code));
        const failures = server.logs.lines.filter((line) => line.includes('generation failed') || line.includes('frame handling failed'));
        assert.deepEqual(unexpected, [], `unexpected terminal errors; server log:\n${failures.join('\n')}`);

        // The run must have exercised every path, or it proves nothing.
        const covered: Record<string, number> = {
          accepted: tally.accepted,
          queued: tally.queued,
          resumed: tally.resumed,
          done: tally.done,
          cancelled: tally.cancelled,
          'terminal rate_limited': tally.terminalErrors.rate_limited ?? 0,
          'terminal queue_full': tally.terminalErrors.queue_full ?? 0,
          'terminal resume_unavailable': tally.terminalErrors.resume_unavailable ?? 0,
          'a reply seen alive, then gone after the grace period': tally.expired,
          'terminal message_too_long': tally.terminalErrors.message_too_long ?? 0,
          'rate_limited without id': tally.errorsWithoutId.rate_limited ?? 0,
          'unknown_request without id': tally.errorsWithoutId.unknown_request ?? 0,
          drops: actions.drops,
          absences: actions.absences,
          regenerates: actions.regenerates,
          'clean closes': actions.cleanCloses,
          moves: actions.moves,
          probes: actions.probes,
          'flood closes (4429)': actions.closedByServer['4429'] ?? 0,
        };
        const missing = Object.entries(covered).filter(([, count]) => count === 0).map(([kind]) => kind);
        assert.deepEqual(missing, [], `the chaos never produced: ${missing.join(', ')}`);

        for (const user of users) user.close();
        // Still healthy: a newcomer streams a full reply.
        const late = await server.client('late');
        const lateId = late.send('still there?');
        assert.equal((await late.terminal(lateId)).type, 'done');
        assert.equal(late.replyText(lateId), reference);
      } finally {
        engine.gate.open();
        await server.stop();
      }
    });
  });
}

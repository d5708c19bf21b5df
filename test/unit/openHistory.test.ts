import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import { MessageOutcome } from '../../server/history/ConversationRepository.js';
import { HISTORY_KEY_FILE } from '../../server/history/loadOrCreateHistoryKey.js';
import { openHistory } from '../../server/history/openHistory.js';
import { lazyPostgres, postgresUnavailable } from '../helpers/lazyPostgres.js';
import { LogSink } from '../helpers/LogSink.js';
import { freePort } from '../helpers/startRedis.js';

const log = pino({ level: 'silent' });
const DAY = 24 * 3600 * 1000;

async function withDataDir(run: (dataDir: string) => Promise<void>): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'parley-open-history-'));
  try {
    await run(dataDir);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

test('at start, a reply a crash left streaming is marked interrupted, keeping its text', () =>
  withDataDir(async (dataDir) => {
    const config = { history: 'sqlite', historyDays: 0, historyKeyFile: undefined, dataDir } as const;
    const first = await openHistory(config, log);
    const now = Date.now();
    await first.repository.createConversation({ id: 'c_1', ownerId: 'u_a', title: 'hi', createdAt: now, updatedAt: now, model: 'tiny' });
    await first.repository.appendMessage('u_a', { id: 'm_1', conversationId: 'c_1', role: 'user', text: 'hi', createdAt: now, tokenCount: undefined, requestId: undefined, outcome: undefined });
    await first.repository.appendMessage('u_a', { id: 'm_2', conversationId: 'c_1', role: 'assistant', text: 'half a rep', createdAt: now, tokenCount: undefined, requestId: 'r1', outcome: MessageOutcome.streaming });
    await first.close();
    const second = await openHistory(config, log);
    const messages = await second.repository.listMessages('u_a', 'c_1');
    assert.deepEqual([messages[1]?.text, messages[1]?.outcome], ['half a rep', MessageOutcome.interrupted]);
    await second.close();
  }));

test('with historyDays, conversations idle for longer are deleted at start; recent ones stay', () =>
  withDataDir(async (dataDir) => {
    const keep = { history: 'sqlite', historyDays: 0, historyKeyFile: undefined, dataDir } as const;
    const first = await openHistory(keep, log);
    const now = Date.now();
    await first.repository.createConversation({ id: 'c_old', ownerId: 'u_a', title: 'old', createdAt: now - 3 * DAY, updatedAt: now - 3 * DAY, model: 'tiny' });
    await first.repository.createConversation({ id: 'c_new', ownerId: 'u_a', title: 'new', createdAt: now - DAY / 2, updatedAt: now - DAY / 2, model: 'tiny' });
    await first.close();
    const purging = await openHistory({ ...keep, historyDays: 2 }, log);
    assert.deepEqual((await purging.repository.listConversations('u_a')).map((conversation) => conversation.id), ['c_new']);
    await purging.close();
  }));

test('with history off nothing is written to the data dir', () =>
  withDataDir(async (dataDir) => {
    const opened = await openHistory({ history: 'off', historyDays: 0, historyKeyFile: undefined, dataDir }, log);
    const now = Date.now();
    await opened.repository.createConversation({ id: 'c_1', ownerId: 'u_a', title: 'hi', createdAt: now, updatedAt: now, model: 'tiny' });
    await opened.close();
    assert.deepEqual(await readdir(dataDir), []);
  }));

const postgres = lazyPostgres();
after(() => postgres.close());
const noPostgres = postgresUnavailable('the --database tests of openHistory') ?? false;

test('with a database, gateways share the encrypted PostgreSQL history; a starting one leaves the others’ streaming replies alone', { skip: noPostgres }, () =>
  withDataDir(async (first) =>
    withDataDir(async (second) => {
      // Trust auth takes any password; the logs must not show this one.
      const database = (await postgres.createDatabase()).replace('postgres://parley@', 'postgres://parley:Pw-Secret-9@');
      const sink = new LogSink();
      const logger = pino({ level: 'info' }, sink);
      const a = await openHistory({ history: 'sqlite', historyDays: 0, historyKeyFile: undefined, dataDir: first, database }, logger);
      const now = Date.now();
      await a.repository.createConversation({ id: 'c_1', ownerId: 'u_a', title: 'hi', createdAt: now, updatedAt: now, model: 'tiny' });
      await a.repository.appendMessage('u_a', { id: 'm_1', conversationId: 'c_1', role: 'assistant', text: 'half a rep', createdAt: now, tokenCount: undefined, requestId: 'r1', outcome: MessageOutcome.streaming });

      // The second gateway: its own data dir, the first one's history key.
      const b = await openHistory({ history: 'sqlite', historyDays: 0, historyKeyFile: join(first, HISTORY_KEY_FILE), dataDir: second, database }, logger);
      assert.deepEqual((await b.repository.listMessages('u_a', 'c_1')).map((message) => [message.text, message.outcome]), [['half a rep', MessageOutcome.streaming]]);
      await a.close();
      await b.close();
      const c = await openHistory({ history: 'sqlite', historyDays: 0, historyKeyFile: join(first, HISTORY_KEY_FILE), dataDir: second, database }, logger);
      assert.equal((await c.repository.listMessages('u_a', 'c_1'))[0]?.outcome, MessageOutcome.interrupted, 'once its gateway is gone, a restart marks it');
      await c.close();

      assert.deepEqual(await readdir(second), [], 'nothing is written to the data dir');
      const shown = database.replace('parley:Pw-Secret-9@', '***:***@');
      assert.equal(sink.records.filter((record) => record.msg === `history: encrypted PostgreSQL at ${shown}`).length, 3);
      assert.equal(sink.contains('Pw-Secret-9'), false, 'the password is in no log line');
    })));

test('with a database that cannot be reached, the start fails naming it without its password', () =>
  withDataDir(async (dataDir) => {
    const database = `postgres://parley:Pw-Secret-9@127.0.0.1:${await freePort()}/parley`;
    await assert.rejects(openHistory({ history: 'sqlite', historyDays: 0, historyKeyFile: undefined, dataDir, database }, log), (error: unknown) => {
      assert.ok(error instanceof Error);
      assert.match(error.message, /^cannot reach the history database at postgres:\/\/\*\*\*:\*\*\*@127\.0\.0\.1:\d+\/parley: /);
      assert.equal(error.message.includes('Pw-Secret-9'), false);
      return true;
    });
  }));

import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { MessageOutcome } from '../../server/history/ConversationRepository.js';
import { openHistory } from '../../server/history/openHistory.js';

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

/**
 * The ConversationRepository contract, run against every implementation: whatever store serves,
 * the chat core gets the same answers.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  MessageOutcome,
  type ConversationRepository,
  type StoredConversation,
  type StoredMessage,
} from '../../server/history/ConversationRepository.js';
import { HistoryCipher } from '../../server/history/HistoryCipher.js';
import { ListLimit } from '../../server/history/listLimit.js';
import { MemoryConversationRepository } from '../../server/history/MemoryConversationRepository.js';
import { PostgresConversationRepository } from '../../server/history/PostgresConversationRepository.js';
import { SqliteConversationRepository } from '../../server/history/SqliteConversationRepository.js';
import { lazyPostgres, postgresUnavailable } from '../helpers/lazyPostgres.js';

const dirs: string[] = [];
const repositories: ConversationRepository[] = [];
const postgres = lazyPostgres();
after(async () => {
  await Promise.all(repositories.map((repository) => repository.close()));
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  await postgres.close();
});

const implementations: ReadonlyArray<{ readonly name: string; readonly create: () => Promise<ConversationRepository>; readonly skip?: string }> = [
  { name: 'MemoryConversationRepository', create: async () => new MemoryConversationRepository() },
  {
    name: 'SqliteConversationRepository',
    create: async () => {
      const directory = await mkdtemp(join(tmpdir(), 'parley-history-'));
      dirs.push(directory);
      return new SqliteConversationRepository({ directory, cipher: new HistoryCipher(randomBytes(32)), purgeBatchSize: 2 });
    },
  },
  {
    name: 'PostgresConversationRepository',
    // A database per repository: each test starts from an empty store.
    create: async () => new PostgresConversationRepository({ url: await postgres.createDatabase(), cipher: new HistoryCipher(randomBytes(32)), purgeBatchSize: 2, importBatchSize: 7 }),
    skip: postgresUnavailable('the Postgres ConversationRepository contract'),
  },
];


const ALICE = 'u_alice';
const BOB = 'u_bob';
const T0 = 1_900_000_000_000;

function conversation(id: string, ownerId: string, at: number, title = `title of ${id}`): StoredConversation {
  return { id, ownerId, title, createdAt: at, updatedAt: at, model: 'tiny' };
}

function userMessage(id: string, conversationId: string, at: number, text = `question ${id}`): StoredMessage {
  return { id, conversationId, role: 'user', text, createdAt: at, tokenCount: undefined, requestId: undefined, outcome: undefined };
}

function reply(id: string, conversationId: string, at: number, outcome: MessageOutcome, text = `answer ${id}`): StoredMessage {
  return { id, conversationId, role: 'assistant', text, createdAt: at, tokenCount: 12, requestId: `r_${id}`, outcome };
}

for (const implementation of implementations) {
  describe(`${implementation.name} keeps the ConversationRepository contract`, { skip: implementation.skip ?? false }, () => {
    async function opened(): Promise<ConversationRepository> {
      const repository = await implementation.create();
      repositories.push(repository);
      await repository.open();
      return repository;
    }

    /** Alice's conversation c1 with a question and its answer. */
    async function withOneExchange(): Promise<ConversationRepository> {
      const repository = await opened();
      await repository.createConversation(conversation('c1', ALICE, T0));
      assert.equal(await repository.appendMessage(ALICE, userMessage('m1', 'c1', T0 + 1)), true);
      assert.equal(await repository.appendMessage(ALICE, reply('m2', 'c1', T0 + 2, MessageOutcome.done)), true);
      return repository;
    }

    test('a conversation and its messages read back exactly as stored', async () => {
      const repository = await withOneExchange();
      assert.deepEqual(await repository.getConversation(ALICE, 'c1'), { ...conversation('c1', ALICE, T0), updatedAt: T0 + 2 });
      assert.deepEqual(await repository.listMessages(ALICE, 'c1'), [userMessage('m1', 'c1', T0 + 1), reply('m2', 'c1', T0 + 2, MessageOutcome.done)]);
    });

    test("another user's id reads as unknown for every method, and changes nothing", async () => {
      const repository = await withOneExchange();
      const snapshot = async () => ({
        conversation: await repository.getConversation(ALICE, 'c1'),
        messages: await repository.listMessages(ALICE, 'c1'),
        list: await repository.listConversations(ALICE),
      });
      const before = await snapshot();
      for (const [owner, id] of [[BOB, 'c1'], [ALICE, 'c_unknown']] as const) {
        assert.equal(await repository.getConversation(owner, id), undefined);
        assert.deepEqual(await repository.listMessages(owner, id), []);
        assert.equal(await repository.appendMessage(owner, userMessage(`m_${owner}_${id}`, id, T0 + 50)), false);
        assert.equal(await repository.updateMessage(owner, id === 'c1' ? 'm2' : 'm_unknown', { text: 'hijacked', outcome: MessageOutcome.error }), false);
        assert.equal(await repository.deleteMessages(owner, id, ['m1', 'm2']), 0);
        assert.equal(await repository.renameConversation(owner, id, 'hijacked'), false);
        assert.equal(await repository.deleteConversation(owner, id), false);
      }
      assert.deepEqual(await repository.listConversations(BOB), []);
      assert.equal(await repository.countConversations(BOB), 0);
      assert.equal(await repository.deleteAllConversations(BOB), 0);
      assert.deepEqual(await snapshot(), before);
    });

    test('messages come back in append order, even with equal or earlier timestamps', async () => {
      const repository = await opened();
      await repository.createConversation(conversation('c1', ALICE, T0));
      const messages = [
        userMessage('m_z', 'c1', T0 + 10),
        reply('m_a', 'c1', T0 + 10, MessageOutcome.done),
        userMessage('m_m', 'c1', T0 + 5),
        reply('m_b', 'c1', T0 + 20, MessageOutcome.streaming),
      ];
      for (const message of messages) await repository.appendMessage(ALICE, message);
      assert.deepEqual((await repository.listMessages(ALICE, 'c1')).map((message) => message.id), ['m_z', 'm_a', 'm_m', 'm_b']);
    });

    test('appending sets updatedAt to the message time and moves the conversation to the top', async () => {
      const repository = await opened();
      await repository.createConversation(conversation('c_old', ALICE, T0));
      await repository.createConversation(conversation('c_new', ALICE, T0 + 100));
      assert.deepEqual((await repository.listConversations(ALICE)).map((summary) => summary.id), ['c_new', 'c_old']);
      await repository.appendMessage(ALICE, userMessage('m1', 'c_old', T0 + 200));
      assert.equal((await repository.getConversation(ALICE, 'c_old'))?.updatedAt, T0 + 200);
      assert.equal((await repository.getConversation(ALICE, 'c_old'))?.createdAt, T0);
      assert.deepEqual((await repository.listConversations(ALICE)).map((summary) => summary.id), ['c_old', 'c_new']);
    });

    test('rename changes the title and nothing else', async () => {
      const repository = await withOneExchange();
      const before = await repository.getConversation(ALICE, 'c1');
      assert.equal(await repository.renameConversation(ALICE, 'c1', 'Über 🦊 "quotes" and\nnewlines'), true);
      assert.deepEqual(await repository.getConversation(ALICE, 'c1'), { ...before, title: 'Über 🦊 "quotes" and\nnewlines' });
      assert.equal(await repository.renameConversation(ALICE, 'c1', ''), true);
      assert.equal((await repository.getConversation(ALICE, 'c1'))?.title, '');
    });

    test('updateMessage changes the fields given and keeps the others', async () => {
      const repository = await opened();
      await repository.createConversation(conversation('c1', ALICE, T0));
      await repository.appendMessage(ALICE, { ...reply('m1', 'c1', T0 + 1, MessageOutcome.streaming, ''), tokenCount: undefined });
      assert.equal(await repository.updateMessage(ALICE, 'm1', { text: 'Hel' }), true);
      assert.equal(await repository.updateMessage(ALICE, 'm1', { text: 'Hello', tokenCount: 2, outcome: MessageOutcome.done }), true);
      assert.equal(await repository.updateMessage(ALICE, 'm1', {}), true, 'an empty update of an owned message is still found');
      assert.deepEqual(await repository.listMessages(ALICE, 'c1'), [
        { ...reply('m1', 'c1', T0 + 1, MessageOutcome.done, 'Hello'), tokenCount: 2 },
      ]);
      assert.equal(await repository.updateMessage(ALICE, 'm_unknown', { text: 'x' }), false);
    });

    test('deleteMessages deletes the named messages of that conversation only', async () => {
      const repository = await withOneExchange();
      await repository.appendMessage(ALICE, userMessage('m3', 'c1', T0 + 3));
      await repository.appendMessage(ALICE, reply('m4', 'c1', T0 + 4, MessageOutcome.stopped));
      await repository.createConversation(conversation('c2', ALICE, T0));
      await repository.appendMessage(ALICE, userMessage('m_other', 'c2', T0 + 5));
      assert.equal(await repository.deleteMessages(ALICE, 'c1', ['m4', 'm3', 'm3', 'm_other', 'm_unknown']), 2);
      assert.deepEqual((await repository.listMessages(ALICE, 'c1')).map((message) => message.id), ['m1', 'm2']);
      assert.deepEqual((await repository.listMessages(ALICE, 'c2')).map((message) => message.id), ['m_other'], 'an id of another conversation is ignored');
      assert.equal(await repository.updateMessage(ALICE, 'm4', { text: 'x' }), false, 'a deleted message is unknown');
      await repository.appendMessage(ALICE, userMessage('m5', 'c1', T0 + 6));
      assert.deepEqual((await repository.listMessages(ALICE, 'c1')).map((message) => message.id), ['m1', 'm2', 'm5'], 'a message appended after a delete comes last');
      assert.equal(await repository.deleteMessages(ALICE, 'c1', []), 0);
    });

    test('deleting a conversation deletes its messages; deleting all deletes only that owner’s', async () => {
      const repository = await withOneExchange();
      await repository.createConversation(conversation('c2', ALICE, T0));
      await repository.appendMessage(ALICE, userMessage('m3', 'c2', T0 + 3));
      await repository.createConversation(conversation('c_bob', BOB, T0));
      await repository.appendMessage(BOB, userMessage('m_bob', 'c_bob', T0 + 4));

      assert.equal(await repository.deleteConversation(ALICE, 'c1'), true);
      assert.equal(await repository.getConversation(ALICE, 'c1'), undefined);
      assert.deepEqual(await repository.listMessages(ALICE, 'c1'), []);
      assert.equal(await repository.updateMessage(ALICE, 'm1', { text: 'x' }), false, 'its messages are gone too');
      assert.equal(await repository.appendMessage(ALICE, userMessage('m9', 'c1', T0 + 9)), false);
      assert.equal(await repository.deleteConversation(ALICE, 'c1'), false, 'deleting twice finds nothing');

      assert.equal(await repository.deleteAllConversations(ALICE), 1);
      assert.equal(await repository.countConversations(ALICE), 0);
      assert.equal(await repository.updateMessage(ALICE, 'm3', { text: 'x' }), false);
      assert.equal(await repository.countConversations(BOB), 1);
      assert.deepEqual((await repository.listMessages(BOB, 'c_bob')).map((message) => message.id), ['m_bob']);
    });

    test('purgeIdle deletes every owner’s conversations last updated before the cutoff, with their messages', async () => {
      const repository = await opened();
      for (let index = 0; index < 5; index += 1) await repository.createConversation(conversation(`c_idle${index}`, index % 2 ? BOB : ALICE, T0 + index));
      await repository.appendMessage(ALICE, userMessage('m_idle', 'c_idle0', T0 + 1));
      await repository.createConversation(conversation('c_edge', ALICE, T0 + 1000));
      await repository.createConversation(conversation('c_old_but_active', BOB, T0));
      await repository.appendMessage(BOB, userMessage('m_active', 'c_old_but_active', T0 + 2000));

      assert.equal(await repository.purgeIdle(T0 + 1000), 5);
      assert.deepEqual((await repository.listConversations(ALICE)).map((summary) => summary.id), ['c_edge'], 'updatedAt equal to the cutoff is kept');
      assert.deepEqual((await repository.listConversations(BOB)).map((summary) => summary.id), ['c_old_but_active']);
      assert.equal(await repository.updateMessage(ALICE, 'm_idle', { text: 'x' }), false, 'messages of purged conversations are gone');
      assert.equal(await repository.purgeIdle(T0 + 1000), 0);
    });

    test('markInterrupted turns streaming replies into interrupted and leaves every other message alone', async () => {
      const repository = await opened();
      await repository.createConversation(conversation('c1', ALICE, T0));
      await repository.createConversation(conversation('c2', BOB, T0));
      const messages = [
        userMessage('m_user', 'c1', T0 + 1),
        reply('m_stream1', 'c1', T0 + 2, MessageOutcome.streaming),
        reply('m_done', 'c1', T0 + 3, MessageOutcome.done),
        reply('m_stopped', 'c1', T0 + 4, MessageOutcome.stopped),
        reply('m_error', 'c1', T0 + 5, MessageOutcome.error),
        reply('m_interrupted', 'c1', T0 + 6, MessageOutcome.interrupted),
      ];
      for (const message of messages) await repository.appendMessage(ALICE, message);
      await repository.appendMessage(BOB, reply('m_stream2', 'c2', T0 + 7, MessageOutcome.streaming));

      assert.equal(await repository.markInterrupted(), 2);
      const outcomes = (await repository.listMessages(ALICE, 'c1')).map((message) => [message.id, message.outcome]);
      assert.deepEqual(outcomes, [
        ['m_user', undefined],
        ['m_stream1', 'interrupted'],
        ['m_done', 'done'],
        ['m_stopped', 'stopped'],
        ['m_error', 'error'],
        ['m_interrupted', 'interrupted'],
      ]);
      assert.equal((await repository.listMessages(BOB, 'c2'))[0]?.outcome, 'interrupted');
      assert.equal((await repository.listMessages(BOB, 'c2'))[0]?.text, 'answer m_stream2', 'the text a reply had is kept');
      assert.equal(await repository.markInterrupted(), 0);
    });

    test('listConversations: most recently updated first, ties by id, limited, each with its message count', async () => {
      const repository = await opened();
      await repository.createConversation(conversation('c_a', ALICE, T0 + 10));
      await repository.createConversation(conversation('c_b', ALICE, T0 + 30));
      await repository.createConversation(conversation('c_c', ALICE, T0 + 20));
      await repository.createConversation(conversation('c_d', ALICE, T0 + 20));
      await repository.createConversation(conversation('c_bob', BOB, T0 + 99));
      await repository.appendMessage(ALICE, userMessage('m1', 'c_a', T0 + 5));
      await repository.appendMessage(ALICE, reply('m2', 'c_a', T0 + 6, MessageOutcome.done));
      await repository.appendMessage(ALICE, userMessage('m3', 'c_c', T0 + 20));

      const all = await repository.listConversations(ALICE);
      assert.deepEqual(all.map((summary) => [summary.id, summary.messageCount]), [['c_b', 0], ['c_d', 0], ['c_c', 1], ['c_a', 2]]);
      assert.deepEqual(all[3], { ...conversation('c_a', ALICE, T0 + 10), updatedAt: T0 + 6, messageCount: 2 }, 'a summary is the conversation plus its count');
      assert.deepEqual((await repository.listConversations(ALICE, { limit: 2 })).map((summary) => summary.id), ['c_b', 'c_d']);
      assert.deepEqual((await repository.listConversations(ALICE, { limit: ListLimit.max })).length, 4);
      for (const limit of [0, -1, 1.5, ListLimit.max + 1]) await assert.rejects(repository.listConversations(ALICE, { limit }), RangeError);
    });

    test('listConversations returns the default page size when more exist', async () => {
      const repository = await opened();
      await repository.importConversations(
        Array.from({ length: ListLimit.default + 5 }, (_, index) => ({ conversation: conversation(`c${String(index).padStart(4, '0')}`, ALICE, T0 + index), messages: [] })),
      );
      const page = await repository.listConversations(ALICE);
      assert.equal(page.length, ListLimit.default);
      assert.equal(page[0]?.id, `c${String(ListLimit.default + 4).padStart(4, '0')}`);
      assert.equal(await repository.countConversations(ALICE), ListLimit.default + 5);
    });

    test('countConversations counts that owner’s conversations only', async () => {
      const repository = await opened();
      assert.equal(await repository.countConversations(ALICE), 0);
      await repository.createConversation(conversation('c1', ALICE, T0));
      await repository.createConversation(conversation('c2', ALICE, T0));
      await repository.createConversation(conversation('c3', BOB, T0));
      assert.equal(await repository.countConversations(ALICE), 2);
      assert.equal(await repository.countConversations(BOB), 1);
      await repository.deleteConversation(ALICE, 'c1');
      assert.equal(await repository.countConversations(ALICE), 1);
    });

    test('ids are unique across the store: a conversation or message id in use is refused, whoever owns it', async () => {
      const repository = await withOneExchange();
      await assert.rejects(repository.createConversation(conversation('c1', BOB, T0 + 5, 'taken')));
      await repository.createConversation(conversation('c2', ALICE, T0 + 5));
      await assert.rejects(repository.appendMessage(ALICE, userMessage('m1', 'c2', T0 + 6)));
      assert.equal((await repository.getConversation(ALICE, 'c1'))?.title, 'title of c1');
      assert.deepEqual(await repository.listMessages(ALICE, 'c2'), []);
      assert.equal((await repository.getConversation(ALICE, 'c2'))?.updatedAt, T0 + 5, 'a refused append does not touch updatedAt');
    });

    test('importConversations stores whole conversations in order, and nothing when one entry is bad', async () => {
      const repository = await opened();
      await repository.importConversations([
        { conversation: { ...conversation('c1', ALICE, T0), updatedAt: T0 + 50 }, messages: [userMessage('m1', 'c1', T0 + 1), reply('m2', 'c1', T0 + 2, MessageOutcome.done)] },
        { conversation: conversation('c2', BOB, T0), messages: [] },
      ]);
      assert.equal((await repository.getConversation(ALICE, 'c1'))?.updatedAt, T0 + 50, 'updatedAt is kept as given');
      assert.deepEqual((await repository.listMessages(ALICE, 'c1')).map((message) => message.id), ['m1', 'm2']);
      await repository.appendMessage(ALICE, userMessage('m3', 'c1', T0 + 60));
      assert.deepEqual((await repository.listMessages(ALICE, 'c1')).map((message) => message.id), ['m1', 'm2', 'm3']);

      await assert.rejects(repository.importConversations([
        { conversation: conversation('c3', ALICE, T0), messages: [userMessage('m4', 'c3', T0)] },
        { conversation: conversation('c4', ALICE, T0), messages: [userMessage('m5', 'c_elsewhere', T0)] },
      ]));
      await assert.rejects(repository.importConversations([
        { conversation: conversation('c5', ALICE, T0), messages: [userMessage('m6', 'c5', T0)] },
        { conversation: conversation('c1', ALICE, T0), messages: [] },
      ]));
      assert.deepEqual((await repository.listConversations(ALICE)).map((summary) => summary.id), ['c1'], 'a refused import stores nothing');
      assert.equal(await repository.updateMessage(ALICE, 'm4', { text: 'x' }), false);
    });

    test('long and unusual text round-trips unchanged', async () => {
      const repository = await opened();
      await repository.createConversation(conversation('c1', ALICE, T0, ''));
      const texts = ['', '\u0000 nul and \ud83e\udd8a fox', 'x'.repeat(200_000), 'ﷺ ‮ right-to-left\r\n'];
      for (const [index, text] of texts.entries()) await repository.appendMessage(ALICE, userMessage(`m${index}`, 'c1', T0 + index, text));
      assert.deepEqual((await repository.listMessages(ALICE, 'c1')).map((message) => message.text), texts);
      assert.equal((await repository.getConversation(ALICE, 'c1'))?.title, '');
    });
  });
}

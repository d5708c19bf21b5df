import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ConversationListResponse, ConversationResponse } from '../../shared/protocol.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { loadTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';

/** Words no model reply contains, so finding them in a file means the message is stored in the clear. */
const SECRET = 'zebra-quartz-lighthouse-917';

async function api(server: TestServer, token: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: string; headers: Headers }> {
  const response = await fetch(`${server.baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: await response.text(), headers: response.headers };
}

for (const transport of TRANSPORTS) {
  describe(`history over ${transport}`, () => {
    let engine: LlamaEngine;
    before(async () => {
      engine = await loadTinyEngine({ slots: 2, contextSize: 2048 });
    });
    after(async () => {
      await engine.dispose();
    });

    test('after a restart a conversation is still there, and the next reply is prompted with its earlier turns', async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'parley-history-'));
      try {
        let server = await startTestServer(transport, engine, { maxTokens: 16 }, { dataDir });
        const token = await server.token('keeper');
        let client = await server.connect(token);
        const first = client.send(`remember ${SECRET}`);
        const accepted = await client.waitForType('accepted', first);
        const firstDone = await client.terminal(first);
        assert.equal(firstDone.type, 'done');
        const firstReply = client.replyText(first);
        await server.stop();

        server = await startTestServer(transport, engine, { maxTokens: 16 }, { dataDir });
        client = await server.connect(token);
        client.sendFrame({ type: 'get_conversation', conversationId: accepted.conversationId });
        const opened = await client.waitForType('conversation');
        assert.deepEqual(opened.turns, [
          { role: 'user', text: `remember ${SECRET}` },
          { role: 'assistant', text: firstReply },
        ]);
        const fresh = client.send('and now?');
        const freshDone = await client.terminal(fresh);
        const next = client.send('and now?', accepted.conversationId);
        const nextDone = await client.terminal(next);
        assert.ok(freshDone.type === 'done' && nextDone.type === 'done');
        assert.ok(
          nextDone.usage.promptTokens > freshDone.usage.promptTokens + 10,
          `the continued prompt (${nextDone.usage.promptTokens} tokens) holds the earlier exchange; a fresh one has ${freshDone.usage.promptTokens}`,
        );
        await server.stop();
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    });

    test('the stored history is encrypted at rest: no file in the data dir holds a message in the clear', async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'parley-history-'));
      try {
        const server = await startTestServer(transport, engine, { maxTokens: 8 }, { dataDir });
        const client = await server.client('private');
        await client.terminal(client.send(`my secret is ${SECRET}`));
        await server.stop();
        const files = await readdir(dataDir);
        assert.ok(files.includes('history.sqlite') && files.includes('history.key'), `history files: ${files.join(', ')}`);
        for (const file of files) {
          const bytes = await readFile(join(dataDir, file));
          assert.equal(bytes.includes(SECRET), false, `${file} holds the message in the clear`);
        }
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    });

    test('with --history off nothing survives a restart, and nothing is written', async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'parley-history-'));
      try {
        let server = await startTestServer(transport, engine, { maxTokens: 8, history: 'off' }, { dataDir });
        const token = await server.token('forgetful');
        let client = await server.connect(token);
        await client.terminal(client.send('hello'));
        await server.stop();
        assert.equal((await readdir(dataDir)).some((file) => file.startsWith('history')), false);
        server = await startTestServer(transport, engine, { maxTokens: 8, history: 'off' }, { dataDir });
        client = await server.connect(token);
        client.sendFrame({ type: 'list_conversations' });
        assert.deepEqual((await client.waitForType('conversations')).items, []);
        await server.stop();
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    });

    test('the HTTP API lists, opens, renames, exports and deletes the owner\'s conversations, and no one else\'s', async () => {
      const server = await startTestServer(transport, engine, { maxTokens: 8 });
      try {
        const owner = await server.token('owner');
        const stranger = await server.token('stranger');
        const client = await server.connect(owner);
        const ids: string[] = [];
        for (const text of ['first conversation', 'second conversation']) {
          const id = client.send(text);
          ids.push((await client.waitForType('accepted', id)).conversationId);
          await client.terminal(id);
        }
        const [first, second] = ids as [string, string];

        assert.equal((await api(server, 'not-a-token', 'GET', '/api/conversations')).status, 401);
        const listed = JSON.parse((await api(server, owner, 'GET', '/api/conversations')).body) as ConversationListResponse;
        assert.deepEqual(listed.items.map((item) => [item.id, item.title, item.messages]), [[second, 'second conversation', 2], [first, 'first conversation', 2]]);
        assert.deepEqual(JSON.parse((await api(server, stranger, 'GET', '/api/conversations')).body), { items: [] });

        const opened = JSON.parse((await api(server, owner, 'GET', `/api/conversations/${first}`)).body) as ConversationResponse;
        assert.deepEqual(opened.messages.map((message) => [message.role, message.outcome]), [['user', undefined], ['assistant', 'done']]);
        assert.equal(opened.messages[0]?.text, 'first conversation');
        for (const [method, body] of [['GET', undefined], ['PATCH', { title: 'mine' }], ['DELETE', undefined]] as const) {
          const refused = await api(server, stranger, method, `/api/conversations/${first}`, body);
          assert.equal(refused.status, 404, `${method} of another user's conversation`);
          assert.equal((JSON.parse(refused.body) as { code: string }).code, 'conversation_not_found');
        }

        const renamed = await api(server, owner, 'PATCH', `/api/conversations/${first}`, { title: 'Renamed' });
        assert.equal(renamed.status, 200);
        assert.equal((await api(server, owner, 'PATCH', `/api/conversations/${first}`, { title: '' })).status, 400);

        const markdown = await api(server, owner, 'GET', `/api/conversations/${first}/export?format=markdown`);
        assert.equal(markdown.status, 200);
        assert.match(markdown.headers.get('content-type') ?? '', /text\/markdown/);
        assert.match(markdown.headers.get('content-disposition') ?? '', /^attachment; filename="parley-c_[A-Za-z0-9_-]+\.md"$/);
        assert.match(markdown.body, /^# Renamed\n/);
        assert.match(markdown.body, /## You\n\nfirst conversation\n/);
        const all = JSON.parse((await api(server, owner, 'GET', '/api/conversations/export?format=json')).body) as { conversations: Array<{ id: string; messages: unknown[] }> };
        assert.deepEqual(all.conversations.map((conversation) => [conversation.id, conversation.messages.length]), [[second, 2], [first, 2]]);
        assert.equal((await api(server, owner, 'GET', '/api/conversations/export?format=pdf')).status, 400);

        assert.equal((await api(server, owner, 'DELETE', `/api/conversations/${first}`)).status, 204);
        assert.equal((await api(server, owner, 'GET', `/api/conversations/${first}`)).status, 404);
        client.sendFrame({ type: 'get_conversation', conversationId: first });
        const gone = await client.waitFor((frame) => frame.type === 'error');
        assert.equal(gone.type === 'error' && gone.code, 'conversation_not_found');

        const deleted = await api(server, owner, 'DELETE', '/api/conversations');
        assert.deepEqual(JSON.parse(deleted.body), { deleted: 1 });
        assert.deepEqual(JSON.parse((await api(server, owner, 'GET', '/api/conversations')).body), { items: [] });
      } finally {
        await server.stop();
      }
    });
  });
}

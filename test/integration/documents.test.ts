import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { readdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { ErrorCode } from '../../shared/errorCodes.js';
import type { ConversationResponse, DocumentResponse } from '../../shared/protocol.js';
import { chunkText } from '../../server/documents/chunkText.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { ensureModel } from '../../models/ensureModel.js';
import { generatedLog, minimalPdf, PNG_BYTES } from '../helpers/minimalPdf.js';
import { loadTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import type { TestClient } from '../helpers/TestClient.js';

interface Answer {
  readonly status: number;
  readonly body: string;
}

async function upload(server: TestServer, token: string, name: string, bytes: Buffer | string): Promise<Answer> {
  const response = await fetch(`${server.baseUrl}/api/documents?name=${encodeURIComponent(name)}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
    body: new Uint8Array(typeof bytes === 'string' ? Buffer.from(bytes) : bytes),
  });
  return { status: response.status, body: await response.text() };
}

async function uploaded(server: TestServer, token: string, name: string, bytes: Buffer | string): Promise<DocumentResponse['document']> {
  const answer = await upload(server, token, name, bytes);
  assert.equal(answer.status, 201, answer.body);
  return (JSON.parse(answer.body) as DocumentResponse).document;
}

async function api(server: TestServer, token: string, method: string, path: string): Promise<Answer> {
  const response = await fetch(`${server.baseUrl}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
  return { status: response.status, body: await response.text() };
}

function codeOf(answer: Answer): string {
  return (JSON.parse(answer.body) as { code: string }).code;
}

/** A send with documents; resolves with its request id. */
function sendWith(client: TestClient, text: string, documents: string[], conversationId?: string): string {
  const id = client.nextId();
  client.sendFrame({ type: 'send', id, text, documents, ...(conversationId === undefined ? {} : { conversationId }) });
  return id;
}

/**
 * Sends a body announced as `announced` bytes, in 16 KiB pieces, until the response comes: an
 * upload the server must refuse while it arrives (it would never end otherwise).
 */
function endlessUpload(server: TestServer, token: string, announced: number): Promise<{ status: number; body: string; written: number }> {
  return new Promise((resolve, reject) => {
    let written = 0;
    let answered = false;
    const url = new URL(`${server.baseUrl}/api/documents?name=huge.log`);
    const req = httpRequest(
      { host: url.hostname, port: url.port, path: `${url.pathname}${url.search}`, method: 'POST', agent: false, headers: { authorization: `Bearer ${token}`, 'content-length': String(announced) } },
      (res) => {
        answered = true;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, written }));
        res.on('error', reject);
      },
    );
    // Once the server answered and closed, writes fail: that is the point.
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    const piece = Buffer.alloc(16 * 1024, 0x61);
    const pump = () => {
      while (!answered && written + piece.length <= announced) {
        written += piece.length;
        if (!req.write(piece)) {
          req.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
}

for (const transport of TRANSPORTS) {
  describe(`documents over ${transport}`, () => {
    let engine: LlamaEngine;
    before(async () => {
      engine = await loadTinyEngine({ slots: 2, contextSize: 4096 });
    });
    after(async () => {
      await engine.dispose();
    });

    test('a text upload answers 201 with its metadata (name sanitised); GET shows it, DELETE removes it', async () => {
      const server = await startTestServer(transport, engine);
      try {
        const token = await server.token('alice');
        const document = await uploaded(server, token, '../../etc/\u202Enotes.md', '# Notes\nhello\n');
        assert.equal(document.name, 'notes.md');
        assert.equal(document.kind, 'text');
        assert.equal(document.size, 14);
        assert.equal(document.chars, 14);
        assert.match(document.id, /^d_[A-Za-z0-9_-]+$/);
        assert.ok(document.createdAt > 0);
        const got = await api(server, token, 'GET', `/api/documents/${document.id}`);
        assert.equal(got.status, 200);
        assert.deepEqual((JSON.parse(got.body) as DocumentResponse).document, document);
        assert.equal((await api(server, token, 'DELETE', `/api/documents/${document.id}`)).status, 204);
        assert.equal((await api(server, token, 'GET', `/api/documents/${document.id}`)).status, 404);
        assert.equal((await upload(server, '', 'x.txt', 'x')).status, 401);
      } finally {
        await server.stop();
      }
    });

    test('kinds are decided by content: PNG bytes named notes.txt are refused (415 document_unsupported); a PDF is read', async () => {
      const server = await startTestServer(transport, engine);
      try {
        const token = await server.token('alice');
        const refused = await upload(server, token, 'notes.txt', PNG_BYTES);
        assert.equal(refused.status, 415);
        assert.equal(codeOf(refused), ErrorCode.documentUnsupported);
        assert.match(refused.body, /PNG/);
        const empty = await upload(server, token, 'empty.txt', '');
        assert.equal(empty.status, 415, 'an empty body is answered too');
        assert.equal(codeOf(empty), ErrorCode.documentUnsupported);
        const pdf = await uploaded(server, token, 'paper.pdf', minimalPdf('Hello zebracorn world'));
        assert.equal(pdf.kind, 'pdf');
        assert.equal(pdf.chars, 'Hello zebracorn world'.length);
      } finally {
        await server.stop();
      }
    });

    test('an oversized upload is cut off while it arrives: 413 document_too_large before the body ends', async () => {
      const server = await startTestServer(transport, engine, { maxDocumentBytes: 64 * 1024 });
      try {
        const token = await server.token('alice');
        const announced = 64 * 1024 * 1024;
        const answer = await endlessUpload(server, token, announced);
        assert.equal(answer.status, 413);
        assert.equal(codeOf(answer), ErrorCode.documentTooLarge);
        assert.ok(answer.written < announced, `answered after ${answer.written} of ${announced} bytes`);
        // Just over the limit, sent whole: the same answer.
        const over = await upload(server, token, 'big.txt', Buffer.alloc(64 * 1024 + 1, 0x61));
        assert.equal(over.status, 413);
        assert.equal(codeOf(over), ErrorCode.documentTooLarge);
        assert.equal((await upload(server, token, 'fits.txt', Buffer.alloc(64 * 1024, 0x61))).status, 201);
      } finally {
        await server.stop();
      }
    });

    test('limits: characters, storage, per message and per conversation, each with its code and nothing half-stored', async () => {
      const server = await startTestServer(transport, engine, { maxDocumentChars: 2000, maxDocumentStorageBytes: 5000, maxDocumentsPerMessage: 2, maxDocumentsPerConversation: 3, maxTokens: 4 });
      try {
        const token = await server.token('alice');
        const long = await upload(server, token, 'long.txt', 'x'.repeat(2001));
        assert.equal(long.status, 413);
        assert.equal(codeOf(long), ErrorCode.documentTooLong);
        const ids: string[] = [];
        for (let index = 0; index < 4; index += 1) ids.push((await uploaded(server, token, `n${index}.txt`, `note ${index} `.padEnd(1000, '.'))).id);
        const full = await upload(server, token, 'more.txt', 'y'.repeat(1001));
        assert.equal(full.status, 429);
        assert.equal(codeOf(full), ErrorCode.documentLimit);

        const client = await server.connect(token);
        const tooMany = sendWith(client, 'three at once', [ids[0] ?? '', ids[1] ?? '', ids[2] ?? '']);
        const refusedMany = await client.terminal(tooMany);
        assert.ok(refusedMany.type === 'error' && refusedMany.code === ErrorCode.documentLimit, JSON.stringify(refusedMany));
        const first = sendWith(client, 'two', [ids[0] ?? '', ids[1] ?? '']);
        const accepted = await client.waitForType('accepted', first);
        assert.equal((await client.terminal(first)).type, 'done');
        const second = sendWith(client, 'one more', [ids[2] ?? ''], accepted.conversationId);
        assert.equal((await client.terminal(second)).type, 'done');
        const fourth = sendWith(client, 'past the cap', [ids[3] ?? ''], accepted.conversationId);
        const refusedFourth = await client.terminal(fourth);
        assert.ok(refusedFourth.type === 'error' && refusedFourth.code === ErrorCode.documentLimit, JSON.stringify(refusedFourth));
        const stillUnsent = JSON.parse((await api(server, token, 'GET', `/api/documents/${ids[3] ?? ''}`)).body) as DocumentResponse;
        assert.equal(stillUnsent.document.conversationId, undefined, 'a refused attachment leaves the upload unsent');
      } finally {
        await server.stop();
      }
    });

    test("another user cannot reach a user's documents: 404 on their ids, and their ids in send are refused", async () => {
      const server = await startTestServer(transport, engine, { maxTokens: 4 });
      try {
        const alice = await server.token('alice');
        const mallory = await server.token('mallory');
        const document = await uploaded(server, alice, 'private.txt', 'the launch code is 0000');
        for (const method of ['GET', 'DELETE']) {
          const answer = await api(server, mallory, method, `/api/documents/${document.id}`);
          assert.equal(answer.status, 404);
          assert.equal(codeOf(answer), ErrorCode.documentNotFound);
          assert.deepEqual(JSON.parse(answer.body), JSON.parse((await api(server, mallory, method, '/api/documents/d_unknown')).body), 'indistinguishable from an unknown id');
        }
        const client = await server.connect(mallory);
        const id = sendWith(client, 'what is the code?', [document.id]);
        const refused = await client.terminal(id);
        assert.ok(refused.type === 'error' && refused.code === ErrorCode.documentNotFound, JSON.stringify(refused));
        assert.equal((await api(server, alice, 'GET', `/api/documents/${document.id}`)).status, 200, 'still there for its owner, unsent');
      } finally {
        await server.stop();
      }
    });

    test('a large document is answered by retrieval: the chunk holding the asked-for word is a source of the reply, after reload too', async () => {
      const server = await startTestServer(transport, engine, { maxTokens: 4 });
      try {
        const token = await server.token('alice');
        const text = generatedLog(1500, { line: 1234, word: 'zebracorn' });
        const holding = chunkText(text).findIndex((chunk) => chunk.includes('zebracorn'));
        const document = await uploaded(server, token, 'server.log', text);
        const client = await server.connect(token);
        const id = sendWith(client, 'What does the log say about zebracorn?', [document.id]);
        const accepted = await client.waitForType('accepted', id);
        const done = await client.terminal(id);
        assert.ok(done.type === 'done', JSON.stringify(done));
        assert.ok(done.sources !== undefined && done.sources.length > 0);
        assert.ok(done.sources.length < chunkText(text).length, 'a part of the document, not all of it');
        assert.ok(
          done.sources.some((source) => source.documentId === document.id && source.chunk === holding && source.name === 'server.log'),
          `chunk ${holding} among ${JSON.stringify(done.sources)}`,
        );
        // The page after a reload: the conversation API has the attachment and the sources.
        const stored = JSON.parse((await api(server, token, 'GET', `/api/conversations/${accepted.conversationId}`)).body) as ConversationResponse;
        const [user, reply] = stored.messages;
        assert.deepEqual(user?.documents, [{ id: document.id, name: 'server.log', size: document.size, kind: 'text' }]);
        assert.deepEqual(reply?.sources, done.sources);
        assert.equal(user?.text, 'What does the log say about zebracorn?', 'the stored message is the user\'s own text');
        // A later message in the conversation retrieves again, without naming the document.
        const later = client.send('and the zebracorn again?', accepted.conversationId);
        const laterDone = await client.terminal(later);
        assert.ok(laterDone.type === 'done' && laterDone.sources?.some((source) => source.chunk === holding));
      } finally {
        await server.stop();
      }
    });

    test('with --embedding-model, chunks get vectors in the background (stored encrypted), and retrieval fuses them with the word match', async () => {
      const tiny = await ensureModel('tiny');
      // The tiny model stands in for an embedding model: its vectors mean little, which is the point:
      // the chunk the words match must still be found once the rankings are fused.
      const server = await startTestServer(transport, engine, { maxTokens: 4, embeddingModel: tiny.path, llamaBuild: 'prebuilt' });
      try {
        const token = await server.token('alice');
        const text = generatedLog(600, { line: 333, word: 'zebracorn' });
        const chunks = chunkText(text);
        const holding = chunks.findIndex((chunk) => chunk.includes('zebracorn'));
        const document = await uploaded(server, token, 'server.log', text);
        const client = await server.connect(token);
        const userId = (await client.waitForType('ready')).user.id;
        const documents = server.started.server.chat.documents;
        assert.ok(documents);
        await documents.embeddingSettled();
        const vectors = await documents.repository.readEmbeddings(userId, document.id, basename(tiny.path));
        assert.equal(vectors.length, chunks.length);
        assert.ok(vectors.every((vector) => vector instanceof Float32Array && vector.length > 0), 'every chunk has a vector');
        const id = sendWith(client, 'What does the log say about zebracorn?', [document.id]);
        const done = await client.terminal(id);
        assert.ok(done.type === 'done', JSON.stringify(done));
        assert.ok(done.sources?.some((source) => source.chunk === holding), `chunk ${holding} among ${JSON.stringify(done.sources)}`);
      } finally {
        await server.stop();
      }
    });

    test('a small document goes into the prompt whole: every chunk is a source, and the prompt grows by it', async () => {
      const server = await startTestServer(transport, engine, { maxTokens: 4 });
      try {
        const token = await server.token('alice');
        const pdf = await uploaded(server, token, 'paper.pdf', minimalPdf('Hello zebracorn world'));
        const client = await server.connect(token);
        const plain = client.send('Summarise the paper.');
        const plainDone = await client.terminal(plain);
        const id = sendWith(client, 'Summarise the paper.', [pdf.id]);
        const done = await client.terminal(id);
        assert.ok(done.type === 'done' && plainDone.type === 'done');
        assert.deepEqual(done.sources, [{ documentId: pdf.id, name: 'paper.pdf', chunk: 0 }]);
        assert.ok(done.usage.promptTokens > plainDone.usage.promptTokens + 20, `${done.usage.promptTokens} vs ${plainDone.usage.promptTokens} prompt tokens`);
        assert.equal(plainDone.sources, undefined, 'no sources without documents');
      } finally {
        await server.stop();
      }
    });

    test('deleting the conversation deletes its documents and chunks; delete-all deletes unsent ones too; nothing is stored in the clear', async () => {
      const server = await startTestServer(transport, engine, { maxTokens: 4 });
      const dataDir = server.dataDir;
      let stopped = false;
      try {
        const token = await server.token('alice');
        const sent = await uploaded(server, token, 'sent.txt', 'the quasar-secret-4417 lives here\n'.repeat(50));
        const client = await server.connect(token);
        const id = sendWith(client, 'where is the quasar?', [sent.id]);
        const accepted = await client.waitForType('accepted', id);
        assert.equal((await client.terminal(id)).type, 'done');
        for (const file of await readdir(dataDir)) {
          const bytes = await readFile(join(dataDir, file)).catch(() => Buffer.alloc(0));
          assert.equal(bytes.includes('quasar-secret-4417'), false, `${file} holds document text in the clear`);
        }
        assert.equal((await api(server, token, 'DELETE', `/api/conversations/${accepted.conversationId}`)).status, 204);
        assert.equal((await api(server, token, 'GET', `/api/documents/${sent.id}`)).status, 404);
        const unsent = await uploaded(server, token, 'unsent.txt', 'not sent');
        assert.equal((await api(server, token, 'DELETE', '/api/conversations')).status, 200);
        assert.equal((await api(server, token, 'GET', `/api/documents/${unsent.id}`)).status, 404);
        // Look in the file itself: no document and no chunk row is left.
        const db = new Database(join(dataDir, 'history.sqlite'), { readonly: true });
        try {
          assert.equal((db.prepare('SELECT COUNT(*) AS n FROM documents').get() as { n: number }).n, 0);
          assert.equal((db.prepare('SELECT COUNT(*) AS n FROM document_chunks').get() as { n: number }).n, 0);
        } finally {
          db.close();
        }
        await server.stop();
        stopped = true;
      } finally {
        if (!stopped) await server.stop();
      }
    });
  });
}

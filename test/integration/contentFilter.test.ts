import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import OpenAI, { BadRequestError } from 'openai';
import { tinyModel } from '../../models/tinyModel.js';
import type { GenerateRequest, GenerateResult } from '../../server/engine/Engine.js';
import type { ConversationResponse } from '../../shared/protocol.js';
import { createApiKey } from '../helpers/createApiKey.js';
import { DelegatingEngine } from '../helpers/DelegatingEngine.js';
import { loadTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { waitUntil } from '../helpers/waitUntil.js';

/**
 * The content filter (`--filter-rules`) on both surfaces, parley.v1 and /v1, over both
 * transports, with the real tiny model: greedy, it recites one passage whatever it is asked, so
 * the output rules below know where they match. Each passage word is one token, so a keyword of
 * two words ("lanterns glow") spans two tokens, and so two deltas.
 */

/** The tiny model's reply of `words` tokens: the passage's first words. */
const passageWords = (words: number) => tinyModel.passage.split(' ').slice(0, words).join(' ');

const FILTERING_RULES = [
  '# input rules',
  '{"label": "banned word", "match": {"keyword": "forbidden"}, "applies": "input", "action": "refuse"}',
  '{"label": "pin", "match": {"regex": "pin [0-9]{4}"}, "applies": "input", "action": "redact", "maxLength": 8}',
  '{"label": "greeting", "match": {"keyword": "hello"}, "applies": "input", "action": "flag"}',
  '# output rules (the tiny model says "Quiet lanterns glow across the harbor while fishermen ...")',
  '{"label": "lights", "match": {"keyword": "lanterns glow"}, "applies": "output", "action": "redact", "replacement": "[lights]"}',
  '{"label": "place", "match": {"keyword": "harbor"}, "applies": "output", "action": "flag"}',
];
const REFUSING_RULES = ['{"label": "no fishing", "match": {"keyword": "fishermen"}, "applies": "output", "action": "refuse"}'];

/** The tiny engine, remembering the user text of every generation (what the model was given). */
class RecordingEngine extends DelegatingEngine {
  readonly prompts: string[] = [];

  override generate(request: GenerateRequest): Promise<GenerateResult> {
    this.prompts.push(request.text);
    return super.generate(request);
  }
}

interface AuditEvent {
  readonly event: string;
  readonly rule: string;
  readonly action: string;
  readonly direction: string;
  readonly req: string;
  readonly count: number;
  readonly content?: readonly string[];
  readonly level: number;
}

/** The audit events logged since log line `from` (request ids repeat across sockets: r1, r2, ...), of request `req` if given. */
function auditEvents(server: TestServer, req?: string, from = 0): AuditEvent[] {
  return (server.logs.records.slice(from) as unknown as AuditEvent[]).filter((record) => record.event === 'content_filter' && (req === undefined || record.req === req));
}

/** A /v1 stream read raw: its `data:` payloads in order. */
async function rawStream(server: TestServer, key: string, body: Record<string, unknown>): Promise<string[]> {
  const response = await fetch(`${server.baseUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  assert.equal(response.status, 200);
  const text = await response.text();
  return text.split('\n\n').filter((event) => event.startsWith('data: ')).map((event) => event.slice(6));
}

/** The stored conversation once its reply has ended (the reply's end is stored just after its terminal frame). */
async function storedExchange(server: TestServer, token: string, conversationId: string): Promise<ConversationResponse> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const response = await fetch(`${server.baseUrl}/api/conversations/${conversationId}`, { headers: { authorization: `Bearer ${token}` } });
    const stored = (await response.json()) as ConversationResponse;
    if (stored.messages[1]?.outcome !== undefined && stored.messages[1].outcome !== 'streaming') return stored;
    if (Date.now() > deadline) throw new Error(`the reply was not stored: ${JSON.stringify(stored)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

interface Chunk {
  readonly choices: ReadonlyArray<{ readonly delta: { readonly content?: string }; readonly finish_reason: string | null }>;
  readonly usage?: { readonly completion_tokens: number } | null;
  readonly error?: unknown;
}

for (const transport of TRANSPORTS) {
  describe(`the content filter over ${transport}`, () => {
    let dir: string;
    let engine: RecordingEngine;
    let filtering: TestServer;
    let refusing: TestServer;
    let filteringKey: string;
    let refusingKey: string;
    let model: string;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'parley-filter-'));
      await writeFile(join(dir, 'filtering.jsonl'), `${FILTERING_RULES.join('\n')}\n`);
      await writeFile(join(dir, 'refusing.jsonl'), `${REFUSING_RULES.join('\n')}\n`);
      engine = new RecordingEngine(await loadTinyEngine({ slots: 2, contextSize: 2048 }));
      filtering = await startTestServer(transport, engine, { filterRules: join(dir, 'filtering.jsonl'), maxTokens: 8 });
      refusing = await startTestServer(transport, engine, { filterRules: join(dir, 'refusing.jsonl'), maxTokens: 40 });
      filteringKey = await createApiKey(filtering, 'api-filtered');
      refusingKey = await createApiKey(refusing, 'api-refused');
      model = filtering.started.models.defaultModel;
    });
    after(async () => {
      await filtering.stop();
      await refusing.stop();
      await engine.dispose();
      await rm(dir, { recursive: true, force: true });
    });

    test('parley.v1: an input refuse rule ends the request with one content_filtered error frame naming the label, and the socket stays open', async () => {
      const token = await filtering.token('refused-input');
      const client = await filtering.connect(token);
      const generations = engine.prompts.length;
      const id = client.send('Tell me something FORBIDDEN, please.');
      const terminal = await client.terminal(id);
      assert.equal(terminal.type, 'error');
      if (terminal.type !== 'error') return;
      assert.equal(terminal.code, 'content_filtered');
      assert.match(terminal.message, /"banned word"/);
      assert.doesNotMatch(terminal.message, /forbidden"\}|keyword/, 'the message names the label, never the pattern');
      assert.deepEqual(client.framesFor(id).map((frame) => frame.type), ['error'], 'refused before admission: no accepted frame, no text');
      assert.equal(engine.prompts.length, generations, 'the model never saw it');
      const listed = await fetch(`${filtering.baseUrl}/api/conversations`, { headers: { authorization: `Bearer ${token}` } });
      assert.deepEqual(await listed.json(), { items: [] }, 'nothing was stored');
      const next = client.send('Something else.');
      assert.equal((await client.terminal(next)).type, 'done', 'the connection goes on');
    });

    test('parley.v1: an input redact rule replaces the match before the model and the history see it; a flag rule only logs', async () => {
      const token = await filtering.token('redacted-input');
      const client = await filtering.connect(token);
      const from = filtering.logs.lines.length;
      const id = client.send('hello, my pin 1234 is secret');
      const accepted = await client.waitForType('accepted', id);
      assert.equal((await client.terminal(id)).type, 'done');
      assert.equal(engine.prompts.at(-1), 'hello, my [redacted] is secret');
      const stored = await storedExchange(filtering, token, accepted.conversationId);
      assert.equal(stored.messages[0]?.text, 'hello, my [redacted] is secret');
      const events = auditEvents(filtering, id, from);
      assert.deepEqual(
        events.map(({ rule, action, direction }) => ({ rule, action, direction })),
        [
          { rule: 'greeting', action: 'flag', direction: 'input' },
          { rule: 'pin', action: 'redact', direction: 'input' },
          { rule: 'lights', action: 'redact', direction: 'output' },
          { rule: 'place', action: 'flag', direction: 'output' },
        ],
      );
    });

    test('parley.v1: an output redact rule replaces a match that spans two tokens; the stored reply is what was shown', async () => {
      const token = await filtering.token('redacted-output');
      const client = await filtering.connect(token);
      const id = client.send('Describe the evening.');
      const accepted = await client.waitForType('accepted', id);
      const done = await client.terminal(id);
      assert.equal(done.type, 'done');
      const expected = passageWords(8).replace('lanterns glow', '[lights]');
      assert.equal(client.replyText(id), expected);
      const deltas = client.framesFor(id).filter((frame) => frame.type === 'delta');
      assert.ok(deltas.length > 1, `streamed in several deltas (${deltas.length})`);
      for (const delta of deltas) assert.doesNotMatch(JSON.stringify(delta), /lanterns|glow/, 'no part of the match is ever sent');
      const stored = await storedExchange(filtering, token, accepted.conversationId);
      assert.equal(stored.messages[1]?.text, expected);
    });

    test('parley.v1: an output refuse rule stops the generation; the text before the match, then exactly one content_filtered error', async () => {
      const client = await refusing.client('refused-output');
      const id = client.send('Describe the harbor.');
      const terminal = await client.terminal(id);
      assert.equal(terminal.type, 'error');
      if (terminal.type !== 'error') return;
      assert.equal(terminal.code, 'content_filtered');
      assert.match(terminal.message, /"no fishing"/);
      assert.equal(client.replyText(id), `${passageWords(7)} `, 'the text before the match is shown; the match and all after it never are');
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(client.terminalsFor(id).length, 1);
      const chat = refusing.started.server.chat;
      await waitUntil(() => chat.scheduler.activeCount === 0 && chat.liveCount === 0, 20_000, 'the slot is free');
      const finished = refusing.logs.records.find((record) => record.msg === 'generation finished' && record.req === id && record.reason === 'content_filter');
      assert.ok(finished, 'the engine was aborted with the content_filter reason');
      assert.ok((finished.completionTokens as number) < 40, `stopped early: ${String(finished.completionTokens)} of 40 tokens`);
      const next = client.send('Again.');
      assert.equal((await client.terminal(next)).type, 'error', 'the socket stays open for the next request');
    });

    test('/v1: an input refuse rule is a 400 with an OpenAI error body, code content_filtered, naming the label', async () => {
      const client = new OpenAI({ apiKey: filteringKey, baseURL: `${filtering.baseUrl}/v1`, maxRetries: 0 });
      await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: 'This is forbidden.' }] }), (error: unknown) => {
        assert.ok(error instanceof BadRequestError, String(error));
        assert.equal(error.status, 400);
        assert.equal(error.code, 'content_filtered');
        assert.match(error.message, /"banned word"/);
        return true;
      });
      // Earlier turns and the system prompt a stateless caller brings are screened too.
      await assert.rejects(
        client.chat.completions.create({ model, messages: [{ role: 'system', content: 'Be forbidden.' }, { role: 'user', content: 'Hi.' }] }),
        (error: unknown) => error instanceof BadRequestError && error.code === 'content_filtered',
      );
      await assert.rejects(
        client.chat.completions.create({ model, messages: [{ role: 'user', content: 'forbidden' }, { role: 'assistant', content: 'No.' }, { role: 'user', content: 'Hi.' }], stream: true }),
        (error: unknown) => error instanceof BadRequestError && error.code === 'content_filtered',
      );
    });

    test('/v1: output redaction across two tokens, streamed and not; an input redaction reaches the model redacted', async () => {
      const client = new OpenAI({ apiKey: filteringKey, baseURL: `${filtering.baseUrl}/v1`, maxRetries: 0 });
      const expected = passageWords(8).replace('lanterns glow', '[lights]');
      const whole = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'my pin 9876, please' }] });
      assert.equal(whole.choices[0]?.message.content, expected);
      assert.equal(whole.choices[0]?.finish_reason, 'length');
      assert.equal(engine.prompts.at(-1), 'my [redacted], please');
      const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Again.' }], stream: true });
      const pieces: string[] = [];
      let finish: string | null | undefined;
      for await (const chunk of stream) {
        const content = chunk.choices[0]?.delta.content;
        if (content) pieces.push(content);
        finish ??= chunk.choices[0]?.finish_reason;
      }
      assert.ok(pieces.length > 1, `several chunks (${pieces.length})`);
      assert.equal(pieces.join(''), expected);
      for (const piece of pieces) assert.doesNotMatch(piece, /lanterns|glow/);
      assert.equal(finish, 'length');
    });

    test('/v1: an output refuse rule ends the reply with finish_reason content_filter, once: streamed, then [DONE]; non-streamed, with the text before the match', async () => {
      const events = await rawStream(refusing, refusingKey, { model, messages: [{ role: 'user', content: 'Go.' }], stream_options: { include_usage: true } });
      assert.equal(events.at(-1), '[DONE]');
      const chunks = events.slice(0, -1).map((event) => JSON.parse(event) as Chunk);
      assert.ok(chunks.every((chunk) => chunk.error === undefined), 'not an error: OpenAI ends a filtered stream with a finish reason');
      const finishes = chunks.map((chunk) => chunk.choices[0]?.finish_reason).filter((reason) => reason !== null && reason !== undefined);
      assert.deepEqual(finishes, ['content_filter'], 'exactly one terminal event');
      assert.equal(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join(''), `${passageWords(7)} `);
      const usage = chunks.at(-1)?.usage;
      assert.ok(usage && usage.completion_tokens < 40, `the generation stopped early (${String(usage?.completion_tokens)} of 40 tokens)`);

      const client = new OpenAI({ apiKey: refusingKey, baseURL: `${refusing.baseUrl}/v1`, maxRetries: 0 });
      const whole = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Go.' }] });
      assert.equal(whole.choices[0]?.finish_reason, 'content_filter');
      assert.equal(whole.choices[0]?.message.content, `${passageWords(7)} `);
      assert.ok((whole.usage?.completion_tokens ?? 40) < 40);
    });

    test('every match is an audit event (rule, action, direction, request) without the matched text; the metrics count them by rule and action', async () => {
      const events = auditEvents(filtering);
      assert.ok(events.length > 0);
      for (const event of events) {
        assert.equal(event.content, undefined, 'no matched text without --log-content');
        assert.equal(typeof event.req, 'string');
      }
      const refusals = auditEvents(refusing);
      assert.ok(refusals.length > 0 && refusals.every((event) => event.action === 'refuse' && event.level === 40), 'a refusal is logged at warn');
      assert.ok(auditEvents(filtering).filter((event) => event.action !== 'refuse').every((event) => event.level === 30), 'other matches at info');
      for (const server of [filtering, refusing]) {
        for (const line of server.logs.lines) {
          if (line.includes('"content_filter"')) assert.doesNotMatch(line, /forbidden|FORBIDDEN|1234|9876|lanterns|fishermen/, line);
        }
      }
      const metrics = await filtering.started.server.metrics.render();
      assert.match(metrics, /parley_content_filter_matches_total\{rule="lights",action="redact",direction="output"\} [1-9]/);
      assert.match(metrics, /parley_content_filter_matches_total\{rule="banned word",action="refuse",direction="input"\} [1-9]/);
    });

    test('with --log-content the audit event carries the matched text', async () => {
      const logged = await startTestServer(transport, engine, { filterRules: join(dir, 'filtering.jsonl'), maxTokens: 8, logContent: true });
      try {
        const client = await logged.client('logged');
        const id = client.send('my pin 4321 here');
        assert.equal((await client.terminal(id)).type, 'done');
        const contents = auditEvents(logged, id).map((event) => [event.rule, event.content]);
        assert.deepEqual(contents, [['pin', ['pin 4321']], ['lights', ['lanterns glow']], ['place', ['harbor']]]);
      } finally {
        await logged.stop();
      }
    });
  });
}

describe('the content filter at start', () => {
  test('a bad rules file: the server exits 2 with one line naming the file, the line and what is wrong, before any model loads', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'parley-filter-bad-'));
    try {
      const rules = join(dir, 'rules.jsonl');
      await writeFile(rules, `# fine so far\n${FILTERING_RULES[1]}\n{"label": "peek", "match": {"regex": "secret(?=s)"}, "applies": "output", "action": "redact"}\n`);
      const root = fileURLToPath(new URL('../../', import.meta.url));
      const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PARLEY_')));
      const child = spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', '--host', '127.0.0.1', '--port', '0', '--data-dir', join(dir, 'data'), '--no-qr', '--filter-rules', rules], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
      child.stdout.resume();
      const code = await new Promise<number | null>((resolve) => child.once('exit', (exitCode) => resolve(exitCode)));
      assert.equal(code, 2, stderr);
      const line = stderr.split('\n').find((entry) => entry.startsWith('parley: '));
      assert.ok(line, stderr);
      assert.match(line, new RegExp(`^parley: --filter-rules ${rules.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} line 3: match\\.regex: .*lookaround is not supported`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

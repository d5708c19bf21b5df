import assert from 'node:assert/strict';
import { chmod, copyFile, mkdir, mkdtemp, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getLlamaGpuTypes } from 'node-llama-cpp';
import { ensureModel } from '../../models/ensureModel.js';
import { HistoryCipher } from '../../server/history/HistoryCipher.js';
import { loadOrCreateHistoryKey } from '../../server/history/loadOrCreateHistoryKey.js';
import { SqliteConversationRepository } from '../../server/history/SqliteConversationRepository.js';
import type { ConversationResponse } from '../../shared/protocol.js';
import { EXIT_MS, killAllParleyProcesses, ParleyProcess, START_MS, type LogRecord } from '../helpers/ParleyProcess.js';
import { TRANSPORTS, TEST_INVITE } from '../helpers/startTestServer.js';
import { TestClient } from '../helpers/TestClient.js';

/**
 * The real `server/main.ts` as a child process: signals, exit codes and load failures are
 * properties of the process, which an in-process server cannot show. Every bound here is
 * generous (a loaded 2-core machine); none is a speed assertion.
 */

/** A serving Parley on 127.0.0.1 with the tiny model, its port read from the `listening on` log line. */
class ServingParley {
  private constructor(readonly process: ParleyProcess, readonly port: number, readonly dataDir: string) {}

  /** Its replies pass a gate (ParleyProcess.gate), open at first. */
  static async start(transport: string, extra: readonly string[], existingDataDir?: string): Promise<ServingParley> {
    const tiny = await ensureModel('tiny');
    const dataDir = existingDataDir ?? (await mkdtemp(join(tmpdir(), 'parley-process-')));
    if (existingDataDir === undefined) dataDirs.push(dataDir);
    const parley = ParleyProcess.spawn([
      '--host', '127.0.0.1', '--port', '0', '--model', tiny.path, '--threads', '1', '--slots', '2',
      '--temperature', '0', '--max-tokens', '200', '--data-dir', dataDir, '--invite', TEST_INVITE,
      '--no-qr', '--transport', transport, ...extra,
    ], { gated: true });
    const listening = await parley.waitForLog((record) => typeof record.msg === 'string' && record.msg.startsWith('listening on'), START_MS);
    assert.equal(typeof listening.port, 'number');
    return new ServingParley(parley, listening.port as number, dataDir);
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async token(name = 'tester'): Promise<string> {
    const response = await fetch(`${this.origin}/api/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: this.origin },
      body: JSON.stringify({ invite: TEST_INVITE, name }),
    });
    assert.equal(response.status, 200, 'token request');
    return ((await response.json()) as { token: string }).token;
  }

  connect(token: string): Promise<TestClient> {
    return TestClient.connect(`ws://127.0.0.1:${this.port}/ws`, token, undefined, { origin: this.origin });
  }

  async client(name?: string): Promise<TestClient> {
    const client = await this.connect(await this.token(name));
    await client.waitForType('ready');
    return client;
  }
}

const dataDirs: string[] = [];

/** The GPU backends node-llama-cpp finds drivers for here (file checks only); the GPU tests skip where they would be wrong. */
const gpusHere = await getLlamaGpuTypes('supported');

after(async () => {
  await killAllParleyProcesses();
  await Promise.all(dataDirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const isShuttingDown = (record: LogRecord) => typeof record.msg === 'string' && record.msg.startsWith('shutting down');

/** Every request id gets exactly one terminal frame, and nothing of that request follows it. */
function assertOneTerminalEach(client: TestClient, ids: readonly string[]): void {
  for (const id of ids) {
    const terminals = client.terminalsFor(id);
    assert.equal(terminals.length, 1, `${id}: ${terminals.length} terminal frames`);
    assert.equal(client.framesFor(id).at(-1), terminals[0], `${id}: frames after its terminal frame`);
  }
}

for (const transport of TRANSPORTS) {
  describe(`process shutdown over ${transport}`, () => {
    // Both signals start the same graceful stop; each transport run covers one.
    const signal = transport === 'uws' ? 'SIGTERM' : 'SIGINT';

    test(`${signal} mid-stream with a short drain: one terminal frame per request, close 1001, exit 0`, async () => {
      const parley = await ServingParley.start(transport, ['--shutdown-timeout-ms', '300']);
      const client = await parley.client();
      // The replies run until the drain ends them, however fast the model is.
      await parley.process.gate({ gate: 'hold', pieces: 0 });
      // Two fill the slots, the third waits in the queue: both kinds must be ended.
      const ids = [client.send('Tell me a long story.'), client.send('Tell me another one.'), client.send('And a third.')];
      await client.waitFor((frame) => frame.type === 'queued' && frame.id === ids[2]);

      parley.process.signal(signal);
      const closeCode = await client.waitClose(EXIT_MS);
      const exit = await parley.process.exit();

      assert.deepEqual(exit, { code: 0, signal: null });
      assert.equal(closeCode, 1001);
      assertOneTerminalEach(client, ids);
      for (const id of ids) {
        const terminal = client.terminalsFor(id)[0];
        assert.deepEqual({ type: terminal?.type, code: terminal?.type === 'error' ? terminal.code : undefined }, { type: 'error', code: 'shutting_down' }, id);
      }
      assert.ok(parley.process.logs.some(isShuttingDown), 'the shutdown is logged');
    });

    test('SIGTERM with a generous drain: replies in flight finish with done, new work is refused, exit 0', async () => {
      const parley = await ServingParley.start(transport, ['--shutdown-timeout-ms', '60000']);
      const client = await parley.client();
      const spareToken = await parley.token('latecomer');
      // In flight when the signal lands: held at the gate until the test opens it, during the drain.
      await parley.process.gate({ gate: 'hold', pieces: 0 });
      const ids = [client.send('Tell me a story.'), client.send('Tell me another one.')];
      await client.waitFor((frame) => frame.type === 'accepted' && frame.id === ids[0]);
      await client.waitFor((frame) => frame.type === 'accepted' && frame.id === ids[1]);
      const framesAtSignal = client.frames.length;

      // Twice at once, as Ctrl+C under npm delivers it: still one graceful stop, not a forced exit.
      parley.process.signal('SIGTERM');
      parley.process.signal('SIGTERM');
      // The server stops accepting work in the same event-loop turn that writes this line, so this send is refused.
      await parley.process.waitForLog(isShuttingDown, EXIT_MS);
      const late = client.send('Too late?');
      const lateTerminal = await client.terminal(late, EXIT_MS);
      assert.equal(lateTerminal.type, 'error');
      assert.equal(lateTerminal.type === 'error' && lateTerminal.code, 'shutting_down');
      await assert.rejects(parley.connect(spareToken), 'a new socket is refused while draining');
      assert.equal(client.terminalsFor(ids[0] as string).length + client.terminalsFor(ids[1] as string).length, 0, 'both replies were in flight');
      await parley.process.gate({ gate: 'open' });

      for (const id of ids) {
        const terminal = await client.terminal(id, 60_000);
        assert.equal(terminal.type, 'done', `${id} was cut: ${JSON.stringify(terminal)}`);
        assert.ok(client.frames.indexOf(terminal) >= framesAtSignal, `${id} finished before the signal; the test proved nothing`);
        assert.equal(terminal.type === 'done' && terminal.stopReason, 'max_tokens');
      }
      assert.equal(await client.waitClose(EXIT_MS), 1001);
      assert.deepEqual(await parley.process.exit(), { code: 0, signal: null });
      assertOneTerminalEach(client, [...ids, late]);
    });
  });
}

for (const transport of TRANSPORTS) {
  describe(`process: WebSocket upgrades over ${transport}`, () => {
    test('many concurrent upgrades: every socket gets ready and stays open, and nothing is printed on stderr per connection', async () => {
      const parley = await ServingParley.start(transport, [
        '--max-connections-per-user', '1000', '--max-connections-per-ip', '1000', '--upgrades-per-minute', '10000', '--frames-per-second', '100',
      ]);
      const token = await parley.token('crowd');
      const stderrAtStart = parley.process.stderr.length;
      // Three waves of 40 at once: the dead-socket bug of uWS's corked async upgrade
      // (uWebSockets #1928) closed a fresh socket right after `open`, after its first frame.
      for (let wave = 0; wave < 3; wave++) {
        const clients = await Promise.all(Array.from({ length: 40 }, () => parley.connect(token)));
        await Promise.all(clients.map((client) => client.waitForType('ready')));
        // Each socket still answers afterwards: a frame that is not JSON gets its error frame.
        for (const client of clients) client.sendRaw('not json');
        await Promise.all(clients.map((client) => client.waitFor((frame) => frame.type === 'error' && frame.code === 'bad_json')));
        for (const client of clients) client.close();
      }
      // uWS prints "Warning: uWS.HttpResponse writes must be made from within a corked callback"
      // for an upgrade written outside uWS's callback; the upgrade must stay inside it.
      assert.doesNotMatch(parley.process.stderr.slice(stderrAtStart), /corked|Warning/);
      parley.process.signal('SIGTERM');
      assert.deepEqual(await parley.process.exit(), { code: 0, signal: null });
    });
  });
}

describe('process: forced stop', () => {
  test('a second signal during the drain cancels the reply with its terminal frame and exits 143 (128 + SIGTERM)', async () => {
    const parley = await ServingParley.start('ws', ['--shutdown-timeout-ms', '120000']);
    const client = await parley.client();
    // The reply streams a little, then runs until the forced stop ends it.
    await parley.process.gate({ gate: 'hold', pieces: 2 });
    const id = client.send('Tell me a very long story.');
    await client.waitFor((frame) => frame.type === 'delta' && frame.id === id);

    parley.process.signal('SIGTERM');
    await parley.process.waitForLog(isShuttingDown, EXIT_MS);
    // Past the window in which a repeated signal counts as the same one.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.equal(client.terminalsFor(id).length, 0, 'the reply was still in flight at the second signal');
    parley.process.signal('SIGTERM');

    assert.deepEqual(await parley.process.exit(10_000), { code: 143, signal: null });
    assert.ok(parley.process.logs.some((record) => typeof record.msg === 'string' && record.msg.startsWith('second signal')), 'the forced exit is logged');
    // Even a forced stop ends the reply with its terminal frame before the socket closes.
    assertOneTerminalEach(client, [id]);
    const terminal = client.terminalsFor(id)[0];
    assert.equal(terminal?.type === 'error' && terminal.code, 'shutting_down');
    assert.equal(await client.waitClose(EXIT_MS), 1001);
  });
});

describe('process: a crash mid-reply', () => {
  test('a reply cut off by a crash is kept with the text stored so far, as interrupted, and the conversation goes on', async () => {
    const parley = await ServingParley.start('ws', []);
    const token = await parley.token('crasher');
    const client = await parley.connect(token);
    const userId = (await client.waitForType('ready')).user.id;
    // The reply streams a few pieces, then is held until the crash.
    await parley.process.gate({ gate: 'hold', pieces: 4 });
    const id = client.send('Tell me a story.');
    const { conversationId } = await client.waitForType('accepted', id);
    await client.waitFor((frame) => frame.type === 'delta' && frame.id === id);
    // The store is read beside the running server (SQLite allows it) until a checkpoint holds the text.
    const store = new SqliteConversationRepository({ directory: parley.dataDir, cipher: new HistoryCipher(await loadOrCreateHistoryKey({ dataDir: parley.dataDir })) });
    await store.open();
    let stored = '';
    for (const deadline = Date.now() + 30_000; stored.length === 0; ) {
      assert.ok(Date.now() < deadline, 'a checkpoint stored the reply while it streamed');
      stored = (await store.listMessages(userId, conversationId)).at(-1)?.text ?? '';
      if (stored.length === 0) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await store.close();
    parley.process.child.kill('SIGKILL');
    await parley.process.exit();
    assert.ok(client.replyText(id).startsWith(stored), 'what was stored is what had streamed');

    const again = await ServingParley.start('ws', [], parley.dataDir);
    const back = await again.connect(token);
    await back.waitForType('ready');
    back.sendFrame({ type: 'get_conversation', conversationId });
    const opened = await back.waitForType('conversation');
    assert.deepEqual(opened.turns.map((turn) => turn.role), ['user', 'assistant']);
    assert.equal(opened.turns[1]?.text, stored);
    const response = await fetch(`${again.origin}/api/conversations/${conversationId}`, { headers: { authorization: `Bearer ${token}`, origin: again.origin } });
    const { messages } = (await response.json()) as ConversationResponse;
    assert.equal(messages[1]?.outcome, 'interrupted');
    const next = back.send('Go on.', conversationId);
    assert.equal((await back.terminal(next)).type, 'done');
    again.process.signal('SIGTERM');
    await again.process.exit();
  });
});

describe('process: startup failures', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'parley-load-'));
    dataDirs.push(dir);
  });

  /** Starts Parley with `args` and expects a prompt exit with `code` and one `parley: …` line on stderr. */
  async function expectStartupFailure(args: readonly string[], code: number, stderr: RegExp): Promise<void> {
    const started = Date.now();
    const parley = ParleyProcess.spawn(['--host', '127.0.0.1', '--port', '0', '--threads', '1', '--data-dir', join(dir, 'data'), '--no-qr', ...args]);
    const exit = await parley.exit(EXIT_MS).catch((error: unknown) => {
      parley.child.kill('SIGKILL');
      throw error;
    });
    assert.deepEqual(exit, { code, signal: null }, `stderr: ${parley.stderr}`);
    assert.match(parley.stderr, stderr);
    const line = parley.stderr.split('\n').find((entry) => stderr.test(entry));
    assert.ok(line, `the reason fits on one line: ${parley.stderr}`);
    assert.ok(Date.now() - started < EXIT_MS);
  }

  test('a missing model file exits 3 and names the file', async () => {
    const missing = join(dir, 'no-such-model.gguf');
    await expectStartupFailure(['--model', missing], 3, new RegExp(`^parley: Cannot load model ${escape(missing)}: the file does not exist$`, 'm'));
  });

  test('a text file named .gguf exits 3', async () => {
    const text = join(dir, 'x.gguf');
    await writeFile(text, 'This is not a model, just some text in a file with the wrong extension.\n');
    await expectStartupFailure(['--model', text], 3, new RegExp(`^parley: Cannot load model ${escape(text)}: .*GGUF`, 'mi'));
  });

  test('a truncated GGUF exits 3 and says the file is cut short', async () => {
    const tiny = await ensureModel('tiny');
    const truncated = join(dir, 'truncated.gguf');
    await copyFile(tiny.path, truncated);
    await truncate(truncated, Math.floor((await stat(truncated)).size / 2));
    await expectStartupFailure(['--model', truncated], 3, new RegExp(`^parley: Cannot load model ${escape(truncated)}: .*(truncat|ends at byte|beyond the end of the)`, 'mi'));
  });

  test('an invalid flag exits 2', async () => {
    await expectStartupFailure(['--max-tokens', 'lots'], 2, /maxTokens|max-tokens/i);
  });

  test('--gpu cuda on a machine without CUDA exits 2 with one line naming what is missing', { skip: gpusHere.includes('cuda') && 'this machine has CUDA' }, async () => {
    await expectStartupFailure(['--gpu', 'cuda'], 2, /^parley: --gpu cuda was requested but this machine has no NVIDIA driver .*; use --gpu auto or --gpu off$/m);
  });

  test('--default-model naming no model found exits 2, listing the models there are', async () => {
    const tiny = await ensureModel('tiny');
    await expectStartupFailure(['--model', tiny.path, '--default-model', 'gpt-4o'], 2, /^parley: --default-model 'gpt-4o' is not among the models found \(parley-tiny\)$/m);
  });

  test('a data dir whose secrets other users can change exits 2 before anything loads, naming the file and the fix', async () => {
    const data = join(dir, 'shared-data');
    await mkdir(data, { recursive: true, mode: 0o700 });
    const invite = join(data, 'invite.txt');
    await writeFile(invite, 'a-pinned-invite-code', { mode: 0o600 });
    await chmod(invite, 0o666);
    await expectStartupFailure(['--data-dir', data], 2, new RegExp(`^parley: ${escape(invite)} can be changed by other users of this machine \\(mode 666\\); run: chmod 600 ${escape(invite)}$`, 'm'));
  });

  test('an unknown --gpu value exits 2 naming the choices', async () => {
    await expectStartupFailure(['--gpu', 'nvidia'], 2, /gpu: .*"auto"\|"metal"\|"cuda"\|"vulkan"\|"off"/);
  });
});

describe('process: the join banner', () => {
  test('the join link, which carries the invite, goes to stderr only; --no-banner leaves it out and says where the invite is', async () => {
    for (const banner of [true, false]) {
      const parley = await ServingParley.start('ws', banner ? [] : ['--no-banner']);
      // A served token request: the banner, written right after listening, is out by then.
      await parley.token();
      const { stderr } = parley.process;
      if (banner) assert.ok(stderr.includes(`#invite=${TEST_INVITE}`) || stderr.includes(TEST_INVITE), stderr);
      else {
        assert.ok(!stderr.includes(TEST_INVITE), 'no invite on stderr');
        assert.match(stderr, /The join link is not printed \(--no-banner\): the invite is the one --invite pins/);
      }
      assert.ok(!JSON.stringify(parley.process.logs).includes(TEST_INVITE), 'never in the log');
      parley.process.signal('SIGTERM');
      assert.deepEqual(await parley.process.exit(), { code: 0, signal: null });
    }
  });
});

describe('process: the GPU', () => {
  test('--gpu auto on a machine without a GPU starts, and logs that the model runs on the CPU because no GPU was found', { skip: gpusHere.some((type) => type !== false) && `this machine has a GPU backend (${gpusHere.join(', ')})` }, async () => {
    const tiny = await ensureModel('tiny');
    const dataDir = await mkdtemp(join(tmpdir(), 'parley-gpu-'));
    dataDirs.push(dataDir);
    const parley = ParleyProcess.spawn(['--host', '127.0.0.1', '--port', '0', '--model', tiny.path, '--threads', '1', '--data-dir', dataDir, '--no-qr', '--gpu', 'auto']);
    const llama = await parley.waitForLog((record) => typeof record.msg === 'string' && record.msg.startsWith('llama.cpp:'), START_MS);
    assert.match(String(llama.msg), /gpu: false, the model runs on the CPU \(no GPU found\)/);
    assert.equal(llama.gpu, false);
    assert.equal(llama.gpuLayers, 0);
    await parley.waitForLog((record) => typeof record.msg === 'string' && record.msg.startsWith('listening on'), START_MS);
    parley.signal('SIGTERM');
    assert.deepEqual(await parley.exit(), { code: 0, signal: null });
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

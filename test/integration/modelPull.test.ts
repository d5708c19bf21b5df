import assert from 'node:assert/strict';
import { access, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ensureModel } from '../../models/ensureModel.js';
import { ModelPullError, ModelPullErrorCode } from '../../models/ModelPullError.js';
import { pullModel } from '../../models/pullModel.js';
import { loadLlamaModel } from '../../server/engine/loadLlamaModel.js';

let dir: string;
let server: Server;
let baseUrl: string;
let tinyBytes: Buffer;
const requests: string[] = [];

/** Serves the tiny model the way a static file server does: HEAD, GET and single byte ranges. */
function serve(request: IncomingMessage, response: ServerResponse): void {
  requests.push(`${request.method} ${request.url} ${request.headers.range ?? ''}`.trim());
  const send = (status: number, headers: Record<string, string | number>, body: Buffer): void => {
    response.writeHead(status, headers);
    response.end(request.method === 'HEAD' ? undefined : body);
  };
  if (request.url === '/models/not-a-model.gguf') {
    send(200, { 'content-type': 'text/html', 'content-length': 21 }, Buffer.from('<html>surprise</html>'));
    return;
  }
  if (request.url !== '/models/parley-tiny.gguf') {
    send(404, { 'content-type': 'text/plain', 'content-length': 9 }, Buffer.from('not found'));
    return;
  }
  const range = /^bytes=(\d+)-(\d*)$/.exec(request.headers.range ?? '');
  if (range === null) {
    send(200, { 'content-type': 'application/octet-stream', 'content-length': tinyBytes.length, 'accept-ranges': 'bytes' }, tinyBytes);
    return;
  }
  const start = Number(range[1]);
  const end = range[2] === '' ? tinyBytes.length - 1 : Math.min(Number(range[2]), tinyBytes.length - 1);
  send(206, {
    'content-type': 'application/octet-stream',
    'content-length': end - start + 1,
    'content-range': `bytes ${start}-${end}/${tinyBytes.length}`,
    'accept-ranges': 'bytes',
  }, tinyBytes.subarray(start, end + 1));
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'parley-pull-'));
  tinyBytes = await readFile((await ensureModel('tiny')).path);
  server = createServer(serve);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

test('pullModel downloads a model over HTTP byte for byte, and it loads', { timeout: 60_000 }, async () => {
  const { path } = await pullModel(`${baseUrl}/models/parley-tiny.gguf`, { dir: join(dir, 'pulled') });
  assert.equal(path, join(dir, 'pulled', 'parley-tiny.gguf'));
  assert.ok((await readFile(path)).equals(tinyBytes), 'the pulled file is identical to the served one');
  assert.ok(requests.some((line) => line.startsWith('GET /models/parley-tiny.gguf')));

  const { llama, model } = await loadLlamaModel({ modelPath: path, threads: 1, logger: () => undefined });
  try {
    assert.match(model.fileInfo.metadata.general.name ?? '', /^Parley tiny/);
  } finally {
    await llama.dispose();
  }

  // A second pull finds the complete file and keeps it.
  assert.equal((await pullModel(`${baseUrl}/models/parley-tiny.gguf`, { dir: join(dir, 'pulled') })).path, path);
});

test('the downloader\'s progress record never ends up inside the pulled file, even when it lands after the final truncate', { timeout: 60_000 }, async () => {
  // ipull 3.9.5 appends a JSON progress record after the data while downloading and truncates it
  // away at the end, without waiting for the last record's write. On a busy machine that write
  // completes after the truncate, and the record stays at the end of the model. This test makes
  // that ordering certain: the record's write is held until the truncate has run.
  const probe = await open(tmpdir());
  const prototype = Object.getPrototypeOf(probe) as FileHandle;
  await probe.close();
  const originalWrite = prototype.write;
  const originalTruncate = prototype.truncate;
  let truncated!: () => void;
  const afterTruncate = new Promise<void>((resolve) => { truncated = resolve; });
  const records: Array<Promise<unknown>> = [];
  prototype.write = function (this: FileHandle, ...args: unknown[]) {
    if (args[3] === tinyBytes.length) {
      const record = afterTruncate.then(() => Reflect.apply(originalWrite, this, args));
      records.push(record);
      return record;
    }
    return Reflect.apply(originalWrite, this, args);
  } as FileHandle['write'];
  prototype.truncate = async function (this: FileHandle, length?: number) {
    await originalTruncate.call(this, length);
    truncated();
    await Promise.all(records);
  };
  try {
    const { path } = await pullModel(`${baseUrl}/models/parley-tiny.gguf`, { dir: join(dir, 'late-record') });
    assert.ok(records.length > 0, 'the downloader wrote a progress record after the data');
    assert.equal((await stat(path)).size, tinyBytes.length);
    assert.ok((await readFile(path)).equals(tinyBytes), 'the pulled file is identical to the served one');
  } finally {
    prototype.write = originalWrite;
    prototype.truncate = originalTruncate;
  }
});

test('a URL that answers 404 gives a ModelPullError carrying the status', { timeout: 60_000 }, async () => {
  await assert.rejects(pullModel(`${baseUrl}/models/missing.gguf`, { dir: join(dir, 'missing') }), (error: unknown) => {
    assert.ok(error instanceof ModelPullError);
    assert.equal(error.code, ModelPullErrorCode.http);
    assert.equal(error.status, 404);
    assert.match(error.message, /HTTP 404/);
    return true;
  });
});

test('a download that is not GGUF is rejected and deleted', { timeout: 60_000 }, async () => {
  const target = join(dir, 'html');
  await assert.rejects(pullModel(`${baseUrl}/models/not-a-model.gguf`, { dir: target }),
    { name: 'ModelPullError', code: ModelPullErrorCode.notGguf, message: /magic is '<htm', expected 'GGUF'/ });
  await assert.rejects(access(join(target, 'not-a-model.gguf')), { code: 'ENOENT' });
});

test('an unreachable server and an unsupported scheme fail fast with their own codes', { timeout: 60_000 }, async () => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const started = Date.now();
  await assert.rejects(pullModel(`http://127.0.0.1:${port}/model.gguf`, { dir: join(dir, 'unreachable') }),
    { name: 'ModelPullError', code: ModelPullErrorCode.network, message: /cannot reach 127\.0\.0\.1/ });
  assert.ok(Date.now() - started < 10_000, 'does not wait for the downloader retries');
  await assert.rejects(pullModel('ftp://example.com/model.gguf', { dir }), { code: ModelPullErrorCode.invalidUri });
});

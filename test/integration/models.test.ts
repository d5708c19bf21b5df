import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ChatMLChatWrapper, LlamaChatSession, resolveChatWrapper } from 'node-llama-cpp';
import type { Llama, LlamaModel } from 'node-llama-cpp';
import { ensureModel, generatorHash } from '../../models/ensureModel.js';
import { GENERATOR_HASH_KEY, GENERATOR_KIND_KEY } from '../../models/GeneratedModel.js';
import { GgufWriter } from '../../models/gguf/GgufWriter.js';
import { readGguf } from '../../models/gguf/readGguf.js';
import { SpmVocab } from '../../models/SpmVocab.js';
import { tinyModel } from '../../models/tinyModel.js';
import { loadLlamaModel, ModelLoadError } from '../../server/engine/loadLlamaModel.js';

const TINY_MAX_BYTES = 1024 * 1024;
const DEMO_MAX_BYTES = 20 * 1024 * 1024;

let dir: string;
let tinyPath: string;
let demoPath: string;
let llama: Llama | undefined;
const logLines: string[] = [];
const logger = (level: string, message: string): void => { logLines.push(`${level}: ${message}`); };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'parley-models-'));
  tinyPath = (await ensureModel('tiny')).path;
  demoPath = (await ensureModel('demo')).path;
});

after(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

async function load(modelPath: string): Promise<LlamaModel> {
  const loaded = await loadLlamaModel({ modelPath, threads: 1, logger });
  llama = loaded.llama;
  return loaded.model;
}

async function ask(model: LlamaModel, prompt: string, options: { temperature: number; maxTokens: number; seed?: number }): Promise<string> {
  const context = await model.createContext({ threads: 1, contextSize: 2048 });
  try {
    const session = new LlamaChatSession({ contextSequence: context.getSequence() });
    assert.ok(session.chatWrapper instanceof ChatMLChatWrapper, `chat wrapper is ${session.chatWrapper.constructor.name}`);
    return await session.prompt(prompt, options);
  } finally {
    await context.dispose();
  }
}

test('loadLlamaModel runs the prebuilt binary unless asked otherwise, and one process never mixes two llama.cpp builds', async () => {
  const loaded = await loadLlamaModel({ modelPath: tinyPath, threads: 1, logger });
  llama = loaded.llama;
  try {
    assert.equal(loaded.build, 'prebuilt');
    assert.equal(loaded.llama.buildType, 'prebuilt');
    await assert.rejects(loadLlamaModel({ modelPath: tinyPath, threads: 1, logger, build: 'native' }), /already runs the prebuilt llama\.cpp build/);
    const again = await loadLlamaModel({ modelPath: tinyPath, threads: 'auto', logger, build: 'auto' });
    assert.equal(again.llama, loaded.llama, 'auto accepts the binary already running');
    assert.equal(again.build, 'prebuilt');
    assert.equal(again.threads, 1, 'a small model on the prebuilt binary gets one thread');
    assert.match(again.threadsReason, /small model/);
    await again.model.dispose();
  } finally {
    await loaded.model.dispose();
  }
});

test('ensureModel builds the tiny and demo models within their size bounds', async () => {
  const tiny = await ensureModel('tiny');
  const demo = await ensureModel('demo');
  assert.equal(tiny.rebuilt, false, 'a second call reuses the cached file');
  assert.equal(tiny.kind, 'tiny');
  assert.match(demo.name, /^Parley demo \(bigram, not an assistant\)$/);
  const tinySize = (await stat(tiny.path)).size;
  const demoSize = (await stat(demo.path)).size;
  assert.ok(tinySize < TINY_MAX_BYTES, `tiny model is ${tinySize} bytes`);
  assert.ok(demoSize < DEMO_MAX_BYTES, `demo model is ${demoSize} bytes`);
  const tinyFile = await readGguf(tiny.path, { checks: 'llama' });
  assert.equal(tinyFile.string(GENERATOR_HASH_KEY), await generatorHash('tiny'));
  assert.equal(tinyFile.string(GENERATOR_KIND_KEY), 'tiny');
});

test('the tiny model loads on one thread as ChatML and recites its passage, identically every time', async () => {
  const model = await load(tinyPath);
  try {
    assert.ok(resolveChatWrapper(model) instanceof ChatMLChatWrapper);
    const first = await ask(model, 'Hello, who are you?', { temperature: 0, maxTokens: 40 });
    const second = await ask(model, 'Hello, who are you?', { temperature: 0, maxTokens: 40 });
    assert.equal(second, first);
    const words = first.trim().split(/\s+/);
    assert.ok(words.length >= 35, `got ${words.length} words: ${first}`);
    const passage = tinyModel.passage.split(' ');
    // 40 tokens: the whole passage, then it starts over.
    words.forEach((word, index) => assert.equal(word, passage[index % passage.length], `word ${index} of: ${first}`));
  } finally {
    await model.dispose();
  }
});

test('the demo model samples whole words from its corpus and ends on its own', async () => {
  const corpus = await readFile(new URL('../../models/corpus/demo-corpus.txt', import.meta.url), 'utf8');
  const corpusWords = new Set(corpus.split(/\s+/).map((word) => word.replace(/[.,;:!?]+$/, '')));
  const model = await load(demoPath);
  try {
    assert.equal(model.fileInfo.metadata.general.name, 'Parley demo (bigram, not an assistant)');
    const replies: string[] = [];
    for (let seed = 1; seed <= 5; seed++) replies.push(await ask(model, 'Tell me about gardens.', { temperature: 0.8, maxTokens: 300, seed }));
    for (const reply of replies) {
      const words = reply.trim().split(/\s+/).map((word) => word.replace(/[.,;:!?]+$/, '')).filter((word) => word !== '');
      assert.ok(words.length > 0, 'reply is not empty');
      for (const word of words) assert.ok(corpusWords.has(word), `"${word}" is not a corpus word, in: ${reply}`);
    }
    assert.ok(replies.some((reply) => /[.!?]$/.test(reply.trim())), `no reply ended at a paragraph end: ${replies.join(' | ')}`);
    assert.ok(new Set(replies).size > 1, 'sampling with different seeds varies the reply');
  } finally {
    await model.dispose();
  }
});

test('a corrupt or incomplete GGUF gives a ModelLoadError with the real reason, and the process lives on', async () => {
  // Start from a disposed Llama: a second instance in one process must still report llama.cpp's reasons.
  await llama?.dispose();
  const truncated = join(dir, 'truncated.gguf');
  await copyFile(tinyPath, truncated);
  await truncate(truncated, 200_000);
  await assert.rejects(loadLlamaModel({ modelPath: truncated, threads: 1, logger }), (error: unknown) => {
    assert.ok(error instanceof ModelLoadError);
    assert.equal(error.code, 'model_load_failed');
    assert.match(error.message, /beyond the end of the 200000-byte file/);
    return true;
  });

  // Passes the generic checks (not made by Parley), so llama.cpp itself refuses it: its reason must surface.
  const noEpsilon = join(dir, 'no-epsilon.gguf');
  await smallLlamaWriter({ withEpsilon: false, markAsParley: false }).writeFile(noEpsilon, { checks: 'structure' });
  await assert.rejects(loadLlamaModel({ modelPath: noEpsilon, threads: 1, logger }), (error: unknown) => {
    assert.ok(error instanceof ModelLoadError);
    assert.match(error.message, /key not found in model: llama\.attention\.layer_norm_rms_epsilon/);
    assert.doesNotMatch(error.message, /^Failed to load model$/);
    return true;
  });

  // Would make llama.cpp abort (GGML_ASSERT) if it reached it; a Parley file gets the full checks first.
  const noFeedForward = join(dir, 'no-ffn.gguf');
  await smallLlamaWriter({ withEpsilon: true, markAsParley: true, withFeedForward: false }).writeFile(noFeedForward, { checks: 'structure' });
  await assert.rejects(loadLlamaModel({ modelPath: noFeedForward, threads: 1, logger }),
    { name: 'ModelLoadError', message: /required key not found: llama\.feed_forward_length/ });

  const model = await load(tinyPath);
  try {
    const reply = await ask(model, 'Still there?', { temperature: 0, maxTokens: 5 });
    assert.match(reply, /^Quiet lanterns glow/);
  } finally {
    await model.dispose();
  }
});

test('ensureModel rebuilds a file whose stored generator hash differs', async () => {
  const first = await ensureModel('tiny', { dir });
  assert.equal(first.rebuilt, true);
  assert.equal((await ensureModel('tiny', { dir })).rebuilt, false);

  await tinyModel.build(first.path, 'stale-generator-hash');
  const messages: string[] = [];
  const again = await ensureModel('tiny', { dir, logger: (message) => messages.push(message) });
  assert.equal(again.rebuilt, true);
  assert.match(messages.join('\n'), /generator changed/);
  assert.equal((await readGguf(again.path)).string(GENERATOR_HASH_KEY), await generatorHash('tiny'));

  await truncate(again.path, 1000);
  assert.equal((await ensureModel('tiny', { dir })).rebuilt, true, 'a damaged cache file is rebuilt');
});

test('concurrent ensureModel calls share one valid file', async () => {
  const concurrentDir = join(dir, 'concurrent');
  const results = await Promise.all([ensureModel('tiny', { dir: concurrentDir }), ensureModel('tiny', { dir: concurrentDir })]);
  assert.equal(results[0].path, results[1].path);
  await readGguf(results[0].path, { checks: 'llama' });
});

/** A one-block llama file of a few KB, with optional defects. */
function smallLlamaWriter(options: { withEpsilon: boolean; markAsParley: boolean; withFeedForward?: boolean }): GgufWriter {
  const vocab = SpmVocab.build(['hello']);
  const embd = 32;
  const n = vocab.size;
  const writer = new GgufWriter()
    .setString('general.architecture', 'llama')
    .setUint32('llama.context_length', 128)
    .setUint32('llama.embedding_length', embd)
    .setUint32('llama.block_count', 1)
    .setUint32('llama.attention.head_count', 2);
  if (options.withFeedForward ?? true) writer.setUint32('llama.feed_forward_length', 32);
  if (options.withEpsilon) writer.setFloat32('llama.attention.layer_norm_rms_epsilon', 1e-5);
  if (options.markAsParley) writer.setString(GENERATOR_KIND_KEY, 'test');
  vocab.writeTo(writer);
  const matrix = (rows: number, columns: number): Float32Array => new Float32Array(rows * columns);
  writer.addTensor('token_embd.weight', [embd, n], 'F32', matrix(embd, n));
  writer.addTensor('output_norm.weight', [embd], 'F32', new Float32Array(embd).fill(1));
  writer.addTensor('blk.0.attn_norm.weight', [embd], 'F32', new Float32Array(embd).fill(1));
  for (const name of ['attn_q', 'attn_k', 'attn_v', 'attn_output']) writer.addTensor(`blk.0.${name}.weight`, [embd, embd], 'F32', matrix(embd, embd));
  writer.addTensor('blk.0.ffn_norm.weight', [embd], 'F32', new Float32Array(embd).fill(1));
  writer.addTensor('blk.0.ffn_gate.weight', [embd, 32], 'F32', matrix(embd, 32));
  writer.addTensor('blk.0.ffn_up.weight', [embd, 32], 'F32', matrix(embd, 32));
  writer.addTensor('blk.0.ffn_down.weight', [32, embd], 'F32', matrix(32, embd));
  return writer;
}

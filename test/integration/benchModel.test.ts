import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ChatMLChatWrapper, LlamaChatSession } from 'node-llama-cpp';
import type { Llama } from 'node-llama-cpp';
import { BENCH_SHAPE, benchModel, syntheticWords, writeBenchModel } from '../../models/benchModel.js';
import type { BenchShape } from '../../models/benchModel.js';
import { GeneratedModelKind, GENERATOR_KIND_KEY } from '../../models/GeneratedModel.js';
import { readGguf } from '../../models/gguf/readGguf.js';
import { SPACE_MARK } from '../../models/SpmVocab.js';
import { loadLlamaModel } from '../../server/engine/loadLlamaModel.js';

// The real bench model is 831 MB and takes about 20 s to write: these tests never build it. They
// check its shape constants and run the same generator on a scaled-down shape.
const SMALL: BenchShape = { embd: 64, blocks: 2, ffn: 96, heads: 4, kvHeads: 2, vocab: 1000, context: 4096 };

let dir: string;
let llama: Llama | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'parley-bench-model-'));
});

after(async () => {
  await llama?.dispose();
  await rm(dir, { recursive: true, force: true });
});

test('the bench model has the shape of a 0.5B instruct model and is built on demand only', () => {
  assert.deepEqual(BENCH_SHAPE, { embd: 896, blocks: 24, ffn: 4864, heads: 14, kvHeads: 2, vocab: 32000, context: 8192 });
  assert.equal(benchModel.kind, 'bench');
  assert.ok(!(Object.values(GeneratedModelKind) as string[]).includes('bench'), '`npm run models` (and so `npm test`) must not build it');
});

test('synthetic words are distinct and closed under prefixes, so each adds exactly one vocabulary piece', () => {
  const words = syntheticWords(31644);
  assert.equal(words.length, 31644);
  assert.equal(new Set(words).size, words.length);
  const seen = new Set<string>();
  for (const word of words) {
    if (word.length > 1) assert.ok(seen.has(word.slice(0, -1)), `${word} comes before its prefix`);
    seen.add(word);
  }
});

test('the bench generator writes a valid llama GGUF that loads as ChatML and never ends a reply on its own', async () => {
  const path = join(dir, 'small-bench.gguf');
  await writeBenchModel(path, 'test-hash', SMALL);
  const file = await readGguf(path, { checks: 'llama' });
  assert.equal(file.string(GENERATOR_KIND_KEY), 'bench');
  const pieces = file.array('tokenizer.ggml.tokens', 'string') ?? [];
  assert.equal(pieces.length, SMALL.vocab);
  for (const tensor of file.tensors) assert.equal(tensor.type, tensor.dims.length === 1 ? 'F32' : 'F16', tensor.name);

  const loaded = await loadLlamaModel({ modelPath: path, threads: 1 });
  llama = loaded.llama;
  const { model } = loaded;
  try {
    const context = await model.createContext({ threads: 1, contextSize: 1024 });
    const session = new LlamaChatSession({ contextSequence: context.getSequence() });
    assert.ok(session.chatWrapper instanceof ChatMLChatWrapper, `chat wrapper is ${session.chatWrapper.constructor.name}`);
    const tokens: number[] = [];
    const result = await session.promptWithMeta('Tell me about lighthouses.', {
      temperature: 0.8,
      seed: 1,
      maxTokens: 64,
      onToken: (chunk) => { tokens.push(...chunk); },
    });
    assert.equal(result.stopReason, 'maxTokens', 'the model never samples <|im_end|>');
    assert.equal(tokens.length, 64);
    // Only `▁word` pieces: no control, byte, unknown or single-character token, which finite logits guarantee.
    for (const token of tokens) assert.match(pieces[token] ?? '', new RegExp(`^${SPACE_MARK}[a-z]+$`), `token ${token}`);
    await context.dispose();
  } finally {
    await model.dispose();
  }
});

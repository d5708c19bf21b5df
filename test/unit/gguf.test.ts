import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { GgufWriter, float32ToFloat16Bits } from '../../models/gguf/GgufWriter.js';
import { GgufErrorCode, GgufValidationError } from '../../models/gguf/GgufValidationError.js';
import { readGguf } from '../../models/gguf/readGguf.js';
import { SPACE_MARK, SpmVocab } from '../../models/SpmVocab.js';

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'parley-gguf-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

const EMBD = 8;
const FFN = 16;

interface LlamaFixtureOptions {
  omitKey?: string;
  tokens?: readonly string[];
  kvHeads?: number;
  bosId?: number;
  shapeOverride?: { name: string; dims: number[] };
}

/** A minimal `llama` file in the layout Parley generates, with one defect when asked for. */
function llamaFixture(options: LlamaFixtureOptions = {}): GgufWriter {
  const vocab = SpmVocab.build(['hi', 'there']);
  const tokens = options.tokens ?? vocab.tokens;
  const n = tokens.length;
  const writer = new GgufWriter();
  const keys: Array<[string, (w: GgufWriter) => void]> = [
    ['general.architecture', (w) => w.setString('general.architecture', 'llama')],
    ['llama.context_length', (w) => w.setUint32('llama.context_length', 64)],
    ['llama.embedding_length', (w) => w.setUint32('llama.embedding_length', EMBD)],
    ['llama.block_count', (w) => w.setUint32('llama.block_count', 1)],
    ['llama.feed_forward_length', (w) => w.setUint32('llama.feed_forward_length', FFN)],
    ['llama.attention.head_count', (w) => w.setUint32('llama.attention.head_count', 2)],
    ['llama.attention.head_count_kv', (w) => w.setUint32('llama.attention.head_count_kv', options.kvHeads ?? 1)],
    ['llama.attention.layer_norm_rms_epsilon', (w) => w.setFloat32('llama.attention.layer_norm_rms_epsilon', 1e-5)],
    ['tokenizer.ggml.model', (w) => w.setString('tokenizer.ggml.model', 'llama')],
    ['tokenizer.ggml.tokens', (w) => w.setStringArray('tokenizer.ggml.tokens', tokens)],
    ['tokenizer.ggml.bos_token_id', (w) => w.setUint32('tokenizer.ggml.bos_token_id', options.bosId ?? 1)],
  ];
  for (const [key, set] of keys) if (key !== options.omitKey) set(writer);

  const kvWidth = (EMBD / 2) * (options.kvHeads ?? 1);
  const shapes: Array<[string, number[]]> = [
    ['token_embd.weight', [EMBD, n]],
    ['output_norm.weight', [EMBD]],
    ['output.weight', [EMBD, n]],
    ['blk.0.attn_norm.weight', [EMBD]],
    ['blk.0.attn_q.weight', [EMBD, EMBD]],
    ['blk.0.attn_k.weight', [EMBD, kvWidth]],
    ['blk.0.attn_v.weight', [EMBD, kvWidth]],
    ['blk.0.attn_output.weight', [EMBD, EMBD]],
    ['blk.0.ffn_norm.weight', [EMBD]],
    ['blk.0.ffn_gate.weight', [EMBD, FFN]],
    ['blk.0.ffn_up.weight', [EMBD, FFN]],
    ['blk.0.ffn_down.weight', [FFN, EMBD]],
  ];
  for (const [name, defaultDims] of shapes) {
    const dims = options.shapeOverride?.name === name ? options.shapeOverride.dims : defaultDims;
    const size = dims.reduce((a, b) => a * b, 1);
    writer.addTensor(name, dims, dims.length === 1 ? 'F32' : 'F16', new Float32Array(size).fill(0.25));
  }
  return writer;
}

async function expectInvalid(writer: GgufWriter, code: string, pattern: RegExp): Promise<void> {
  const path = join(dir, `invalid-${code}.gguf`);
  await assert.rejects(writer.writeFile(path, { checks: 'llama' }), (error: unknown) => {
    assert.ok(error instanceof GgufValidationError, `expected GgufValidationError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  });
  // The writer validates a temporary file and renames only on success: nothing is left behind.
  await assert.rejects(access(path), { code: 'ENOENT' });
}

test('typed metadata and F32/F16 tensors survive a write and read round trip, aligned to 32 bytes', async () => {
  const path = join(dir, 'roundtrip.gguf');
  const f32 = Float32Array.from([1, -2.5, 3.25]);
  const f16 = Float32Array.from([1.5, -0.5, 65504, 0, 0.1, 2]);
  const writer = new GgufWriter()
    .setUint32('test.u32', 4_000_000_000)
    .setInt32('test.i32', -7)
    .setFloat32('test.f32', 0.5)
    .setString('test.string', 'héllo ▁world')
    .setBool('test.bool', true)
    .setStringArray('test.strings', ['a', '', 'ccc'])
    .setFloat32Array('test.floats', [0.25, -1])
    .setInt32Array('test.ints', [1, -2, 3])
    .addTensor('a.weight', [3], 'F32', f32)
    .addTensor('b.weight', [3, 2], 'F16', f16);
  const { size } = await writer.writeFile(path, { checks: 'structure' });

  const file = await readGguf(path);
  assert.equal(file.version, 3);
  assert.equal(file.fileSize, size);
  assert.equal(file.integer('test.u32'), 4_000_000_000);
  assert.equal(file.integer('test.i32'), -7);
  assert.equal(file.float('test.f32'), 0.5);
  assert.equal(file.string('test.string'), 'héllo ▁world');
  assert.equal(file.bool('test.bool'), true);
  assert.deepEqual(file.array('test.strings', 'string'), ['a', '', 'ccc']);
  assert.deepEqual(file.array('test.floats', 'float32'), [0.25, -1]);
  assert.deepEqual(file.array('test.ints', 'int32'), [1, -2, 3]);
  assert.throws(() => file.string('test.u32'), { code: GgufErrorCode.badKeyType });

  assert.equal(file.dataOffset % 32, 0);
  assert.deepEqual(file.tensors.map(({ name, dims, type, offset }) => ({ name, dims, type, offset })), [
    { name: 'a.weight', dims: [3], type: 'F32', offset: 0 },
    { name: 'b.weight', dims: [3, 2], type: 'F16', offset: 32 },
  ]);
  const bytes = await readFile(path);
  const a = bytes.subarray(file.dataOffset, file.dataOffset + 12);
  assert.deepEqual([0, 1, 2].map((i) => a.readFloatLE(i * 4)), [1, -2.5, 3.25]);
  const b = bytes.subarray(file.dataOffset + 32, file.dataOffset + 44);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => b.readUInt16LE(i * 2)), [0x3e00, 0xb800, 0x7bff, 0x0000, 0x2e66, 0x4000]);
  assert.equal(file.dataSize, 64);
  assert.equal(file.fileSize, file.dataOffset + file.dataSize);
});

test('a header of several MB is read whole, and tokens that differ only by a BOM are distinct', async () => {
  const path = join(dir, 'big-header.gguf');
  const tokens = Array.from({ length: 200_000 }, (_, index) => `piece-${index}`);
  tokens.push('//', '\uFEFF//');
  await new GgufWriter()
    .setStringArray('tokenizer.ggml.tokens', tokens)
    .setString('after.the.array', 'still here')
    .addTensor('x.weight', [4], 'F32', new Float32Array(4))
    .writeFile(path, { checks: 'structure' });
  const file = await readGguf(path);
  assert.ok(file.dataOffset > 2 * 1024 * 1024, `header is ${file.dataOffset} bytes`);
  assert.deepEqual(file.array('tokenizer.ggml.tokens', 'string')?.slice(-3), ['piece-199999', '//', '\uFEFF//']);
  assert.equal(file.string('after.the.array'), 'still here');
  assert.equal(file.tensor('x.weight')?.offset, 0);
});

test('float32ToFloat16Bits rounds to nearest even and handles subnormals', () => {
  assert.equal(float32ToFloat16Bits(1), 0x3c00);
  assert.equal(float32ToFloat16Bits(-2), 0xc000);
  assert.equal(float32ToFloat16Bits(1 + 2 ** -11), 0x3c00); // halfway, ties to even
  assert.equal(float32ToFloat16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(float32ToFloat16Bits(2 ** -24), 0x0001);
  assert.equal(float32ToFloat16Bits(2 ** -26), 0x0000);
  assert.equal(float32ToFloat16Bits(1e6), 0x7c00);
});

test('a well-formed llama file passes the llama checks', async () => {
  const path = join(dir, 'valid-llama.gguf');
  await llamaFixture().writeFile(path, { checks: 'llama' });
  const file = await readGguf(path, { checks: 'llama' });
  assert.equal(file.string('general.architecture'), 'llama');
  assert.equal(file.tensors.length, 12);
  assert.ok(file.tensors.every((tensor) => tensor.offset % 32 === 0));
});

test('validation rejects a missing required key, naming the key', async () => {
  await expectInvalid(llamaFixture({ omitKey: 'llama.attention.layer_norm_rms_epsilon' }), GgufErrorCode.missingKey,
    /required key not found: llama\.attention\.layer_norm_rms_epsilon/);
  await expectInvalid(llamaFixture({ omitKey: 'llama.feed_forward_length' }), GgufErrorCode.missingKey, /llama\.feed_forward_length/);
});

test('validation rejects a tensor whose shape disagrees with the hyperparameters', async () => {
  await expectInvalid(llamaFixture({ shapeOverride: { name: 'blk.0.attn_k.weight', dims: [EMBD, EMBD] } }), GgufErrorCode.badTensorShape,
    /tensor 'blk\.0\.attn_k\.weight' has wrong shape \[8, 8\], expected \[8, 4\]/);
  await expectInvalid(llamaFixture({ shapeOverride: { name: 'blk.0.ffn_down.weight', dims: [EMBD, FFN] } }), GgufErrorCode.badTensorShape,
    /ffn_down/);
});

test('validation rejects a repeated token string, which would abort llama.cpp', async () => {
  const tokens = [...SpmVocab.build(['hi', 'there']).tokens];
  tokens[tokens.length - 1] = `${SPACE_MARK}hi`;
  await expectInvalid(llamaFixture({ tokens }), GgufErrorCode.duplicateToken, /repeats the string "▁hi"/);
});

test('validation rejects inconsistent head counts and out-of-range special token ids', async () => {
  await expectInvalid(llamaFixture({ kvHeads: 3 }), GgufErrorCode.badHyperparameter, /multiple of llama\.attention\.head_count_kv \(3\)/);
  await expectInvalid(llamaFixture({ bosId: 100_000 }), GgufErrorCode.badTokenId, /bos_token_id is 100000, outside the vocabulary/);
});

test('a truncated file is reported as truncated, at the header or in the tensor data', async () => {
  const path = join(dir, 'truncated.gguf');
  await llamaFixture().writeFile(path);
  const full = await readGguf(path);

  await truncate(path, full.fileSize - 100);
  await assert.rejects(readGguf(path), (error: unknown) => {
    assert.ok(error instanceof GgufValidationError);
    assert.equal(error.code, GgufErrorCode.truncated);
    assert.match(error.message, /data of tensor 'blk\.0\.ffn_down\.weight' ends at byte \d+, beyond the end of the \d+-byte file/);
    return true;
  });

  await truncate(path, 2000);
  await assert.rejects(readGguf(path), { name: 'GgufValidationError', code: GgufErrorCode.truncated, message: /file ends at byte 2000 while reading/ });
});

test('a file that is not GGUF is rejected by its magic', async () => {
  const path = join(dir, 'not.gguf');
  await writeFile(path, '<!doctype html><title>404</title>');
  await assert.rejects(readGguf(path), { code: GgufErrorCode.badMagic, message: /magic is '<!do', expected 'GGUF'/ });
});

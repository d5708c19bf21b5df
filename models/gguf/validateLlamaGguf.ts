import type { GgufFile } from './GgufFile.js';
import { GgufErrorCode, GgufValidationError } from './GgufValidationError.js';
import type { GgmlTypeName } from './ggufFormat.js';

/** Keys llama.cpp needs to load a `llama` model; a missing one ends in an error or, for some, in an abort. */
export const REQUIRED_LLAMA_KEYS = [
  'general.architecture',
  'llama.context_length',
  'llama.embedding_length',
  'llama.block_count',
  'llama.feed_forward_length',
  'llama.attention.head_count',
  'llama.attention.layer_norm_rms_epsilon',
  'tokenizer.ggml.model',
  'tokenizer.ggml.tokens',
] as const;

/**
 * Q4_0 (with a Q8_0 output matrix) is what llama.cpp's own llama-quantize makes of the bench model
 * for `bench --model bench-q4`; the file keeps Parley's generator keys, so it is checked here too.
 */
const WEIGHT_TYPES: ReadonlySet<GgmlTypeName> = new Set(['F32', 'F16', 'Q8_0', 'Q4_0']);
const TOKEN_TYPE_MIN = 1;
const TOKEN_TYPE_MAX = 6;

/**
 * The checks for `llama` files that Parley generates: every required key, hyperparameters that
 * agree with each other, every tensor present with the shape llama.cpp expects, and a
 * vocabulary llama.cpp accepts. Run after the structural checks of readGguf.
 * Throws GgufValidationError.
 */
export function validateLlamaGguf(file: GgufFile): void {
  function fail(code: GgufErrorCode, message: string): never {
    throw new GgufValidationError(code, message, { path: file.path });
  }

  for (const key of REQUIRED_LLAMA_KEYS) {
    if (!file.has(key)) fail(GgufErrorCode.missingKey, `required key not found: ${key}`);
  }
  const architecture = file.string('general.architecture');
  if (architecture !== 'llama') fail(GgufErrorCode.badHyperparameter, `general.architecture is '${architecture}', expected 'llama'`);

  const positive = (key: string): number => {
    const value = file.integer(key);
    if (value === undefined || value < 1) fail(GgufErrorCode.badHyperparameter, `${key} must be a positive integer, got ${value}`);
    return value as number;
  };
  positive('llama.context_length');
  const embd = positive('llama.embedding_length');
  const layers = positive('llama.block_count');
  const ffn = positive('llama.feed_forward_length');
  const heads = positive('llama.attention.head_count');
  const kvHeads = file.has('llama.attention.head_count_kv') ? positive('llama.attention.head_count_kv') : heads;
  if (kvHeads > heads || heads % kvHeads !== 0) {
    fail(GgufErrorCode.badHyperparameter, `llama.attention.head_count (${heads}) must be a multiple of llama.attention.head_count_kv (${kvHeads})`);
  }
  if (!file.has('llama.attention.key_length') && embd % heads !== 0) {
    fail(GgufErrorCode.badHyperparameter, `llama.embedding_length (${embd}) must be a multiple of llama.attention.head_count (${heads})`);
  }
  const keyLength = file.has('llama.attention.key_length') ? positive('llama.attention.key_length') : embd / heads;
  const valueLength = file.has('llama.attention.value_length') ? positive('llama.attention.value_length') : embd / heads;
  const rotary = file.has('llama.rope.dimension_count') ? positive('llama.rope.dimension_count') : keyLength;
  if (rotary !== keyLength) fail(GgufErrorCode.badHyperparameter, `invalid n_rot: llama.rope.dimension_count is ${rotary}, expected the head size ${keyLength}`);
  if (keyLength % 2 !== 0) fail(GgufErrorCode.badHyperparameter, `head size ${keyLength} must be even for RoPE`);
  const epsilon = file.float('llama.attention.layer_norm_rms_epsilon');
  if (epsilon === undefined || !(epsilon > 0)) fail(GgufErrorCode.badHyperparameter, `llama.attention.layer_norm_rms_epsilon must be positive, got ${epsilon}`);

  const tokenizer = file.string('tokenizer.ggml.model');
  if (tokenizer !== 'llama') fail(GgufErrorCode.badVocabulary, `tokenizer.ggml.model is '${tokenizer}', expected 'llama' (SentencePiece)`);
  const tokens = file.array('tokenizer.ggml.tokens', 'string') ?? [];
  const vocab = tokens.length;
  if (vocab === 0) fail(GgufErrorCode.badVocabulary, 'tokenizer.ggml.tokens is empty');
  const declaredVocab = file.integer('llama.vocab_size');
  if (declaredVocab !== undefined && declaredVocab !== vocab) fail(GgufErrorCode.badVocabulary, `llama.vocab_size is ${declaredVocab} but tokenizer.ggml.tokens has ${vocab} tokens`);
  const scores = file.array('tokenizer.ggml.scores', 'float32');
  if (scores !== undefined && scores.length !== vocab) fail(GgufErrorCode.badVocabulary, `tokenizer.ggml.scores has ${scores.length} entries for ${vocab} tokens`);
  const types = file.array('tokenizer.ggml.token_type', 'int32');
  if (types !== undefined) {
    if (types.length !== vocab) fail(GgufErrorCode.badVocabulary, `tokenizer.ggml.token_type has ${types.length} entries for ${vocab} tokens`);
    types.forEach((type, id) => {
      if (type < TOKEN_TYPE_MIN || type > TOKEN_TYPE_MAX) fail(GgufErrorCode.badVocabulary, `token ${id} has invalid token type ${type}`);
      if (type === 6 && !/^<0x[0-9A-F]{2}>$/.test(tokens[id] ?? '')) fail(GgufErrorCode.badVocabulary, `byte token ${id} is ${JSON.stringify(tokens[id])}, expected <0xNN>`);
    });
  }
  for (const role of ['bos', 'eos', 'unknown', 'padding', 'eot', 'eom'] as const) {
    const key = `tokenizer.ggml.${role}_token_id`;
    const id = file.integer(key);
    if (id !== undefined && (id < 0 || id >= vocab)) fail(GgufErrorCode.badTokenId, `${key} is ${id}, outside the vocabulary of ${vocab} tokens`);
  }
  const template = file.string('tokenizer.chat_template');
  if (template !== undefined && template.trim() === '') fail(GgufErrorCode.badVocabulary, 'tokenizer.chat_template is empty');

  const expected = new Map<string, readonly number[]>([
    ['token_embd.weight', [embd, vocab]],
    ['output_norm.weight', [embd]],
  ]);
  if (file.tensor('output.weight') !== undefined) expected.set('output.weight', [embd, vocab]);
  for (let block = 0; block < layers; block++) {
    const prefix = `blk.${block}.`;
    expected.set(`${prefix}attn_norm.weight`, [embd]);
    expected.set(`${prefix}attn_q.weight`, [embd, keyLength * heads]);
    expected.set(`${prefix}attn_k.weight`, [embd, keyLength * kvHeads]);
    expected.set(`${prefix}attn_v.weight`, [embd, valueLength * kvHeads]);
    expected.set(`${prefix}attn_output.weight`, [keyLength * heads, embd]);
    expected.set(`${prefix}ffn_norm.weight`, [embd]);
    expected.set(`${prefix}ffn_gate.weight`, [embd, ffn]);
    expected.set(`${prefix}ffn_up.weight`, [embd, ffn]);
    expected.set(`${prefix}ffn_down.weight`, [ffn, embd]);
  }
  for (const tensor of file.tensors) {
    if (!expected.has(tensor.name)) fail(GgufErrorCode.unexpectedTensor, `unexpected tensor '${tensor.name}' for a ${layers}-block llama model`);
  }
  for (const [name, shape] of expected) {
    const tensor = file.tensor(name);
    if (tensor === undefined) fail(GgufErrorCode.missingTensor, `missing tensor '${name}'`);
    const dims = tensor!.dims;
    if (dims.length !== shape.length || dims.some((dim, index) => dim !== shape[index])) {
      fail(GgufErrorCode.badTensorShape, `tensor '${name}' has wrong shape [${dims.join(', ')}], expected [${shape.join(', ')}]`);
    }
    const isNorm = shape.length === 1;
    if (isNorm ? tensor!.type !== 'F32' : !WEIGHT_TYPES.has(tensor!.type)) {
      fail(GgufErrorCode.badTensorType, `tensor '${name}' has type ${tensor!.type}; ${isNorm ? 'norms must be F32' : 'weights must be F32, F16, Q8_0 or Q4_0'}`);
    }
  }

  const expectedSize = file.dataOffset + file.dataSize;
  if (file.fileSize !== expectedSize) {
    fail(GgufErrorCode.fileSizeMismatch, `file is ${file.fileSize} bytes, but its header describes ${expectedSize}`);
  }
}

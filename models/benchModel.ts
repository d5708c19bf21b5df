import { GENERATOR_HASH_KEY, GENERATOR_KIND_KEY, commonGeneratorSources, siblingSource } from './GeneratedModel.js';
import type { GeneratedModel } from './GeneratedModel.js';
import { addPassThroughBlocks } from './addPassThroughBlocks.js';
import { GgufWriter } from './gguf/GgufWriter.js';
import { mulberry32 } from './mulberry32.js';
import { SPACE_MARK, SpmVocab, TokenType } from './SpmVocab.js';

/** The hyperparameters of a llama-architecture model; BENCH_SHAPE is the one the bench model has. */
export interface BenchShape {
  readonly embd: number;
  readonly blocks: number;
  readonly ffn: number;
  readonly heads: number;
  readonly kvHeads: number;
  /** Total tokens, including SpmVocab's 356 fixed ones. */
  readonly vocab: number;
  readonly context: number;
}

/** The shape of a 0.5B instruct model (Qwen2.5-0.5B's widths, a SentencePiece vocabulary of 32000). */
export const BENCH_SHAPE: BenchShape = {
  embd: 896,
  blocks: 24,
  ffn: 4864,
  heads: 14,
  kvHeads: 2,
  vocab: 32000,
  context: 8192,
};

const SEED = 0xbe7c;
/** Half-width of the uniform weight noise: a standard deviation of about 0.03, like a fresh init. */
const NOISE = 0.05;
/**
 * Every embedding holds ANCHOR in dimension 0 (the others are noise). The blocks are pass-through,
 * so the final hidden state keeps it, and after RMSNorm dimension 0 is about +20.
 */
const ANCHOR = 1;
const ANCHOR_DIM = 0;
/**
 * output.weight of tokens that must never be sampled (everything but `▁word` pieces: control,
 * byte, unknown and single-character tokens), in the anchor dimension: their logit is about
 * -20 × this against about ±0.6 for the words, so replies never end, never hold partial UTF-8,
 * and read as words.
 */
const NEVER_WEIGHT = -1;
/** Random values that block matrices view at random offsets; bigger than any block matrix. */
const POOL_LENGTH = 8 * 1024 * 1024;
const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

/**
 * The benchmark model: a `llama` GGUF with the shape of a 0.5B instruct model in F16 (about
 * 831 MB), ChatML-templated, that costs per token what a real 0.5B model costs. Built on demand
 * only (never by `npm run models` or `npm test`), and cached in models/generated/.
 *
 * Not a language model: its blocks are pass-through (attn_output and ffn_down are zero, so the
 * residual stream carries the token embedding; see addPassThroughBlocks) and every other weight
 * is seeded noise, so it writes random `▁word` pieces. The dense F16 matrix products do not depend
 * on the values, so each token still costs the full attention and FFN of every block. It never
 * samples `<|im_end|>` (see ANCHOR), so a reply always runs to its maxTokens: a fixed amount of
 * work per request, which is what a benchmark wants.
 *
 * Block matrices are views into one pool of random values at random offsets, so building needs
 * about 1.1 GB (the writer's output buffer, the two vocabulary matrices, the pool) rather than
 * the 1.7 GB that distinct F32 copies of every weight would take.
 */
export const benchModel: GeneratedModel = {
  kind: 'bench',
  fileName: 'parley-bench-0.5b-f16.gguf',
  sources: [...commonGeneratorSources(), siblingSource(import.meta.url, './benchModel')],
  build: (path, hash) => writeBenchModel(path, hash, BENCH_SHAPE),
};

/** Builds the vocabulary and weights of `shape` and writes them, validated, to `path`. */
export async function writeBenchModel(path: string, generatorHash: string, shape: BenchShape): Promise<{ path: string; size: number }> {
  const { embd, blocks, ffn, heads, kvHeads, context } = shape;
  if (embd % heads !== 0 || heads % kvHeads !== 0) throw new RangeError('embd must divide by heads, and heads by kvHeads');
  const vocab = SpmVocab.build(syntheticWords(shape.vocab - SpmVocab.build([]).size));
  if (vocab.size !== shape.vocab) throw new Error(`bench vocabulary has ${vocab.size} tokens, expected ${shape.vocab}`);
  const n = vocab.size;
  const headSize = embd / heads;
  const random = mulberry32(SEED);
  const uniform = (): number => (random() * 2 - 1) * NOISE;

  // token_embd is [embd, n]: row t is the embedding of token t.
  const embeddings = new Float32Array(embd * n);
  for (let index = 0; index < embeddings.length; index++) embeddings[index] = uniform();
  for (let token = 0; token < n; token++) embeddings[token * embd + ANCHOR_DIM] = ANCHOR;

  // output is [embd, n]: row v scores token v. Words ignore the anchor; the rest only see it.
  const output = new Float32Array(embd * n);
  for (let token = 0; token < n; token++) {
    const row = token * embd;
    const piece = vocab.tokens[token]!;
    if (vocab.types[token] === TokenType.normal && piece.startsWith(SPACE_MARK) && piece.length > 1) {
      for (let column = 0; column < embd; column++) output[row + column] = uniform();
      output[row + ANCHOR_DIM] = 0;
    } else {
      output[row + ANCHOR_DIM] = NEVER_WEIGHT;
    }
  }

  const pool = new Float32Array(POOL_LENGTH);
  for (let index = 0; index < pool.length; index++) pool[index] = uniform();
  const noise = (length: number): Float32Array => {
    if (length > POOL_LENGTH) throw new RangeError(`a ${length}-value matrix does not fit the ${POOL_LENGTH}-value pool`);
    const offset = Math.floor(random() * (POOL_LENGTH - length + 1));
    return pool.subarray(offset, offset + length);
  };

  const writer = new GgufWriter()
    .setString('general.architecture', 'llama')
    .setString('general.name', 'Parley bench (0.5B shape, random weights)')
    .setString('general.description', 'Generated by Parley for benchmarks: the shape and per-token cost of a 0.5B model in F16, random weights. Writes noise.')
    .setString('general.license', 'MIT')
    .setUint32('general.file_type', 1)
    .setString(GENERATOR_KIND_KEY, 'bench')
    .setString(GENERATOR_HASH_KEY, generatorHash)
    .setUint32('llama.context_length', context)
    .setUint32('llama.embedding_length', embd)
    .setUint32('llama.block_count', blocks)
    .setUint32('llama.feed_forward_length', ffn)
    .setUint32('llama.rope.dimension_count', headSize)
    .setUint32('llama.attention.head_count', heads)
    .setUint32('llama.attention.head_count_kv', kvHeads)
    .setFloat32('llama.attention.layer_norm_rms_epsilon', 1e-6)
    .setFloat32('llama.rope.freq_base', 1_000_000)
    .setUint32('llama.vocab_size', n);
  vocab.writeTo(writer);

  writer.addTensor('token_embd.weight', [embd, n], 'F16', embeddings);
  writer.addTensor('output_norm.weight', [embd], 'F32', new Float32Array(embd).fill(1));
  writer.addTensor('output.weight', [embd, n], 'F16', output);
  addPassThroughBlocks(writer, { blocks, embd, qDim: embd, kvDim: headSize * kvHeads, ffn, noise });
  return writer.writeFile(path, { checks: 'llama' });
}

/**
 * `count` distinct lowercase words in breadth-first order (a..z, aa..zz, aaa..): every proper
 * prefix of a word comes before it, so SpmVocab's prefix chains add exactly one piece per word.
 */
export function syntheticWords(count: number): string[] {
  const words: string[] = [];
  let level = [''];
  while (words.length < count) {
    const next: string[] = [];
    for (const stem of level) {
      for (const letter of LETTERS) {
        if (words.length + next.length >= count) break;
        next.push(stem + letter);
      }
    }
    words.push(...next);
    level = next;
  }
  return words;
}

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { GENERATOR_HASH_KEY, GENERATOR_KIND_KEY, commonGeneratorSources, siblingSource } from './GeneratedModel.js';
import type { GeneratedModel } from './GeneratedModel.js';
import { addPassThroughBlocks } from './addPassThroughBlocks.js';
import { GgufWriter } from './gguf/GgufWriter.js';
import { mulberry32 } from './mulberry32.js';
import { SPACE_MARK, SpmVocab } from './SpmVocab.js';

const CORPUS_PATH = fileURLToPath(new URL('./corpus/demo-corpus.txt', import.meta.url));

/** Total tokens, including the 356 fixed ones (specials, bytes, characters, ChatML). */
const VOCAB_SIZE = 2560;
const CONTEXT = 4096;
const HEAD_SIZE = 64;
const FFN = 32;
const SEED = 0xde70;
/** Weight of the unigram distribution mixed into every row, in pseudo-counts. */
const SMOOTHING = 0.1;
/**
 * Added to the logit of `<|im_end|>` everywhere. The corpus paragraphs are short, and sampling at
 * temperature 0.8 sharpens the already likely paragraph end, so without it most replies would be
 * a single sentence; with it they are typically 20 to 150 tokens.
 */
const END_BIAS = -1;
/** Logit of tokens the corpus never produces (bytes, bare prefixes, control tokens): never sampled in practice. */
const NEVER = -30;
/** Characters that follow a word and become tokens of their own. */
const WORD_CORE = /^([A-Za-z0-9'-]+)([.,;:!?]*)$/;

/**
 * The demo model served when no model is configured: a bigram Markov chain over the words of
 * models/corpus/demo-corpus.txt, dressed as a `llama` GGUF so node-llama-cpp runs it like any
 * model. Locally fluent, globally nonsense, and honest about it in its name.
 *
 * How it works: one-hot embeddings over "states" (each token the chain can be in), attn_output
 * and ffn_down zero so the residual stream carries the embedding to the output unchanged, and
 * output.weight[next][state] = ln P(next | state). Paragraph starts follow the `\n` that ends the
 * ChatML assistant header, and paragraph ends predict `<|im_end|>`, so replies stop at a
 * paragraph end. Words outside the vocabulary budget are dropped from the chain, so every word
 * the model writes is a whole corpus word.
 */
export const demoModel: GeneratedModel = {
  kind: 'demo',
  fileName: 'parley-demo.gguf',
  sources: [...commonGeneratorSources(), siblingSource(import.meta.url, './demoModel'), CORPUS_PATH],
  build: buildDemoModel,
};

export interface DemoCorpusStats {
  readonly paragraphs: number;
  readonly words: number;
  readonly distinctWords: number;
  readonly coveredWords: number;
  /** Share of running words the vocabulary covers; the rest are left out of the chain. */
  readonly coverage: number;
}

interface BigramTable {
  readonly vocab: SpmVocab;
  /** Token ids that have their own row in the chain; everything else shares DEFAULT_STATE. */
  readonly states: readonly number[];
  /** Counts of (state index, next token id); state index states.length is paragraph start. */
  readonly counts: ReadonlyMap<number, ReadonlyMap<number, number>>;
  readonly unigram: ReadonlyMap<number, number>;
  readonly stats: DemoCorpusStats;
}

/** Splits the corpus into paragraphs of words and picks the words that fit the vocabulary budget. */
export function countDemoCorpus(text: string): BigramTable {
  const paragraphs = text.split(/\n\s*\n/).map((paragraph) => paragraph.trim().split(/\s+/)).filter((words) => words[0] !== '');
  const parsed = paragraphs.map((chunks) => chunks.map((chunk) => {
    const match = WORD_CORE.exec(chunk);
    if (match === null) throw new Error(`demo corpus: cannot split ${JSON.stringify(chunk)} into a word and punctuation`);
    return { word: match[1]!, punctuation: Array.from(match[2]!) };
  }));

  const frequency = new Map<string, number>();
  for (const paragraph of parsed) for (const { word } of paragraph) frequency.set(word, (frequency.get(word) ?? 0) + 1);
  const chosen = chooseWords(frequency, VOCAB_SIZE - SpmVocab.build([]).size);
  const covered = chosen.reduce((total, word) => total + frequency.get(word)!, 0);
  const vocab = SpmVocab.build(chosen);
  const chosenSet = new Set(chosen);

  const START = -1;
  const END = vocab.eosId;
  const GAP = -2;
  const transitions: Array<[number, number]> = [];
  for (const paragraph of parsed) {
    let previous = START;
    // A word outside the vocabulary leaves a gap: the chain does not link the tokens around it,
    // which would teach it pairs such as "the ," that never occur in the corpus.
    const step = (next: number): void => {
      if (previous !== GAP) transitions.push([previous, next]);
      previous = next;
    };
    for (const { word, punctuation } of paragraph) {
      if (chosenSet.has(word)) step(vocab.id(SPACE_MARK + word));
      else previous = GAP;
      for (const mark of punctuation) step(vocab.id(mark));
    }
    step(END);
  }

  const stateIds = [...new Set(transitions.flat().filter((id) => id !== START && id !== END))].sort((a, b) => a - b);
  const stateIndex = new Map(stateIds.map((id, index) => [id, index]));
  const startState = stateIds.length;
  const counts = new Map<number, Map<number, number>>();
  const unigram = new Map<number, number>();
  for (const [previous, next] of transitions) {
    const state = previous === START ? startState : stateIndex.get(previous)!;
    const row = counts.get(state) ?? new Map<number, number>();
    row.set(next, (row.get(next) ?? 0) + 1);
    counts.set(state, row);
    unigram.set(next, (unigram.get(next) ?? 0) + 1);
  }
  const words = parsed.reduce((total, paragraph) => total + paragraph.length, 0);
  return {
    vocab,
    states: stateIds,
    counts,
    unigram,
    stats: { paragraphs: parsed.length, words, distinctWords: frequency.size, coveredWords: chosen.length, coverage: covered / words },
  };
}

/**
 * Picks the words that enter the vocabulary. A word costs one token for each of its `▁` prefixes
 * not already present, so the greedy choice takes, at each step, the word covering the most
 * running text per new token.
 */
function chooseWords(frequency: ReadonlyMap<string, number>, budget: number): string[] {
  const pieces = new Set<string>();
  const remaining = new Map(frequency);
  const chosen: string[] = [];
  const cost = (word: string): number => {
    let missing = 0;
    for (let length = 1; length <= word.length; length++) if (!pieces.has(word.slice(0, length))) missing++;
    return missing;
  };
  for (;;) {
    let best: { word: string; value: number; cost: number } | undefined;
    for (const [word, count] of remaining) {
      const missing = cost(word);
      if (pieces.size + missing > budget) continue;
      const value = count / Math.max(missing, 0.5);
      if (best === undefined || value > best.value || (value === best.value && word < best.word)) best = { word, value, cost: missing };
    }
    if (best === undefined) return chosen;
    remaining.delete(best.word);
    chosen.push(best.word);
    for (let length = 1; length <= best.word.length; length++) pieces.add(best.word.slice(0, length));
  }
}

async function buildDemoModel(path: string, generatorHash: string): Promise<{ path: string; size: number }> {
  const table = countDemoCorpus(await readFile(CORPUS_PATH, 'utf8'));
  const { vocab, states, counts, unigram } = table;
  const n = vocab.size;
  // One dimension per state plus the shared start state, rounded up for friendlier kernel shapes.
  const startState = states.length;
  const embd = Math.ceil((startState + 1) / 64) * 64;

  const embeddings = new Float32Array(embd * n);
  const stateOf = new Map(states.map((id, index) => [id, index]));
  for (let token = 0; token < n; token++) embeddings[token * embd + (stateOf.get(token) ?? startState)] = 1;

  const unigramTotal = [...unigram.values()].reduce((sum, count) => sum + count, 0);
  const output = new Float32Array(embd * n);
  for (let state = 0; state <= startState; state++) {
    const row = counts.get(state) ?? new Map<number, number>();
    const rowTotal = [...row.values()].reduce((sum, count) => sum + count, 0);
    for (let next = 0; next < n; next++) {
      const prior = (unigram.get(next) ?? 0) / unigramTotal;
      const probability = ((row.get(next) ?? 0) + SMOOTHING * prior) / (rowTotal + SMOOTHING);
      const bias = next === vocab.eosId ? END_BIAS : 0;
      output[next * embd + state] = probability > 0 ? Math.max(NEVER, Math.log(probability) + bias) : NEVER;
    }
  }
  // Unused padding dimensions are never active, so their weights do not matter; keep them zero.

  // RMSNorm scales a one-hot vector to sqrt(embd); this weight brings it back to exactly 1,
  // so a logit is exactly the stored log-probability.
  const outputNorm = new Float32Array(embd).fill(1 / Math.sqrt(embd));
  const random = mulberry32(SEED);
  const noise = (length: number): Float32Array => Float32Array.from({ length }, () => (random() - 0.5) * 0.02);

  const writer = new GgufWriter()
    .setString('general.architecture', 'llama')
    .setString('general.name', 'Parley demo (bigram, not an assistant)')
    .setString('general.description',
      "Parley's demo model: a bigram Markov chain counted from Parley's own demo corpus. It strings corpus words together " +
      'without understanding anything; configure a real GGUF model for real answers.')
    .setString('general.license', 'MIT')
    .setUint32('general.file_type', 1)
    .setString(GENERATOR_KIND_KEY, 'demo')
    .setString(GENERATOR_HASH_KEY, generatorHash)
    .setUint32('llama.context_length', CONTEXT)
    .setUint32('llama.embedding_length', embd)
    .setUint32('llama.block_count', 1)
    .setUint32('llama.feed_forward_length', FFN)
    .setUint32('llama.attention.head_count', 1)
    .setUint32('llama.attention.head_count_kv', 1)
    .setUint32('llama.attention.key_length', HEAD_SIZE)
    .setUint32('llama.attention.value_length', HEAD_SIZE)
    .setUint32('llama.rope.dimension_count', HEAD_SIZE)
    .setFloat32('llama.attention.layer_norm_rms_epsilon', 1e-6)
    .setFloat32('llama.rope.freq_base', 10000)
    .setUint32('llama.vocab_size', n);
  vocab.writeTo(writer);

  writer.addTensor('token_embd.weight', [embd, n], 'F16', embeddings);
  writer.addTensor('output_norm.weight', [embd], 'F32', outputNorm);
  writer.addTensor('output.weight', [embd, n], 'F16', output);
  addPassThroughBlocks(writer, { blocks: 1, embd, qDim: HEAD_SIZE, kvDim: HEAD_SIZE, ffn: FFN, noise });
  return writer.writeFile(path, { checks: 'llama' });
}

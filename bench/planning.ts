import { performance } from 'node:perf_hooks';
import type { Turn } from '../server/engine/Engine.js';
import type { LlamaEngine } from '../server/engine/LlamaEngine.js';
import type { Benchmark } from './Benchmark.js';
import { cell } from './renderTable.js';
import { summarize } from './summarize.js';

const TURNS = 200;
const TEXT = 'And what happened after that?';
const MAX_TOKENS = 512;

/** A user turn of ~25 words and a reply of ~60, from a fixed word list: the prompt of a long chat. */
function conversation(turns: number): Turn[] {
  const words = 'the harbor lanterns glow while fishermen mend their nets and children chase gulls along wooden piers bakers pull warm bread'.split(' ');
  const text = (count: number, seed: number) => Array.from({ length: count }, (_, index) => words[(seed * 7 + index * 3) % words.length]).join(' ');
  return Array.from({ length: turns }, (_, index): Turn => (index % 2 === 0 ? { role: 'user', text: text(25, index) } : { role: 'assistant', text: text(60, index) }));
}

/**
 * Planning as it was before per-turn counts: the whole remaining history rendered and tokenised
 * again for every dropped exchange (the code of `LlamaEngine.planPrompt` up to that change).
 */
function planBefore(engine: LlamaEngine, history: readonly Turn[], text: string, maxTokens: number): number {
  const count = (turns: readonly Turn[], message: string): number =>
    (engine as unknown as { countPromptTokens(turns: readonly Turn[], message: string): number }).countPromptTokens(turns, message);
  const contextSize = engine.info.contextSize;
  const reserve = Math.min(maxTokens, Math.floor(contextSize / 4));
  let firstTurn = 0;
  let promptTokens = count(history, text);
  while (promptTokens + reserve + 16 > contextSize && firstTurn < history.length) {
    firstTurn = Math.min(history.length, firstTurn + 2);
    promptTokens = count(history.slice(firstTurn), text);
  }
  return firstTurn;
}

function time(runs: number, work: () => unknown): number[] {
  const samples: number[] = [];
  for (let run = 0; run < runs; run++) {
    const started = performance.now();
    work();
    samples.push(performance.now() - started);
  }
  return samples;
}

/**
 * Planning one send in a 200-turn conversation that is longer than the context, in process on
 * the tiny model's tokenizer: as it was (re-tokenising per dropped exchange), and now, on the
 * first send (every turn counted once) and on later sends (counts kept with the turns).
 */
export const planning: Benchmark = {
  name: 'planning',
  summary: 'planning a send in a 200-turn conversation: before and after per-turn token counts',
  async run(context) {
    const model = context.lightModel;
    const engine = await context.engines.get(model, 1);
    const history = conversation(TURNS);
    const runs = context.quick ? 3 : 10;
    context.progress(`planning: ${TURNS} turns, ${runs} runs each`);
    const before = time(runs, () => planBefore(engine, history, TEXT, MAX_TOKENS));
    const first = time(runs, () => engine.planPrompt(history, TEXT, MAX_TOKENS));
    const plan = engine.planPrompt(history, TEXT, MAX_TOKENS);
    const counted = history.map((turn, index) => ({ ...turn, tokens: plan.turnTokens[index] ?? 0 }));
    const later = time(runs, () => engine.planPrompt(counted, TEXT, MAX_TOKENS));
    const firstTurnBefore = planBefore(engine, history, TEXT, MAX_TOKENS);
    const p50 = (samples: number[]) => summarize(samples).p50 ?? Number.NaN;
    return {
      tables: [
        {
          title: `Planning a send in a ${TURNS}-turn conversation (${model.kind} model's tokenizer, context ${engine.info.contextSize}; ms, p50 of ${runs})`,
          rows: [
            ['', 'ms', '× before'],
            ['before: re-tokenised per dropped exchange', cell(p50(before), 1), '1.00'],
            ['now, first send: each turn counted once', cell(p50(first), 1), cell(p50(first) / p50(before), 3)],
            ['now, later sends: counts kept with the turns', cell(p50(later), 1), cell(p50(later) / p50(before), 3)],
          ],
          notes: [`Both keep the same turns: from turn ${plan.firstTurn} (before: ${firstTurnBefore}), ${plan.promptTokens} prompt tokens.`],
        },
      ],
      data: { turns: TURNS, runs, beforeMs: before, firstMs: first, laterMs: later, firstTurn: plan.firstTurn, firstTurnBefore, promptTokens: plan.promptTokens },
    };
  },
};

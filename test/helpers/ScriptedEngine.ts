import { ContextOverflowError } from '../../server/ParleyError.js';
import { EngineStopReason, type Engine, type GenerateRequest, type GenerateResult, type PromptPlan, type Turn } from '../../server/engine/Engine.js';

/**
 * An engine for unit tests of the chat core: no model. A token is a word; a reply is `replyWords`
 * words ("w0 w1 ..."), or fewer when maxTokens is smaller. The prompt phase waits while
 * `holdPrompts` is set (a test opens it with `releasePrompts`), and every call is recorded.
 */
export class ScriptedEngine implements Engine {
  readonly info = { name: 'scripted', demo: false, contextSize: 1000 };
  readonly generations: GenerateRequest[] = [];
  /** How many times a turn was counted (the planner should count each turn once). */
  turnCounts = 0;
  /** Throw on the next generate, after this many pieces (0: before any). */
  failAfter: number | undefined;
  holdPrompts = false;
  private promptWaiters: Array<() => void> = [];

  constructor(
    readonly slots = 2,
    private readonly replyWords = 5,
    private readonly contextSize = 1000,
  ) {}

  planPrompt(history: readonly Turn[], text: string, maxTokens: number): PromptPlan {
    const words = (value: string) => value.split(/\s+/).filter(Boolean).length + 1;
    const alone = words(text);
    if (alone + 8 > this.contextSize) throw new ContextOverflowError(`This message is about ${alone} tokens; too long.`);
    const turnTokens = history.map((turn) => {
      if (turn.tokens !== undefined) return turn.tokens;
      this.turnCounts++;
      return words(turn.text);
    });
    let firstTurn = 0;
    let total = alone + turnTokens.reduce((sum, tokens) => sum + tokens, 0);
    const budget = this.contextSize - Math.min(maxTokens, this.contextSize / 4);
    while (total > budget && firstTurn < history.length) {
      total -= (turnTokens[firstTurn] ?? 0) + (turnTokens[firstTurn + 1] ?? 0);
      firstTurn += 2;
    }
    const room = this.contextSize - total;
    return { firstTurn, promptTokens: total, maxTokens: Math.min(maxTokens, room), limitedByContext: room < maxTokens, turnTokens };
  }

  async prepareFormat(): Promise<void> {}

  releasePrompts(): void {
    this.holdPrompts = false;
    for (const resolve of this.promptWaiters.splice(0)) resolve();
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    this.generations.push(request);
    const aborted = () => ({ text: '', stopReason: EngineStopReason.aborted, promptTokens: 0, completionTokens: 0 }) as const;
    if (this.holdPrompts) {
      await new Promise<void>((resolve) => {
        this.promptWaiters.push(resolve);
        request.signal.addEventListener('abort', () => resolve(), { once: true });
      });
    }
    if (request.signal.aborted) return aborted();
    const failAfter = this.failAfter;
    this.failAfter = undefined;
    const count = Math.min(this.replyWords, request.maxTokens);
    const pieces: string[] = [];
    for (let index = 0; index < count; index++) {
      if (failAfter !== undefined && index === failAfter) throw new Error('scripted engine failure');
      await Promise.resolve();
      if (request.signal.aborted) return { text: pieces.join(''), stopReason: EngineStopReason.aborted, promptTokens: 3, completionTokens: pieces.length };
      const piece = `${index === 0 ? '' : ' '}w${index}`;
      pieces.push(piece);
      request.onText(piece);
    }
    if (failAfter !== undefined && failAfter >= count) throw new Error('scripted engine failure');
    return { text: pieces.join(''), stopReason: count < this.replyWords ? EngineStopReason.maxTokens : EngineStopReason.endOfText, promptTokens: 3, completionTokens: count };
  }

  async dispose(): Promise<void> {}
}

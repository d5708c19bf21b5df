import type { DocumentSource } from '../../shared/protocol.js';
import type { Engine, PromptPlan, Turn } from '../engine/Engine.js';
import type { DocumentContext } from './Documents.js';

/** Retrieved chunks tried, most first, until the prompt fits. */
const RETRIEVAL_STEPS = [8, 4, 2, 1] as const;

export interface DocumentPlan {
  readonly plan: PromptPlan;
  /** The user turn as the model gets it: the message, with the quoted documents before it when any fit. */
  readonly text: string;
  readonly sources: readonly DocumentSource[];
}

/**
 * Plans the prompt with the conversation's documents in the user turn: the whole documents when
 * they fit beside the conversation (no more history left out than without them, and a reply
 * budget of at least a quarter of the context or the requested cap), else the best 8, 4, 2 or 1
 * retrieved chunks that fit so. When nothing fits, the message goes alone (no sources).
 * Throws what planPrompt throws for the message alone (it does not fit at all).
 */
export function planWithDocuments(
  engine: Pick<Engine, 'planPrompt' | 'info'>,
  history: readonly Turn[],
  message: string,
  cap: number,
  system: string | undefined,
  context: DocumentContext | undefined,
): DocumentPlan {
  const alone = engine.planPrompt(history, message, cap, system);
  if (context === undefined) return { plan: alone, text: message, sources: [] };
  const replyFloor = Math.min(alone.maxTokens, Math.floor(engine.info.contextSize / 4));
  const fits = (text: string): PromptPlan | undefined => {
    try {
      const plan = engine.planPrompt(history, text, cap, system);
      return plan.firstTurn <= alone.firstTurn && plan.maxTokens >= replyFloor ? plan : undefined;
    } catch {
      return undefined;
    }
  };
  if (context.whole !== undefined) {
    const plan = fits(context.whole.text);
    if (plan) return { plan, text: context.whole.text, sources: context.whole.sources };
  }
  for (const limit of RETRIEVAL_STEPS) {
    const candidate = context.retrieve(limit);
    if (candidate.sources.length === 0) break;
    const plan = fits(candidate.text);
    if (plan) return { plan, text: candidate.text, sources: candidate.sources };
  }
  return { plan: alone, text: message, sources: [] };
}

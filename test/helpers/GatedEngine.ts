import type { Engine, GenerateRequest, GenerateResult, PromptPlan, Turn } from '../../server/engine/Engine.js';
import { Gate } from './Gate.js';

/** The real engine with its replies' text passed through a Gate the test controls (see Gate). */
export class GatedEngine implements Engine {
  readonly gate = new Gate();

  constructor(readonly real: Engine) {}

  get info() {
    return this.real.info;
  }

  get slots() {
    return this.real.slots;
  }

  planPrompt(history: readonly Turn[], text: string, maxTokens: number): PromptPlan {
    return this.real.planPrompt(history, text, maxTokens);
  }

  generate(request: GenerateRequest): Promise<GenerateResult> {
    return this.gate.run(request, (gated) => this.real.generate(gated));
  }

  dispose(): Promise<void> {
    this.gate.open();
    return this.real.dispose();
  }
}

import type { Engine, GenerateRequest, GenerateResult, PromptPlan, ResponseFormat, Turn } from '../../server/engine/Engine.js';

/** An engine that hands everything to a real one; test wrappers override what they change. */
export class DelegatingEngine implements Engine {
  constructor(readonly real: Engine) {}

  get info() {
    return this.real.info;
  }

  get slots() {
    return this.real.slots;
  }

  planPrompt(history: readonly Turn[], text: string, maxTokens: number, system?: string): PromptPlan {
    return this.real.planPrompt(history, text, maxTokens, system);
  }

  prepareFormat(format: ResponseFormat): Promise<void> {
    return this.real.prepareFormat(format);
  }

  generate(request: GenerateRequest): Promise<GenerateResult> {
    return this.real.generate(request);
  }

  dispose(): Promise<void> {
    return this.real.dispose();
  }
}

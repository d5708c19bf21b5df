import type { GenerateRequest, GenerateResult } from '../../server/engine/Engine.js';
import { DelegatingEngine } from './DelegatingEngine.js';
import { Gate } from './Gate.js';

/** The real engine with its replies' text passed through a Gate the test controls (see Gate). */
export class GatedEngine extends DelegatingEngine {
  readonly gate = new Gate();

  override generate(request: GenerateRequest): Promise<GenerateResult> {
    return this.gate.run(request, (gated) => this.real.generate(gated));
  }

  override dispose(): Promise<void> {
    this.gate.open();
    return this.real.dispose();
  }
}

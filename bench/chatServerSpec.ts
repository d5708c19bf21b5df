import type { BenchModel } from './resolveModel.js';
import type { BenchTransport, ServerSpec } from './ServerProcess.js';

/**
 * The server the streaming, concurrency and frame benchmarks share: the same model, threads,
 * slots, context and reply length as the in-process engine they are compared with.
 */
export function chatServerSpec(model: BenchModel, transport: BenchTransport, slots: number): ServerSpec {
  return { transport, modelPath: model.path, threads: model.threads, llamaBuild: model.llamaBuild, slots, contextSize: model.contextSize, maxTokens: model.workload.maxTokens };
}

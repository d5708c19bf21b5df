import { basename } from 'node:path';
import type { LlamaEmbeddingContext, LlamaModel } from 'node-llama-cpp';
import { loadLlamaModel, type LoadLlamaModelOptions } from '../engine/loadLlamaModel.js';

/** Turns text into a vector for semantic retrieval (`--embedding-model`). */
export interface Embedder {
  /** Names the model: stored vectors made by another model are not used. */
  readonly id: string;
  embed(text: string): Promise<Float32Array>;
  /** Safe to call twice. */
  dispose(): Promise<void>;
}

/** Characters of a text given to the embedding model; a chunk is about 1,150 with its overlap. */
const MAX_EMBED_CHARS = 2000;

/**
 * An embedding model run by node-llama-cpp (`model.createEmbeddingContext()`), one text at a
 * time: requests are chained, so documents being embedded in the background and a message's
 * query never run on the context at once.
 */
export class LlamaEmbedder implements Embedder {
  private chain: Promise<unknown> = Promise.resolve();
  private disposed = false;

  private constructor(
    readonly id: string,
    private readonly model: LlamaModel,
    private readonly context: LlamaEmbeddingContext,
  ) {}

  static async load(options: Pick<LoadLlamaModelOptions, 'modelPath' | 'threads' | 'build' | 'gpu' | 'logger'>): Promise<LlamaEmbedder> {
    const { model, threads } = await loadLlamaModel({ ...options, gpuLayers: 'auto' });
    try {
      const context = await model.createEmbeddingContext({ contextSize: Math.min(2048, model.trainContextSize), threads });
      return new LlamaEmbedder(basename(options.modelPath), model, context);
    } catch (error) {
      await model.dispose();
      throw error;
    }
  }

  embed(text: string): Promise<Float32Array> {
    const run = this.chain.then(async () => {
      if (this.disposed) throw new Error('the embedding model is disposed');
      const embedding = await this.context.getEmbeddingFor(text.slice(0, MAX_EMBED_CHARS));
      return Float32Array.from(embedding.vector);
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.chain;
    await this.context.dispose();
    await this.model.dispose();
  }
}

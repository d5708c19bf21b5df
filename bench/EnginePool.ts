import { LlamaEngine } from '../server/engine/LlamaEngine.js';
import type { BenchModel } from './resolveModel.js';

/**
 * The in-process baselines: node-llama-cpp driven directly through Parley's LlamaEngine, with
 * the same model, threads, slots, context size and greedy sampling as the servers, and no
 * network, scheduler frames or JSON in between. One engine per (model, slots), loaded on first
 * use and disposed at the end of the run.
 */
export class EnginePool {
  private readonly engines = new Map<string, Promise<LlamaEngine>>();
  /** The llama.cpp binaries the engines really ran (see LlamaEngine.build). */
  readonly llamaBuilds = new Set<string>();

  get(model: BenchModel, slots: number): Promise<LlamaEngine> {
    const key = `${model.path}|${slots}`;
    let engine = this.engines.get(key);
    if (engine === undefined) {
      engine = LlamaEngine.load({
        modelPath: model.path,
        demo: false,
        threads: model.threads,
        slots,
        contextSize: model.contextSize,
        temperature: 0,
        build: model.llamaBuild,
      });
      engine.then((loaded) => this.llamaBuilds.add(loaded.build), () => this.engines.delete(key));
      this.engines.set(key, engine);
    }
    return engine;
  }

  /** Frees one model's engines, e.g. before the servers of the next model load theirs. */
  async release(model: BenchModel): Promise<void> {
    for (const [key, engine] of this.engines) {
      if (!key.startsWith(`${model.path}|`)) continue;
      this.engines.delete(key);
      await (await engine.catch(() => undefined))?.dispose();
    }
  }

  async disposeAll(): Promise<void> {
    const all = [...this.engines.values()];
    this.engines.clear();
    for (const engine of all) await (await engine.catch(() => undefined))?.dispose();
  }
}

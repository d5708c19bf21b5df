import type { Engine } from '../../server/engine/Engine.js';
import { LlamaBuildChoice } from '../../server/engine/LlamaBuild.js';
import { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import type { ModelFile } from '../../server/models/ModelFile.js';
import { ModelPool, type ModelPoolOptions } from '../../server/models/ModelPool.js';
import { GatedEngine } from './GatedEngine.js';

/** A pool of real models whose loads a test can hold, and whose replies pass a Gate. */
export interface HeldModelPool {
  readonly pool: ModelPool;
  /** The gated engine of each model once loaded (the latest load). */
  readonly engines: Map<string, GatedEngine>;
  /** Model ids in the order their loads started. */
  readonly loads: string[];
  /** Holds the next load of `id` until the returned function is called. */
  holdLoad(id: string): () => void;
}

/**
 * Parley's real models (llama.cpp, one thread, greedy) behind a ModelPool: the first file is the
 * default, 2 slots of 1,024 tokens each, room for 2 models and 4 GiB. A test that needs a load to
 * be still in progress holds it, however fast the machine is.
 */
export function heldModelPool(files: readonly ModelFile[], overrides: Partial<ModelPoolOptions> = {}): HeldModelPool {
  const engines = new Map<string, GatedEngine>();
  const held = new Map<string, Promise<void>>();
  const loads: string[] = [];
  const pool = new ModelPool({
    files,
    defaultModel: files[0]?.id ?? '',
    maxLoaded: 2,
    idleMs: 0,
    memoryLimitBytes: 4096 * 1024 * 1024,
    slots: 2,
    contextSize: 1024,
    load: async (file, slots): Promise<Engine> => {
      loads.push(file.id);
      await held.get(file.id);
      held.delete(file.id);
      // `auto`: whichever llama.cpp binary this process already runs.
      const engine = new GatedEngine(
        await LlamaEngine.load({ modelPath: file.path, displayName: file.displayName, demo: file.demo, threads: 1, slots, contextSize: 1024, temperature: 0, build: LlamaBuildChoice.auto }),
      );
      engines.set(file.id, engine);
      return engine;
    },
    ...overrides,
  });
  return {
    pool,
    engines,
    loads,
    holdLoad(id) {
      let release!: () => void;
      held.set(id, new Promise<void>((resolve) => { release = resolve; }));
      return () => release();
    },
  };
}

import type { ModelInfo } from '../../shared/protocol.js';
import type { Engine } from '../engine/Engine.js';
import { modelIdOf } from '../http/modelIdOf.js';
import { ModelNotFoundError, ModelUnavailableError, ParleyError } from '../ParleyError.js';
import { estimateModelMemory, fitSlots } from './estimateModelMemory.js';
import type { ModelFile } from './ModelFile.js';

/** A loaded model held for one request: the model is not unloaded until every lease is released. */
export interface ModelLease {
  readonly id: string;
  readonly engine: Engine;
  /** Idempotent. */
  release(): void;
}

export interface AcquireOptions {
  /** Aborting it gives up the wait for a load (the acquire rejects with the signal's reason). */
  readonly signal?: AbortSignal;
  /** The request waits for the model to load, at this 1-based place among the requests waiting for it. */
  readonly onWaiting?: (position: number) => void;
}

export interface ModelPoolOptions {
  readonly files: readonly ModelFile[];
  /** The id of the model requests get when they name none; it loads at start. */
  readonly defaultModel: string;
  /** Models loaded at once, at most; the least recently used idle one is unloaded to make room. */
  readonly maxLoaded: number;
  /** A model other than the default is unloaded after this long without a request (0: never). */
  readonly idleMs: number;
  /** Bytes every loaded model together may take (estimateModelMemory); a model that cannot fit is refused before loading. */
  readonly memoryLimitBytes: number;
  /** Slots per model, at most: fewer when their contexts would not fit beside the model in the limit (fitSlots). */
  readonly slots: number;
  /** Tokens per sequence. */
  readonly contextSize: number;
  /** Loads a model file with this many slots. */
  readonly load: (file: ModelFile, slots: number) => Promise<Engine>;
  /** Engines the caller loaded and owns: served as loaded, never unloaded by the pool. */
  readonly preloaded?: ReadonlyArray<{ readonly id: string; readonly engine: Engine }>;
  readonly log?: (event: ModelPoolEvent) => void;
  readonly now?: () => number;
}

/** Told when a model's engine is ready and when it is gone (the scheduler's slots follow). */
export interface ModelPoolListener {
  loaded(id: string, engine: Engine): void;
  unloaded(id: string): void;
}

export type ModelPoolEvent =
  | { readonly kind: 'loading'; readonly id: string; readonly slots: number; readonly slotsAsked: number; readonly estimateBytes: number }
  | { readonly kind: 'loaded'; readonly id: string; readonly engine: Engine; readonly ms: number }
  | { readonly kind: 'load_failed'; readonly id: string; readonly error: unknown }
  | { readonly kind: 'unloaded'; readonly id: string; readonly why: 'idle' | 'room' | 'shutdown' };

const ModelState = { unloaded: 'unloaded', loading: 'loading', loaded: 'loaded', unloading: 'unloading' } as const;
type ModelState = (typeof ModelState)[keyof typeof ModelState];

interface Waiter {
  readonly resolve: (lease: ModelLease) => void;
  readonly reject: (error: unknown) => void;
  readonly onWaiting?: (position: number) => void;
  position: number;
  detach?: () => void;
}

interface Entry {
  readonly id: string;
  /** Absent for an engine handed in already loaded (ModelPool.single), which the pool never unloads. */
  readonly file: ModelFile | undefined;
  state: ModelState;
  engine: Engine | undefined;
  /** Slots it loads (or loaded) with, and the memory that takes. */
  slots: number;
  estimateBytes: number;
  /** Leases not yet released: queued and running requests. */
  refs: number;
  lastUsed: number;
  idleTimer: NodeJS.Timeout | undefined;
  readonly waiters: Waiter[];
  /** Settles when a load or unload in progress ends. */
  transition: Promise<void> | undefined;
}

/**
 * The models a server serves, loaded on demand.
 *
 * Invariants:
 * - A model with leases (requests queued or running on it) is never unloaded: a reply on one
 *   model is never cut because another was asked for. Loading waits for room instead.
 * - At most `maxLoaded` models are loaded or loading, and their memory estimates together stay
 *   within `memoryLimitBytes`; room is made by unloading the least recently used idle models.
 * - A model whose estimate alone exceeds the limit is refused before anything loads.
 * - Every acquire settles once: a lease, or an error (unknown model, no room ever, a failed
 *   load, the caller's abort, shutdown).
 */
export class ModelPool {
  private readonly entries = new Map<string, Entry>();
  private readonly now: () => number;
  private readonly listeners = new Set<ModelPoolListener>();
  private closed = false;

  constructor(private readonly options: ModelPoolOptions) {
    this.now = options.now ?? Date.now;
    for (const { id, engine } of options.preloaded ?? []) {
      const entry = newEntry(id, undefined, engine.slots, 0, this.now());
      entry.state = ModelState.loaded;
      entry.engine = engine;
      this.entries.set(id, entry);
    }
    for (const file of options.files) {
      if (this.entries.has(file.id)) throw new RangeError(`two models are named '${file.id}' (${this.entries.get(file.id)?.file?.path} and ${file.path}); rename one file`);
      const slots = this.slotsFor(file);
      this.entries.set(file.id, newEntry(file.id, file, slots, estimateModelMemory(file, Math.max(1, slots), options.contextSize), this.now()));
    }
    if (!this.entries.has(options.defaultModel)) throw new RangeError(`the default model '${options.defaultModel}' is not among the models served`);
  }

  /** A pool of one engine that is already loaded, owned by the caller (tests, a single model). */
  static single(engine: Engine, id: string = modelIdOf(engine.info.name)): ModelPool {
    return new ModelPool({
      files: [],
      preloaded: [{ id, engine }],
      defaultModel: id,
      maxLoaded: 1,
      idleMs: 0,
      memoryLimitBytes: Number.MAX_SAFE_INTEGER,
      slots: engine.slots,
      contextSize: engine.info.contextSize,
      load: () => Promise.reject(new Error('a single-engine pool loads nothing')),
    });
  }

  /** Follows loads and unloads; told at once of every model loaded now. */
  subscribe(listener: ModelPoolListener): void {
    this.listeners.add(listener);
    for (const entry of this.entries.values()) {
      if (entry.state === ModelState.loaded && entry.engine !== undefined) listener.loaded(entry.id, entry.engine);
    }
  }

  get defaultModel(): string {
    return this.options.defaultModel;
  }

  /** Every model served, the default first, then by id; `runtime` only for loaded ones. */
  list(): ModelInfo[] {
    const entries = [...this.entries.values()].sort((a, b) => (a.id === this.defaultModel ? -1 : b.id === this.defaultModel ? 1 : a.id.localeCompare(b.id)));
    return entries.map((entry) => this.describe(entry));
  }

  /** One model as `list` shows it. */
  info(id: string): ModelInfo {
    const entry = this.entries.get(id);
    if (entry === undefined) throw new ModelNotFoundError(id, [...this.entries.keys()]);
    return this.describe(entry);
  }

  private describe(entry: Entry): ModelInfo {
    const engine = entry.state === ModelState.loaded ? entry.engine : undefined;
    const file = entry.file;
    const contextSize = engine?.info.contextSize ?? (file && file.trainContextSize > 0 ? Math.min(this.options.contextSize, file.trainContextSize) : this.options.contextSize);
    const runtime = engine?.info.runtime;
    return {
      id: entry.id,
      // A file says what it is; an engine handed in says so itself.
      name: file?.displayName ?? engine?.info.name ?? entry.id,
      demo: file?.demo ?? engine?.info.demo ?? false,
      contextSize,
      loaded: engine !== undefined,
      ...(runtime === undefined ? {} : { runtime }),
    };
  }

  /** The model's id if served; ModelNotFoundError otherwise. */
  resolve(id: string): string {
    if (this.entries.has(id)) return id;
    throw new ModelNotFoundError(id, [...this.entries.keys()]);
  }

  served(id: string): boolean {
    return this.entries.has(id);
  }

  /** The loaded engine of a model, if it is loaded now (no lease: for listings). */
  loadedEngine(id: string): Engine | undefined {
    const entry = this.entries.get(id);
    return entry?.state === ModelState.loaded ? entry.engine : undefined;
  }

  /**
   * Loads the default model (at start, so a bad default fails the start) and rejects with the
   * loader's own error, not the one requests get, so the start can exit with its code.
   */
  async loadDefault(): Promise<Engine> {
    try {
      const lease = await this.acquire(this.defaultModel);
      lease.release();
      return lease.engine;
    } catch (error) {
      throw error instanceof ModelUnavailableError && error.cause !== undefined ? error.cause : error;
    }
  }

  /**
   * A lease on the model, loading it first when needed. Resolves at once for a loaded model; a
   * request for one that is loading, or waiting for room, waits its turn (see onWaiting).
   */
  acquire(id: string, options: AcquireOptions = {}): Promise<ModelLease> {
    if (this.closed) return Promise.reject(new ModelUnavailableError('The server is shutting down.'));
    const entry = this.entries.get(id);
    if (entry === undefined) return Promise.reject(new ModelNotFoundError(id, [...this.entries.keys()]));
    if (entry.state === ModelState.loaded && entry.engine !== undefined) return Promise.resolve(this.lease(entry));
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    if (entry.estimateBytes > this.options.memoryLimitBytes || entry.slots < 1) return Promise.reject(this.tooLarge(entry));
    return new Promise<ModelLease>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, onWaiting: options.onWaiting, position: 0 };
      entry.waiters.push(waiter);
      const signal = options.signal;
      if (signal !== undefined) {
        const onAbort = () => {
          const index = entry.waiters.indexOf(waiter);
          if (index < 0) return;
          entry.waiters.splice(index, 1);
          this.reportPositions(entry);
          reject(signal.reason);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.reportPositions(entry);
      this.pump();
    });
  }

  /** Unloads every model this pool loaded, after their leases end; later acquires are refused. */
  async close(): Promise<void> {
    this.closed = true;
    for (const entry of this.entries.values()) {
      clearTimeout(entry.idleTimer);
      for (const waiter of entry.waiters.splice(0)) {
        waiter.detach?.();
        waiter.reject(new ModelUnavailableError('The server is shutting down.'));
      }
    }
    await Promise.all([...this.entries.values()].map((entry) => entry.transition));
    await Promise.all([...this.entries.values()].filter((entry) => entry.file !== undefined && entry.state === ModelState.loaded).map((entry) => this.unload(entry, 'shutdown')));
  }

  private slotsFor(file: ModelFile): number {
    const { slots, contextSize, memoryLimitBytes } = this.options;
    return fitSlots(file, slots, contextSize, memoryLimitBytes);
  }

  private tooLarge(entry: Entry): ParleyError {
    const mib = (bytes: number) => Math.ceil(bytes / (1024 * 1024));
    const need = entry.slots < 1 && entry.file !== undefined ? estimateModelMemory(entry.file, 1, this.options.contextSize) : entry.estimateBytes;
    return new ModelUnavailableError(
      `The model '${entry.id}' needs about ${mib(need)} MiB with its contexts, more than the ${mib(this.options.memoryLimitBytes)} MiB this server allows models (--model-memory-mib).`,
    );
  }

  private lease(entry: Entry): ModelLease {
    entry.refs++;
    entry.lastUsed = this.now();
    clearTimeout(entry.idleTimer);
    entry.idleTimer = undefined;
    const engine = entry.engine as Engine;
    let released = false;
    return {
      id: entry.id,
      engine,
      release: () => {
        if (released) return;
        released = true;
        entry.refs--;
        entry.lastUsed = this.now();
        if (entry.refs === 0) {
          this.armIdleTimer(entry);
          this.pump();
        }
      },
    };
  }

  private armIdleTimer(entry: Entry): void {
    if (this.options.idleMs <= 0 || entry.id === this.defaultModel || entry.file === undefined || this.closed) return;
    clearTimeout(entry.idleTimer);
    entry.idleTimer = setTimeout(() => {
      entry.idleTimer = undefined;
      if (entry.state === ModelState.loaded && entry.refs === 0) void this.unload(entry, 'idle');
    }, this.options.idleMs);
    entry.idleTimer.unref();
  }

  private reportPositions(entry: Entry): void {
    entry.waiters.forEach((waiter, index) => {
      if (waiter.position !== index + 1) {
        waiter.position = index + 1;
        waiter.onWaiting?.(index + 1);
      }
    });
  }

  /** Starts the loads that have waiters and room, unloading idle models to make room. */
  private pump(): void {
    if (this.closed) return;
    for (const entry of this.entries.values()) {
      if (entry.waiters.length === 0 || entry.state !== ModelState.unloaded) continue;
      const others = [...this.entries.values()].filter((other) => other !== entry && other.state !== ModelState.unloaded);
      const fits = (set: Entry[]) =>
        set.length < this.options.maxLoaded && set.reduce((sum, other) => sum + other.estimateBytes, 0) + entry.estimateBytes <= this.options.memoryLimitBytes;
      // Unload the least recently used idle models until the load fits, or wait for one to go idle.
      const idle = others.filter((other) => other.state === ModelState.loaded && other.refs === 0 && other.file !== undefined).sort((a, b) => a.lastUsed - b.lastUsed);
      const staying = [...others];
      const evict: Entry[] = [];
      while (!fits(staying) && idle.length > 0) {
        const victim = idle.shift() as Entry;
        evict.push(victim);
        staying.splice(staying.indexOf(victim), 1);
      }
      if (!fits(staying)) continue;
      for (const victim of evict) void this.unload(victim, 'room');
      void this.load(entry, evict);
    }
  }

  private async load(entry: Entry, evicting: readonly Entry[]): Promise<void> {
    const file = entry.file as ModelFile;
    entry.state = ModelState.loading;
    let settle!: () => void;
    entry.transition = new Promise((resolve) => { settle = resolve; });
    const started = this.now();
    try {
      // Room first: the evicted models' memory is free before this one takes its own.
      await Promise.all(evicting.map((victim) => victim.transition));
      this.options.log?.({ kind: 'loading', id: entry.id, slots: entry.slots, slotsAsked: this.options.slots, estimateBytes: entry.estimateBytes });
      const engine = await this.options.load(file, entry.slots);
      if (this.closed) {
        await engine.dispose();
        throw new ModelUnavailableError('The server is shutting down.');
      }
      entry.engine = engine;
      entry.state = ModelState.loaded;
      entry.lastUsed = this.now();
      for (const listener of this.listeners) listener.loaded(entry.id, engine);
      this.options.log?.({ kind: 'loaded', id: entry.id, engine, ms: this.now() - started });
      for (const waiter of entry.waiters.splice(0)) {
        waiter.detach?.();
        waiter.resolve(this.lease(entry));
      }
      if (entry.refs === 0) this.armIdleTimer(entry);
    } catch (error) {
      entry.state = ModelState.unloaded;
      entry.engine = undefined;
      this.options.log?.({ kind: 'load_failed', id: entry.id, error });
      const failure = error instanceof ParleyError ? error : new ModelUnavailableError(`The model '${entry.id}' failed to load; the server log says why.`, error);
      for (const waiter of entry.waiters.splice(0)) {
        waiter.detach?.();
        waiter.reject(failure);
      }
    } finally {
      entry.transition = undefined;
      settle();
      this.pump();
    }
  }

  private async unload(entry: Entry, why: 'idle' | 'room' | 'shutdown'): Promise<void> {
    if (entry.state !== ModelState.loaded || entry.refs > 0 || entry.file === undefined) return;
    clearTimeout(entry.idleTimer);
    entry.idleTimer = undefined;
    entry.state = ModelState.unloading;
    const engine = entry.engine as Engine;
    let settle!: () => void;
    entry.transition = new Promise((resolve) => { settle = resolve; });
    for (const listener of this.listeners) listener.unloaded(entry.id);
    try {
      await engine.dispose();
    } finally {
      entry.engine = undefined;
      entry.state = ModelState.unloaded;
      entry.transition = undefined;
      settle();
      this.options.log?.({ kind: 'unloaded', id: entry.id, why });
      this.pump();
    }
  }
}

function newEntry(id: string, file: ModelFile | undefined, slots: number, estimateBytes: number, now: number): Entry {
  return { id, file, state: ModelState.unloaded, engine: undefined, slots, estimateBytes, refs: 0, lastUsed: now, idleTimer: undefined, waiters: [], transition: undefined };
}

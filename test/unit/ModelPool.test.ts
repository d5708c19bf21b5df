import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Engine } from '../../server/engine/Engine.js';
import { estimateModelMemory, fitSlots } from '../../server/models/estimateModelMemory.js';
import type { ModelFile } from '../../server/models/ModelFile.js';
import { ModelPool, type ModelPoolOptions } from '../../server/models/ModelPool.js';
import { ModelNotFoundError, ModelUnavailableError } from '../../server/ParleyError.js';
import { ScriptedEngine } from '../helpers/ScriptedEngine.js';

const MiB = 1024 * 1024;

function file(id: string, fileBytes = 10 * MiB): ModelFile {
  return { id, displayName: id.toUpperCase(), path: `/models/${id}.gguf`, demo: false, fileBytes, trainContextSize: 4096, kvBytesPerToken: 1024 };
}

/** A pool over scripted engines whose loads a test completes by hand (`finishLoad`). */
function setup(overrides: Partial<ModelPoolOptions> = {}, files: ModelFile[] = [file('a'), file('b'), file('c')]) {
  const loads: string[] = [];
  const disposed: string[] = [];
  const pending = new Map<string, { resolve: (engine: Engine) => void; reject: (error: unknown) => void }>();
  let autoLoad = true;
  const pool = new ModelPool({
    files,
    defaultModel: files[0]?.id ?? 'a',
    maxLoaded: 2,
    idleMs: 0,
    memoryLimitBytes: 1024 * MiB,
    slots: 2,
    contextSize: 1024,
    load: (model, slots) => {
      loads.push(model.id);
      const engine = new ScriptedEngine(slots);
      const original = engine.dispose.bind(engine);
      engine.dispose = async () => {
        disposed.push(model.id);
        await original();
      };
      if (autoLoad) return Promise.resolve(engine);
      return new Promise<Engine>((resolve, reject) => pending.set(model.id, { resolve: () => resolve(engine), reject }));
    },
    ...overrides,
  });
  return {
    pool,
    loads,
    disposed,
    holdLoads() {
      autoLoad = false;
    },
    finishLoad(id: string) {
      const load = pending.get(id);
      assert.ok(load, `${id} is not loading`);
      pending.delete(id);
      load.resolve(undefined as unknown as Engine);
    },
    failLoad(id: string, error: unknown) {
      const load = pending.get(id);
      assert.ok(load, `${id} is not loading`);
      pending.delete(id);
      load.reject(error);
    },
  };
}

function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

describe('ModelPool', () => {
  test('a model loads on first use; requests during the load share it and are told their places', async () => {
    const { pool, loads, holdLoads, finishLoad } = setup();
    holdLoads();
    const places: number[][] = [[], []];
    const first = pool.acquire('b', { onWaiting: (position) => places[0]?.push(position) });
    const second = pool.acquire('b', { onWaiting: (position) => places[1]?.push(position) });
    await settle();
    assert.deepEqual(loads, ['b']);
    assert.deepEqual(places, [[1], [2]]);
    assert.equal(pool.info('b').loaded, false);
    finishLoad('b');
    const [leaseA, leaseB] = await Promise.all([first, second]);
    assert.equal(leaseA.engine, leaseB.engine);
    assert.equal(pool.info('b').loaded, true);
    // Loaded: the next request gets it at once, with no wait reported.
    const third = await pool.acquire('b', { onWaiting: () => assert.fail('no wait for a loaded model') });
    assert.equal(third.engine, leaseA.engine);
    assert.deepEqual(loads, ['b']);
  });

  test('an unknown model is refused with model_not_found, naming what is served', async () => {
    const { pool } = setup();
    await assert.rejects(pool.acquire('gpt-4o'), (error: unknown) => error instanceof ModelNotFoundError && /'a', 'b', 'c'/.test(error.message));
    assert.throws(() => pool.resolve('nope'), ModelNotFoundError);
    assert.equal(pool.resolve('c'), 'c');
  });

  test('at the limit of loaded models, the least recently used idle one is unloaded to make room', async () => {
    const { pool, loads, disposed } = setup({ maxLoaded: 2 });
    (await pool.acquire('a')).release();
    (await pool.acquire('b')).release();
    // a is used again, so b is now the least recently used.
    await new Promise((resolve) => setTimeout(resolve, 2));
    (await pool.acquire('a')).release();
    (await pool.acquire('c')).release();
    assert.deepEqual(loads, ['a', 'b', 'c']);
    assert.deepEqual(disposed, ['b']);
    assert.deepEqual(pool.list().filter((model) => model.loaded).map((model) => model.id), ['a', 'c']);
  });

  test("a model with requests is never unloaded: another model's load waits for it to go idle", async () => {
    const { pool, loads, disposed } = setup({ maxLoaded: 1 });
    const running = await pool.acquire('a');
    const places: number[] = [];
    let loaded = false;
    const waiting = pool.acquire('b', { onWaiting: (position) => places.push(position) }).then((lease) => {
      loaded = true;
      return lease;
    });
    await settle();
    assert.equal(loaded, false);
    assert.deepEqual(loads, ['a']);
    assert.deepEqual(disposed, []);
    assert.deepEqual(places, [1]);
    running.release();
    const lease = await waiting;
    assert.equal(lease.id, 'b');
    assert.deepEqual(disposed, ['a']);
    assert.deepEqual(loads, ['a', 'b']);
  });

  test('a model that cannot fit in the memory limit is refused before anything loads', async () => {
    const big = file('big', 900 * MiB);
    const { pool, loads } = setup({ memoryLimitBytes: 500 * MiB }, [file('a'), big]);
    await assert.rejects(pool.acquire('big'), (error: unknown) => error instanceof ModelUnavailableError && error.code === 'model_unavailable' && /needs about \d+ MiB.*500 MiB/.test(error.message));
    assert.deepEqual(loads, []);
  });

  test('models that fit alone but not together: the idle one makes room', async () => {
    const { pool, disposed } = setup({ memoryLimitBytes: 300 * MiB, maxLoaded: 4 }, [file('a', 200 * MiB), file('b', 200 * MiB)]);
    (await pool.acquire('a')).release();
    (await pool.acquire('b')).release();
    assert.deepEqual(disposed, ['a']);
  });

  test('slots shrink to what fits in the memory limit', () => {
    const model = file('a', 100 * MiB);
    const one = estimateModelMemory(model, 1, 1024);
    const perSlot = estimateModelMemory(model, 2, 1024) - one;
    assert.equal(perSlot, 1024 * 1024, 'kv bytes per token × tokens per sequence');
    assert.equal(fitSlots(model, 8, 1024, one + 2 * perSlot), 3);
    assert.equal(fitSlots(model, 8, 1024, one - 1), 0);
    assert.equal(fitSlots(model, 8, 1024, Number.MAX_SAFE_INTEGER), 8);
  });

  test('a failed load refuses its waiters with model_unavailable, and the next request tries again', async () => {
    const { pool, loads, holdLoads, failLoad, finishLoad } = setup();
    holdLoads();
    const waiting = pool.acquire('b');
    await settle();
    failLoad('b', new Error('Cannot load model: bad tensor'));
    await assert.rejects(waiting, (error: unknown) => error instanceof ModelUnavailableError && /failed to load/.test(error.message));
    assert.equal(pool.info('b').loaded, false);
    const retry = pool.acquire('b');
    await settle();
    finishLoad('b');
    assert.equal((await retry).id, 'b');
    assert.deepEqual(loads, ['b', 'b']);
  });

  test("loading the default model at start fails with the loader's own error (the start's exit code depends on it)", async () => {
    class GpuMissing extends Error {}
    const { pool } = setup({ load: () => Promise.reject(new GpuMissing('--gpu cuda was requested but ...')) });
    await assert.rejects(pool.loadDefault(), GpuMissing);
  });

  test('a request that gives up while waiting is let go at once; the others keep their places', async () => {
    const { pool, holdLoads, finishLoad } = setup();
    holdLoads();
    const controller = new AbortController();
    const gone = pool.acquire('b', { signal: controller.signal });
    const places: number[] = [];
    const staying = pool.acquire('b', { onWaiting: (position) => places.push(position) });
    controller.abort('cancel');
    await assert.rejects(gone, (reason: unknown) => reason === 'cancel');
    assert.deepEqual(places, [2, 1]);
    await settle();
    finishLoad('b');
    assert.equal((await staying).id, 'b');
  });

  test('idle models other than the default unload after the idle time', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const { pool, disposed } = setup({ idleMs: 60_000, maxLoaded: 3 });
    (await pool.acquire('a')).release();
    const lease = await pool.acquire('b');
    t.mock.timers.tick(120_000);
    await settle();
    assert.deepEqual(disposed, [], 'b is in use, a is the default');
    lease.release();
    t.mock.timers.tick(59_000);
    await settle();
    assert.deepEqual(disposed, []);
    t.mock.timers.tick(1_000);
    await settle();
    assert.deepEqual(disposed, ['b']);
    assert.deepEqual(pool.list().map((model) => [model.id, model.loaded]), [['a', true], ['b', false], ['c', false]]);
  });

  test('close unloads what the pool loaded and refuses later requests', async () => {
    const { pool, disposed } = setup();
    (await pool.acquire('a')).release();
    (await pool.acquire('b')).release();
    await pool.close();
    assert.deepEqual(disposed.sort(), ['a', 'b']);
    await assert.rejects(pool.acquire('a'), ModelUnavailableError);
  });

  test('a pool of one preloaded engine serves it under its id and never disposes it', async () => {
    const engine = new ScriptedEngine(3);
    let disposed = false;
    engine.dispose = async () => {
      disposed = true;
    };
    const pool = ModelPool.single(engine);
    assert.equal(pool.defaultModel, 'scripted');
    assert.equal((await pool.acquire('scripted')).engine, engine);
    assert.deepEqual(pool.list().map(({ id, loaded }) => ({ id, loaded })), [{ id: 'scripted', loaded: true }]);
    await pool.close();
    assert.equal(disposed, false);
  });

  test('two files with the same id cannot be served together', () => {
    assert.throws(() => setup({}, [file('a'), { ...file('a'), path: '/elsewhere/a.gguf' }]), /two models are named 'a'/);
  });
});

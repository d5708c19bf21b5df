import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { GpuBackend, LlamaDevice } from '../../server/engine/GpuChoice.js';
import { GpuUnavailableError } from '../../server/engine/GpuUnavailableError.js';
import { selectLlamaDevice, type LlamaDeviceLoaders } from '../../server/engine/selectLlamaDevice.js';

/**
 * A machine described by what node-llama-cpp would find: the backends it has drivers for, the
 * ones the platform can run, and the GPU binaries that load. Records every binary loaded.
 */
function machine(options: { supported: LlamaDevice[]; valid?: LlamaDevice[]; loads?: GpuBackend[] }): { load: LlamaDeviceLoaders<string>; tried: string[] } {
  const tried: string[] = [];
  return {
    tried,
    load: {
      supported: async () => options.supported,
      valid: async () => options.valid ?? ['cuda', 'vulkan', false],
      gpu: async (backend) => {
        tried.push(backend);
        if (!(options.loads ?? []).includes(backend)) throw new Error('NoBinaryFoundError');
        return `${backend} binary`;
      },
      cpu: async () => {
        tried.push('cpu');
        return 'cpu binary';
      },
    },
  };
}

describe('selectLlamaDevice', () => {
  test('auto on a machine without a GPU runs on the CPU, says so, and loads no GPU binary', async () => {
    const { load, tried } = machine({ supported: [false] });
    const selected = await selectLlamaDevice('auto', load);
    assert.deepEqual(selected, { device: false, llama: 'cpu binary', reason: 'no GPU found' });
    assert.deepEqual(tried, ['cpu']);
  });

  test('auto runs the best backend found and loads nothing else', async () => {
    const { load, tried } = machine({ supported: ['cuda', 'vulkan', false], loads: ['cuda', 'vulkan'] });
    const selected = await selectLlamaDevice('auto', load);
    assert.equal(selected.device, 'cuda');
    assert.equal(selected.llama, 'cuda binary');
    assert.deepEqual(tried, ['cuda']);
  });

  test('auto falls through to the next backend, then to the CPU, naming why each GPU binary failed', async () => {
    const vulkan = machine({ supported: ['cuda', 'vulkan', false], loads: ['vulkan'] });
    assert.equal((await selectLlamaDevice('auto', vulkan.load)).device, 'vulkan');
    assert.deepEqual(vulkan.tried, ['cuda', 'vulkan']);

    const none = machine({ supported: ['cuda', false] });
    const selected = await selectLlamaDevice('auto', none.load);
    assert.equal(selected.device, false);
    assert.match(selected.reason, /no GPU binary loads \(cuda: NoBinaryFoundError\)/);
    assert.deepEqual(none.tried, ['cuda', 'cpu']);
  });

  test('auto with a CPU-only reason (the native build) never looks for a GPU', async () => {
    const { load, tried } = machine({ supported: ['cuda', false], loads: ['cuda'] });
    const selected = await selectLlamaDevice('auto', load, '--llama-build native is a CPU build');
    assert.deepEqual(selected, { device: false, llama: 'cpu binary', reason: '--llama-build native is a CPU build' });
    assert.deepEqual(tried, ['cpu']);
  });

  test('off runs on the CPU even where a GPU would load', async () => {
    const { load, tried } = machine({ supported: ['cuda', false], loads: ['cuda'] });
    assert.deepEqual(await selectLlamaDevice('off', load), { device: false, llama: 'cpu binary', reason: '--gpu off' });
    assert.deepEqual(tried, ['cpu']);
  });

  test('a named backend that loads runs', async () => {
    const { load, tried } = machine({ supported: ['cuda', 'vulkan', false], loads: ['cuda', 'vulkan'] });
    assert.equal((await selectLlamaDevice('vulkan', load)).device, 'vulkan');
    assert.deepEqual(tried, ['vulkan']);
  });

  /** Asserts a GpuUnavailableError whose one-line message matches `reason` and names both ways out. */
  async function assertRefused(promise: Promise<unknown>, reason: RegExp): Promise<void> {
    await assert.rejects(promise, (error: unknown) => {
      assert.ok(error instanceof GpuUnavailableError, String(error));
      assert.equal(error.code, 'gpu_unavailable');
      assert.match(error.message, reason);
      assert.match(error.message, /use --gpu auto or --gpu off$/);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    });
  }

  test('a named backend the machine lacks fails with GpuUnavailableError naming what is missing, never falling back to the CPU', async () => {
    const { load, tried } = machine({ supported: [false] });
    await assertRefused(selectLlamaDevice('cuda', load), /^--gpu cuda was requested but this machine has no NVIDIA driver/);
    await assertRefused(selectLlamaDevice('vulkan', load), /^--gpu vulkan was requested but this machine has no Vulkan loader/);
    assert.deepEqual(tried, ['cuda', 'vulkan']);
  });

  test('a named backend whose drivers are present but whose binary fails says the binary does not load, and why', async () => {
    const { load } = machine({ supported: ['cuda', false] });
    await assertRefused(selectLlamaDevice('cuda', load), /^--gpu cuda was requested but its binary does not load \(NoBinaryFoundError\)/);
  });

  test('metal where the platform cannot run it fails before loading anything', async () => {
    const { load, tried } = machine({ supported: [false], valid: ['cuda', 'vulkan', false] });
    await assertRefused(selectLlamaDevice('metal', load), /Metal runs only on Macs with Apple silicon/);
    assert.deepEqual(tried, []);
  });

  test('a named backend with a CPU-only reason fails with that reason', async () => {
    const { load, tried } = machine({ supported: ['cuda', false], loads: ['cuda'] });
    await assertRefused(selectLlamaDevice('cuda', load, '--llama-build native is a CPU build'), /--llama-build native is a CPU build/);
    assert.deepEqual(tried, []);
  });
});

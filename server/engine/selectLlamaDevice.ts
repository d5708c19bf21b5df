import { GpuChoice, isGpuBackend, type GpuBackend, type LlamaDevice } from './GpuChoice.js';
import { GpuUnavailableError } from './GpuUnavailableError.js';

export interface LlamaDeviceLoaders<T> {
  /**
   * The backends whose drivers and libraries this machine has, best first (node-llama-cpp's
   * `getLlamaGpuTypes('supported')`: file checks only, no binary is loaded).
   */
  readonly supported: () => Promise<readonly LlamaDevice[]>;
  /** The backends this OS and architecture can run at all (`getLlamaGpuTypes('allValid')`). */
  readonly valid: () => Promise<readonly LlamaDevice[]>;
  /** Loads node-llama-cpp's binary for `backend`; rejects when it does not load or runs another backend. */
  readonly gpu: (backend: GpuBackend) => Promise<T>;
  /** Loads a CPU binary (see selectLlamaBuild). */
  readonly cpu: () => Promise<T>;
}

export interface SelectedLlamaDevice<T> {
  readonly device: LlamaDevice;
  readonly llama: T;
  /** Why this device, for the startup log. */
  readonly reason: string;
}

/**
 * Picks the backend llama.cpp computes with. `off` never looks for a GPU. `auto` tries each GPU
 * backend the machine has drivers for, best first, and runs on the CPU when there is none or none
 * loads (a machine without a GPU loads no GPU binary at all, so it starts exactly as with `off`).
 * `cpuOnly` (a reason) makes `auto` skip the search: the native build is a CPU build. A named
 * backend must load, or GpuUnavailableError says why, without falling back to the CPU: a silent
 * fallback is what the operator asked not to get.
 */
export async function selectLlamaDevice<T>(choice: GpuChoice, load: LlamaDeviceLoaders<T>, cpuOnly?: string): Promise<SelectedLlamaDevice<T>> {
  if (choice === GpuChoice.off) return { device: false, llama: await load.cpu(), reason: '--gpu off' };
  if (choice === GpuChoice.auto) {
    if (cpuOnly !== undefined) return { device: false, llama: await load.cpu(), reason: cpuOnly };
    const found = (await load.supported()).filter(isGpuBackend);
    if (found.length === 0) return { device: false, llama: await load.cpu(), reason: 'no GPU found' };
    const failures: string[] = [];
    for (const backend of found) {
      try {
        return { device: backend, llama: await load.gpu(backend), reason: `${backend} found` };
      } catch (error) {
        failures.push(`${backend}: ${oneLine(error)}`);
      }
    }
    return { device: false, llama: await load.cpu(), reason: `no GPU binary loads (${failures.join('; ')})` };
  }
  const refuse = (why: string) => new GpuUnavailableError(`--gpu ${choice} was requested but ${why}; use --gpu auto or --gpu off`);
  if (cpuOnly !== undefined) throw refuse(cpuOnly);
  if (!(await load.valid()).includes(choice)) {
    throw refuse(choice === GpuChoice.metal ? 'Metal runs only on Macs with Apple silicon' : `node-llama-cpp has no ${choice} binary for this platform`);
  }
  try {
    return { device: choice, llama: await load.gpu(choice), reason: 'requested' };
  } catch (error) {
    if (!(await load.supported()).includes(choice)) throw refuse(`this machine has no ${MISSING[choice]}`);
    throw refuse(`its binary does not load (${oneLine(error)})`);
  }
}

/** What node-llama-cpp looks for before it tries each backend (detectAvailableComputeLayers). */
const MISSING: Readonly<Record<GpuBackend, string>> = {
  metal: 'Metal',
  cuda: 'NVIDIA driver with the CUDA runtime (libcuda, libcudart, libcublas)',
  vulkan: 'Vulkan loader (libvulkan)',
};

function oneLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/\s*\n\s*/g, ' ').trim().slice(0, 300);
}

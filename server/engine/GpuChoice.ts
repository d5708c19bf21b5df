/** The GPU backends node-llama-cpp ships binaries for. */
export const GpuBackend = { metal: 'metal', cuda: 'cuda', vulkan: 'vulkan' } as const;
export type GpuBackend = (typeof GpuBackend)[keyof typeof GpuBackend];

/**
 * What the operator asks for (`--gpu`): `auto` runs the best GPU backend whose drivers this
 * machine has and whose binary loads, else the CPU; a backend name insists on that backend and
 * fails without it (GpuUnavailableError); `off` runs on the CPU.
 */
export const GpuChoice = { auto: 'auto', ...GpuBackend, off: 'off' } as const;
export type GpuChoice = (typeof GpuChoice)[keyof typeof GpuChoice];

/**
 * Model layers to offload (`--gpu-layers`): `auto` is node-llama-cpp's fit to the free VRAM,
 * `max` every layer (the load fails when they do not fit), a number that many (capped at the
 * model's layer count). Ignored on the CPU.
 */
export type GpuLayersChoice = 'auto' | 'max' | number;

/** The backend llama.cpp computes with: a GPU backend, or `false` for the CPU (node-llama-cpp's `llama.gpu`). */
export type LlamaDevice = GpuBackend | false;

export function isGpuBackend(value: unknown): value is GpuBackend {
  return typeof value === 'string' && Object.hasOwn(GpuBackend, value);
}

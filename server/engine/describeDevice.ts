import type { LlamaDevice } from './GpuChoice.js';

/**
 * Where the model runs, in the startup log's words: the backend and the layers it holds, or
 * plainly that the model runs on the CPU, and why.
 */
export function describeDevice(runtime: { readonly device: LlamaDevice; readonly deviceReason: string; readonly gpuLayers: number; readonly totalLayers: number }): string {
  if (runtime.device === false) return `gpu: false, the model runs on the CPU (${runtime.deviceReason})`;
  if (runtime.gpuLayers === 0) return `gpu: ${runtime.device}, but no layer is offloaded (--gpu-layers 0, or too little free VRAM): the model runs on the CPU`;
  return `gpu: ${runtime.device}, ${runtime.gpuLayers} of ${runtime.totalLayers} layers offloaded`;
}

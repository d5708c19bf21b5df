/** `--gpu metal|cuda|vulkan` was asked for, and that backend does not run on this machine. */
export class GpuUnavailableError extends Error {
  override name = 'GpuUnavailableError';
  readonly code = 'gpu_unavailable' as const;
}

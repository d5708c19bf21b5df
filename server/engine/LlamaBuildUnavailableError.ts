/** `--llama-build native` was asked for, and this machine has no native llama.cpp build. */
export class LlamaBuildUnavailableError extends Error {
  override name = 'LlamaBuildUnavailableError';
  readonly code = 'llama_build_unavailable' as const;
}

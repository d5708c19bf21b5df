import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { NATIVE_CMAKE_OPTIONS } from './LlamaBuild.js';
import { withThreadpoolPatch } from './withThreadpoolPatch.js';

/**
 * Compiles llama.cpp and node-llama-cpp's addon for this machine's CPU (LlamaBuild.native), from
 * the sources node-llama-cpp bundles (no network), with Parley's thread-pool change to the addon
 * (withThreadpoolPatch), into node-llama-cpp's local build folder; progress goes to stderr. Takes
 * minutes and needs cmake and a C++ compiler. Afterwards `--llama-build auto` loads it.
 */
export async function buildNativeLlama(): Promise<{ seconds: number; systemInfo: string }> {
  const started = performance.now();
  const llama = await withThreadpoolPatch(() => getLlama({
    gpu: false,
    build: 'forceRebuild',
    cmakeOptions: { ...NATIVE_CMAKE_OPTIONS },
    logLevel: LlamaLogLevel.warn,
    progressLogs: true,
  }));
  const systemInfo = llama.systemInfo;
  await llama.dispose();
  return { seconds: (performance.now() - started) / 1000, systemInfo };
}

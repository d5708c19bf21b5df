import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { NATIVE_CMAKE_OPTIONS } from './LlamaBuild.js';

/**
 * Compiles llama.cpp for this machine's CPU (LlamaBuild.native) from the source node-llama-cpp
 * bundles, into node-llama-cpp's local build folder; progress goes to stderr. Takes minutes and
 * needs cmake and a C++ compiler. Afterwards, loadLlamaModel with `build: 'native'` loads it.
 */
export async function buildNativeLlama(): Promise<{ seconds: number; systemInfo: string }> {
  const started = performance.now();
  const llama = await getLlama({
    gpu: false,
    build: 'forceRebuild',
    cmakeOptions: { ...NATIVE_CMAKE_OPTIONS },
    logLevel: LlamaLogLevel.warn,
    progressLogs: true,
  });
  const systemInfo = llama.systemInfo;
  await llama.dispose();
  return { seconds: (performance.now() - started) / 1000, systemInfo };
}

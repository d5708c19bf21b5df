/**
 * Whether `npm install` (scripts/postinstall.ts) builds llama.cpp for this CPU, decided from
 * injected probes so the decision is testable without a toolchain or a build. Probes run
 * cheapest and most decisive first, and a probe that cannot matter is never run.
 *
 * The native build (`npm run build:llama`, LlamaBuild.native) serves the 0.5B-shape bench model at
 * 0.87-1.13× llama-server's aggregate tok/s here, and the prebuilt binary at 0.62-0.87× (README,
 * Benchmarks); so a CPU-only user gets the fast path without a manual step whenever the build can
 * be made.
 */
export const NativeBuildDecision = {
  build: 'build',
  /** PARLEY_NATIVE_BUILD=0. */
  optedOut: 'opted-out',
  /** Apple silicon: node-llama-cpp's Metal binary runs the model, and a CPU build would never load. */
  gpuPlatform: 'gpu-platform',
  /** A native build with the current options (node-llama-cpp version, cmake options, patch) loads. */
  upToDate: 'up-to-date',
  noCmake: 'no-cmake',
  noCompiler: 'no-compiler',
} as const;
export type NativeBuildDecision = (typeof NativeBuildDecision)[keyof typeof NativeBuildDecision];

export interface NativeBuildProbes {
  /** The value of PARLEY_NATIVE_BUILD, if set. */
  readonly optOut: string | undefined;
  readonly platform: NodeJS.Platform;
  readonly arch: string;
  /** Whether cmake runs (`cmake --version`). */
  readonly hasCmake: () => Promise<boolean>;
  /** Whether a C++ compiler runs; its name, or undefined. */
  readonly findCompiler: () => Promise<string | undefined>;
  /** Whether the native build with NATIVE_CMAKE_OPTIONS is on disk and loads. */
  readonly nativeBuildLoads: () => Promise<boolean>;
}

export interface NativeBuildPlan {
  readonly decision: NativeBuildDecision;
  /** The one line `npm install` prints about it. */
  readonly message: string;
}

/** How to get the faster binary later, and what it needs. */
export const FASTER_BINARY_HINT = 'run `npm run build:llama` (needs cmake and a C++ compiler; minutes)';

const OPT_OUT_VALUES = new Set(['0', 'false', 'no', 'off']);

/** Whether PARLEY_NATIVE_BUILD asks to skip the build (`0`, `false`, `no`, `off`). */
export function isOptOut(value: string | undefined): boolean {
  return value !== undefined && OPT_OUT_VALUES.has(value.trim().toLowerCase());
}

export async function planNativeBuild(probes: NativeBuildProbes): Promise<NativeBuildPlan> {
  const prebuilt = `Parley will run on node-llama-cpp's prebuilt llama.cpp binary, which is slower on the CPU; for the faster one, ${FASTER_BINARY_HINT}`;
  if (isOptOut(probes.optOut)) {
    return { decision: NativeBuildDecision.optedOut, message: `PARLEY_NATIVE_BUILD=${probes.optOut}: not building llama.cpp for this CPU. ${prebuilt}` };
  }
  if (probes.platform === 'darwin' && probes.arch === 'arm64') {
    return { decision: NativeBuildDecision.gpuPlatform, message: "Apple silicon: Parley runs the model on Metal with node-llama-cpp's binary; no CPU build needed" };
  }
  if (await probes.nativeBuildLoads()) {
    return { decision: NativeBuildDecision.upToDate, message: 'the native llama.cpp build for this CPU is in place and loads; nothing to build' };
  }
  if (!(await probes.hasCmake())) {
    return { decision: NativeBuildDecision.noCmake, message: `no cmake found, so llama.cpp is not built for this CPU. ${prebuilt}` };
  }
  const compiler = await probes.findCompiler();
  if (compiler === undefined) {
    return { decision: NativeBuildDecision.noCompiler, message: `no C++ compiler found, so llama.cpp is not built for this CPU. ${prebuilt}` };
  }
  return {
    decision: NativeBuildDecision.build,
    message: `building llama.cpp for this CPU with cmake and ${compiler}: this takes minutes (about 5 on 2 cores); on the CPU it serves 1.1-1.7× the tokens/s of the prebuilt binary. PARLEY_NATIVE_BUILD=0 skips it.`,
  };
}

/** The line printed when the build was tried and failed; `npm install` still succeeds. */
export function buildFailedMessage(reason: string): string {
  return `the llama.cpp build failed (see the output above; ${reason.replace(/\s*\n\s*/g, ' ').trim().slice(0, 300)}). Parley will run on node-llama-cpp's prebuilt binary, which is slower on the CPU; to retry, ${FASTER_BINARY_HINT}`;
}

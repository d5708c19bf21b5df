import { THREADPOOL_PATCH_ID } from './withThreadpoolPatch.js';

/**
 * Which llama.cpp binary node-llama-cpp runs.
 *
 * - `prebuilt`: the binary shipped in @node-llama-cpp/linux-x64 (and the other platform packages).
 *   Always present. Its x86 CPU kernels are compiled by GCC 11.4 for a generic x86-64 target, and
 *   on an AMD EPYC (Zen 3) they run F16 matrix products over several tokens (prompts, and steps
 *   that batch several replies) about half as fast as the same llama.cpp source compiled here by
 *   GCC 12 for this CPU; one token at a time, which is memory-bound, runs at the same speed.
 * - `native`: llama.cpp compiled on this machine for this CPU by buildNativeLlama, which
 *   `npm install` runs when the machine has cmake and a C++ compiler (scripts/postinstall.ts) and
 *   `npm run build:llama` runs on demand: about 4 minutes on 2 cores, and no network, since
 *   node-llama-cpp ships the llama.cpp source). Kept in node-llama-cpp's local build folder
 *   under a name derived from NATIVE_CMAKE_OPTIONS, so it never replaces the prebuilt binary for
 *   other programs sharing node_modules; only a getLlama call with the same options loads it.
 */
export const LlamaBuild = { prebuilt: 'prebuilt', native: 'native' } as const;
export type LlamaBuild = (typeof LlamaBuild)[keyof typeof LlamaBuild];

/**
 * What the operator asks for (`--llama-build`): `auto` runs the native build when one exists and
 * the prebuilt binary otherwise; `native` insists on the native build and fails without it.
 */
export const LlamaBuildChoice = { auto: 'auto', ...LlamaBuild } as const;
export type LlamaBuildChoice = (typeof LlamaBuildChoice)[keyof typeof LlamaBuildChoice];

/**
 * cmake options of the native build. GGML_NATIVE is on by default for a build on the machine that
 * runs it. OpenMP is off: node-llama-cpp decodes on whichever libuv worker thread is free, and
 * libgomp keeps a separate thread team per calling thread, so teams go cold between decodes;
 * measured on 2 vCPUs, a one-token decode took 59 ms with OpenMP against 47 ms without, and 40 ms
 * with ggml's own pool kept alive per context (withThreadpoolPatch). PARLEY_THREADPOOL is not read
 * by cmake: it names the build folder (node-llama-cpp hashes the options into it), and its value
 * is the patch's id, so only a build made with this very patch is ever loaded as native, never an
 * unpatched one made with the same options by another tool, nor one made with an older patch.
 * The folder lives inside node_modules/node-llama-cpp, so another node-llama-cpp version (or a
 * fresh install of it) starts without one.
 */
export const NATIVE_CMAKE_OPTIONS: Readonly<Record<string, string>> = { GGML_OPENMP: 'OFF', PARLEY_THREADPOOL: THREADPOOL_PATCH_ID };

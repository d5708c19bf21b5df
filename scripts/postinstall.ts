/**
 * `npm install`'s last step (package.json "postinstall"): builds llama.cpp for this CPU
 * (LlamaBuild.native, the same build as `npm run build:llama`) when the machine has cmake and a
 * C++ compiler and no up-to-date native build yet, so a CPU-only user gets the fast binary
 * without a manual step. planNativeBuild decides; this file only probes and acts.
 *
 * It never fails `npm install`: whatever goes wrong, it prints one line saying Parley will run on
 * the prebuilt binary and how to get the faster one, and exits 0. The entry point of its own
 * process, so it is the one reader of process.env here (PARLEY_NATIVE_BUILD=0 skips the build).
 */
import { spawn } from 'node:child_process';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { buildFailedMessage, NativeBuildDecision, planNativeBuild, type NativeBuildProbes } from './planNativeBuild.js';

const say = (line: string) => process.stdout.write(`parley: ${line}\n`);

/** Whether `command args` starts and exits 0 within 20 s (stdio ignored; no shell). */
function runs(command: string, args: readonly string[]): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: 'ignore', windowsHide: true });
    const timer = setTimeout(() => { child.kill(); resolve(false); }, 20_000);
    child.once('error', () => { clearTimeout(timer); resolve(false); });
    child.once('exit', (code) => { clearTimeout(timer); resolve(code === 0); });
  });
}

/**
 * The compilers cmake would pick: $CXX when set, else the usual names. On Windows cmake finds
 * Visual Studio's MSVC itself, through vswhere, without cl.exe on the PATH.
 */
async function findCompiler(): Promise<string | undefined> {
  const fromEnv = process.env.CXX?.trim();
  if (fromEnv) return (await runs(fromEnv, ['--version'])) ? fromEnv : undefined;
  if (process.platform === 'win32') {
    const vswhere = join(process.env['ProgramFiles(x86)'] ?? 'C:\\Program Files (x86)', 'Microsoft Visual Studio', 'Installer', 'vswhere.exe');
    if (await access(vswhere).then(() => true, () => false)) return 'Visual Studio (MSVC)';
    for (const name of ['clang++', 'g++']) if (await runs(name, ['--version'])) return name;
    return undefined;
  }
  for (const name of ['c++', 'g++', 'clang++']) if (await runs(name, ['--version'])) return name;
  return undefined;
}

/** Loads the native build the way `--llama-build auto` does (build: 'never', same options). */
async function nativeBuildLoads(): Promise<boolean> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const { NATIVE_CMAKE_OPTIONS } = await import('../server/engine/LlamaBuild.js');
  try {
    const llama = await getLlama({
      gpu: false,
      build: 'never',
      cmakeOptions: { ...NATIVE_CMAKE_OPTIONS },
      existingPrebuiltBinaryMustMatchBuildOptions: true,
      logLevel: LlamaLogLevel.disabled,
      progressLogs: false,
      maxThreads: 1,
    });
    const native = llama.buildType === 'localBuild';
    await llama.dispose();
    return native;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const probes: NativeBuildProbes = {
    optOut: process.env.PARLEY_NATIVE_BUILD,
    platform: process.platform,
    arch: process.arch,
    hasCmake: () => runs('cmake', ['--version']),
    findCompiler,
    nativeBuildLoads,
  };
  const plan = await planNativeBuild(probes);
  say(plan.message);
  if (plan.decision !== NativeBuildDecision.build) return;
  try {
    const { buildNativeLlama } = await import('../server/engine/buildNativeLlama.js');
    const { seconds } = await buildNativeLlama();
    if (!(await nativeBuildLoads())) throw new Error('the build finished, but the binary does not load');
    say(`built llama.cpp for this CPU in ${Math.round(seconds)} s; Parley runs it (--llama-build auto, the default)`);
  } catch (error) {
    say(buildFailedMessage(error instanceof Error ? error.message : String(error)));
  }
}

try {
  await main();
} catch (error) {
  say(buildFailedMessage(error instanceof Error ? error.message : String(error)));
}
// Never fail `npm install`, and never hang it on a handle node-llama-cpp left open.
process.exit(0);

import { spawn } from 'node:child_process';
import { access, constants, mkdir, readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * llama.cpp's own tools for the benchmarks, built from the llama.cpp source node-llama-cpp
 * bundles (so the comparison runs the same commit Parley runs): `llama-server`, the reference of
 * the concurrency benchmark, and `llama-quantize`, which makes the Q4_0 bench model. Built by
 * `npm run build:llama-tools` into models/generated/ (git-ignored), one folder per
 * node-llama-cpp version; never shipped, never needed to run Parley.
 */
export const LlamaTool = { server: 'llama-server', quantize: 'llama-quantize' } as const;
export type LlamaTool = (typeof LlamaTool)[keyof typeof LlamaTool];

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const NODE_LLAMA_CPP = join(ROOT, 'node_modules', 'node-llama-cpp');
/** Where node-llama-cpp unpacks its bundled llama.cpp source when it builds (`npm install` or `npm run build:llama`). */
export const LLAMA_CPP_SOURCE = join(NODE_LLAMA_CPP, 'llama', 'llama.cpp');

export class LlamaToolsUnavailableError extends Error {
  override name = 'LlamaToolsUnavailableError';
  readonly code = 'llama_tools_unavailable' as const;
}

/** The build folder of the installed node-llama-cpp version. */
export async function llamaToolsDir(): Promise<string> {
  const manifest = JSON.parse(await readFile(join(NODE_LLAMA_CPP, 'package.json'), 'utf8')) as { version: string };
  return join(ROOT, 'models', 'generated', 'llama-tools', `node-llama-cpp-${manifest.version}`);
}

/** The path of a built tool, or undefined when `npm run build:llama-tools` has not made it. */
export async function findLlamaTool(tool: LlamaTool): Promise<string | undefined> {
  const bin = join(await llamaToolsDir(), 'bin');
  const suffix = process.platform === 'win32' ? '.exe' : '';
  for (const path of [join(bin, tool + suffix), join(bin, 'Release', tool + suffix)]) {
    if (await access(path, constants.X_OK).then(() => true, () => false)) return path;
  }
  return undefined;
}

/**
 * Configures and builds llama-server and llama-quantize (Release, no curl, tuned for this CPU as
 * llama.cpp's default GGML_NATIVE does) into <dir>/bin, where llama.cpp's CMakeLists puts every
 * program; cmake's output goes to this process's stdout and stderr.
 * About 4 minutes on 2 cores.
 */
export async function buildLlamaTools(): Promise<{ seconds: number; server: string; quantize: string }> {
  const started = performance.now();
  if (!(await access(join(LLAMA_CPP_SOURCE, 'CMakeLists.txt')).then(() => true, () => false))) {
    throw new LlamaToolsUnavailableError(`no llama.cpp source at ${LLAMA_CPP_SOURCE}: node-llama-cpp unpacks it when it builds; run \`npm run build:llama\` first`);
  }
  const dir = await llamaToolsDir();
  await mkdir(dir, { recursive: true });
  await cmake(['-S', LLAMA_CPP_SOURCE, '-B', dir, '-DLLAMA_CURL=OFF', '-DCMAKE_BUILD_TYPE=Release']);
  await cmake(['--build', dir, '--config', 'Release', '--target', LlamaTool.server, LlamaTool.quantize, '-j', String(availableParallelism())]);
  const server = await findLlamaTool(LlamaTool.server);
  const quantize = await findLlamaTool(LlamaTool.quantize);
  if (server === undefined || quantize === undefined) throw new LlamaToolsUnavailableError(`the build finished, but ${dir}/bin lacks llama-server or llama-quantize`);
  return { seconds: (performance.now() - started) / 1000, server, quantize };
}

function cmake(args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('cmake', args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', (error) => reject(new LlamaToolsUnavailableError(`cmake did not start (${error.message}): it is needed, with a C++ compiler`)));
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new LlamaToolsUnavailableError(`cmake ${args[0]} ${args[1]} exited with ${code}`))));
  });
}

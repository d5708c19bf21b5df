import { createHash } from 'node:crypto';
import { access, copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Parley's one change to node-llama-cpp's native addon, compiled only into the native build
 * (LlamaBuild.native): every context gets a persistent ggml CPU thread pool
 * (llama_attach_threadpool), as llama.cpp's own tools (llama-server, llama-cli, batched-bench)
 * set up in common_init. Without one, ggml_graph_compute creates and joins its worker threads
 * inside every graph computation, so each decode (each token of a reply) starts cold threads;
 * measured on 2 vCPUs with the 0.5B-shape F16 model, 2 threads, that made a one-token decode
 * 45-49 ms against llama.cpp's 38-39 ms with the same source and options.
 *
 * The pool follows the context's thread count (node-llama-cpp sets it before each decode) and is
 * freed with the context. Pinned to node-llama-cpp 3.21.1's addon sources: an anchor that is not
 * found fails the build with ThreadpoolPatchError rather than compiling something unknown.
 */
export class ThreadpoolPatchError extends Error {
  override name = 'ThreadpoolPatchError';
  readonly code = 'threadpool_patch_failed' as const;
}

const POOL_FUNCTION = `#include "ggml-backend.h"

// Parley: a persistent ggml CPU thread pool per context (see server/engine/withThreadpoolPatch.ts).
static void parleyAttachThreadpool(AddonContext* context) {
    const int threads = llama_n_threads(context->ctx);
    if (context->parleyThreadpool != nullptr && context->parleyThreadpoolThreads == threads) return;
    auto* cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == nullptr) return;
    auto* reg = ggml_backend_dev_backend_reg(cpu);
    auto* newPool = (ggml_threadpool* (*)(ggml_threadpool_params*)) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new");
    auto* freePool = (void (*)(ggml_threadpool*)) ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free");
    if (newPool == nullptr || freePool == nullptr) return;
    ggml_threadpool_params params = ggml_threadpool_params_default(threads);
    ggml_threadpool* pool = newPool(&params);
    if (pool == nullptr) return;
    llama_attach_threadpool(context->ctx, pool, pool);
    if (context->parleyThreadpool != nullptr) freePool((ggml_threadpool*) context->parleyThreadpool);
    context->parleyThreadpool = pool;
    context->parleyThreadpoolThreads = threads;
    context->parleyThreadpoolFree = (void (*)(void*)) freePool;
}

`;

interface Edit {
  readonly file: string;
  readonly anchor: string;
  readonly replacement: string;
}

const DECODE = '                int r = llama_decode(ctx->ctx, ctx->batch);';
const FREE = `    if (currentCtx != nullptr) {
        llama_free(currentCtx);
    }`;
const MEMBER = '        llama_context* ctx = nullptr;\n';
const WORKER = 'class AddonContextDecodeBatchWorker';

const EDITS: readonly Edit[] = [
  { file: 'AddonContext.h', anchor: MEMBER, replacement: `${MEMBER}        void* parleyThreadpool = nullptr;\n        int parleyThreadpoolThreads = 0;\n        void (*parleyThreadpoolFree)(void*) = nullptr;\n` },
  { file: 'AddonContext.cpp', anchor: WORKER, replacement: `${POOL_FUNCTION}${WORKER}` },
  { file: 'AddonContext.cpp', anchor: DECODE, replacement: `                parleyAttachThreadpool(ctx);\n${DECODE}` },
  {
    file: 'AddonContext.cpp',
    anchor: FREE,
    replacement: `${FREE}
    if (parleyThreadpool != nullptr && parleyThreadpoolFree != nullptr) {
        parleyThreadpoolFree(parleyThreadpool);
        parleyThreadpool = nullptr;
    }`,
  },
];

/**
 * Names this version of the patch: part of the native build's folder name (NATIVE_CMAKE_OPTIONS),
 * so a build made with another version of the patch is never loaded as the native build.
 */
export const THREADPOOL_PATCH_ID = createHash('sha256').update(JSON.stringify(EDITS)).digest('hex').slice(0, 12);

const BACKUP_SUFFIX = '.parley-original';

/** node-llama-cpp's addon sources, which its build compiles. */
function addonDirectory(): string {
  return join(dirname(fileURLToPath(import.meta.resolve('node-llama-cpp'))), '..', 'llama', 'addon');
}

/**
 * Runs `work` (a node-llama-cpp build) with the thread-pool change applied to the addon sources,
 * and restores them afterwards, whatever happens, so node_modules is left as npm installed it.
 * A backup left by an interrupted run is restored first.
 */
export async function withThreadpoolPatch<T>(work: () => Promise<T>, directory = addonDirectory()): Promise<T> {
  const files = [...new Set(EDITS.map((edit) => edit.file))];
  for (const file of files) await restore(join(directory, file));
  const patched = new Map<string, string>();
  for (const file of files) patched.set(file, await readFile(join(directory, file), 'utf8'));
  for (const edit of EDITS) {
    const source = patched.get(edit.file) ?? '';
    const at = source.indexOf(edit.anchor);
    if (at < 0 || source.indexOf(edit.anchor, at + 1) >= 0) {
      throw new ThreadpoolPatchError(`node-llama-cpp's ${edit.file} has changed (an anchor of Parley's thread-pool patch is missing or repeated); this patch is for node-llama-cpp 3.21.1`);
    }
    patched.set(edit.file, source.replace(edit.anchor, edit.replacement));
  }
  try {
    for (const file of files) {
      const path = join(directory, file);
      await copyFile(path, path + BACKUP_SUFFIX);
      await writeFile(path, patched.get(file) ?? '');
    }
    return await work();
  } finally {
    for (const file of files) await restore(join(directory, file));
  }
}

async function restore(path: string): Promise<void> {
  const backup = path + BACKUP_SUFFIX;
  if (!(await access(backup).then(() => true, () => false))) return;
  await copyFile(backup, path);
  await rm(backup);
}

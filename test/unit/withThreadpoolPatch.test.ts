import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ThreadpoolPatchError, withThreadpoolPatch } from '../../server/engine/withThreadpoolPatch.js';

/** A copy of node-llama-cpp's real addon sources, patched here instead of in node_modules. */
let directory: string;
let original: { cpp: string; h: string };

before(async () => {
  const addon = join(dirname(fileURLToPath(import.meta.resolve('node-llama-cpp'))), '..', 'llama', 'addon');
  directory = await mkdtemp(join(tmpdir(), 'parley-addon-'));
  for (const file of ['AddonContext.cpp', 'AddonContext.h']) await copyFile(join(addon, file), join(directory, file));
  original = { cpp: await readFile(join(directory, 'AddonContext.cpp'), 'utf8'), h: await readFile(join(directory, 'AddonContext.h'), 'utf8') };
});

after(async () => {
  await rm(directory, { recursive: true, force: true });
});

test("node-llama-cpp's addon sources are as installed (no Parley patch left in node_modules)", () => {
  assert.doesNotMatch(original.cpp, /parley/i);
  assert.doesNotMatch(original.h, /parley/i);
});

test('during the build the addon attaches a persistent thread pool before every decode and frees it with the context', async () => {
  const seen = await withThreadpoolPatch(async () => ({
    cpp: await readFile(join(directory, 'AddonContext.cpp'), 'utf8'),
    h: await readFile(join(directory, 'AddonContext.h'), 'utf8'),
  }), directory);
  assert.match(seen.cpp, /parleyAttachThreadpool\(ctx\);\n\s+int r = llama_decode\(ctx->ctx, ctx->batch\);/);
  assert.match(seen.cpp, /llama_attach_threadpool\(context->ctx, pool, pool\)/);
  assert.match(seen.cpp, /llama_free\(currentCtx\);\n\s+}\n\s+if \(parleyThreadpool != nullptr/);
  assert.match(seen.h, /void\* parleyThreadpool = nullptr;/);
  assert.equal(await readFile(join(directory, 'AddonContext.cpp'), 'utf8'), original.cpp, 'restored afterwards');
  assert.equal(await readFile(join(directory, 'AddonContext.h'), 'utf8'), original.h);
  assert.deepEqual((await readdir(directory)).sort(), ['AddonContext.cpp', 'AddonContext.h'], 'no backup left behind');
});

test('a failing build still restores the sources', async () => {
  await assert.rejects(withThreadpoolPatch(async () => { throw new Error('cmake failed'); }, directory), /cmake failed/);
  assert.equal(await readFile(join(directory, 'AddonContext.cpp'), 'utf8'), original.cpp);
  assert.equal(await readFile(join(directory, 'AddonContext.h'), 'utf8'), original.h);
});

test('a backup left by an interrupted build is restored before patching, so the patch never applies twice', async () => {
  const cpp = join(directory, 'AddonContext.cpp');
  await copyFile(cpp, `${cpp}.parley-original`);
  await writeFile(cpp, 'half-patched');
  const seen = await withThreadpoolPatch(() => readFile(cpp, 'utf8'), directory);
  assert.equal(seen.match(/static void parleyAttachThreadpool/g)?.length, 1);
  assert.equal(await readFile(cpp, 'utf8'), original.cpp);
});

test('sources from another node-llama-cpp version fail with ThreadpoolPatchError and are left untouched', async () => {
  const cpp = join(directory, 'AddonContext.cpp');
  const changed = original.cpp.replace('int r = llama_decode(ctx->ctx, ctx->batch);', 'int result = llama_decode(ctx->ctx, ctx->batch);');
  await writeFile(cpp, changed);
  let ran = false;
  await assert.rejects(withThreadpoolPatch(async () => { ran = true; }, directory), (error: unknown) => {
    assert.ok(error instanceof ThreadpoolPatchError);
    assert.match(error.message, /AddonContext\.cpp has changed/);
    return true;
  });
  assert.equal(ran, false, 'nothing is built from unknown sources');
  assert.equal(await readFile(cpp, 'utf8'), changed);
  await writeFile(cpp, original.cpp);
});

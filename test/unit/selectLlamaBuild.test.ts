import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LlamaBuildUnavailableError } from '../../server/engine/LlamaBuildUnavailableError.js';
import { selectLlamaBuild, type LlamaBuildLoaders } from '../../server/engine/selectLlamaBuild.js';

/** Loaders that record which binaries were tried; `native` fails when there is no native build. */
function loaders(hasNative: boolean): { load: LlamaBuildLoaders<string>; tried: string[] } {
  const tried: string[] = [];
  return {
    tried,
    load: {
      native: async () => {
        tried.push('native');
        if (!hasNative) throw new Error('NoBinaryFoundError');
        return 'native binary';
      },
      prebuilt: async () => {
        tried.push('prebuilt');
        return 'prebuilt binary';
      },
    },
  };
}

describe('selectLlamaBuild', () => {
  test('auto runs the native build when one loads, and never loads the prebuilt binary as well', async () => {
    const { load, tried } = loaders(true);
    const selected = await selectLlamaBuild('auto', load);
    assert.equal(selected.build, 'native');
    assert.equal(selected.llama, 'native binary');
    assert.deepEqual(tried, ['native']);
  });

  test('auto falls back to the prebuilt binary when there is no native build, and says how to make one', async () => {
    const { load, tried } = loaders(false);
    const selected = await selectLlamaBuild('auto', load);
    assert.equal(selected.build, 'prebuilt');
    assert.equal(selected.llama, 'prebuilt binary');
    assert.match(selected.reason, /npm run build:llama/);
    assert.match(selected.reason, /slower/);
    assert.match(selected.reason, /cmake and a C\+\+ compiler/);
    assert.deepEqual(tried, ['native', 'prebuilt']);
  });

  test('prebuilt never looks for a native build, even when one exists', async () => {
    const { load, tried } = loaders(true);
    const selected = await selectLlamaBuild('prebuilt', load);
    assert.equal(selected.build, 'prebuilt');
    assert.deepEqual(tried, ['prebuilt']);
  });

  test('native without a native build fails with LlamaBuildUnavailableError naming the cause and the fix, loading nothing else', async () => {
    const { load, tried } = loaders(false);
    await assert.rejects(selectLlamaBuild('native', load), (error: unknown) => {
      assert.ok(error instanceof LlamaBuildUnavailableError);
      assert.equal(error.code, 'llama_build_unavailable');
      assert.match(error.message, /NoBinaryFoundError/);
      assert.match(error.message, /npm run build:llama/);
      return true;
    });
    assert.deepEqual(tried, ['native']);
  });
});

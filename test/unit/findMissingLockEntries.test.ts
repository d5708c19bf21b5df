import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { findMissingLockEntries, type Lockfile } from '../../scripts/findMissingLockEntries.js';

const OWNER = {
  version: '3.21.1',
  optionalDependencies: { '@node-llama-cpp/linux-x64': '3.21.1', '@node-llama-cpp/mac-arm64-metal': '3.21.1' },
};

describe('findMissingLockEntries', () => {
  test('a lockfile with every optional dependency of the owner at its exact version is complete', () => {
    const lock: Lockfile = {
      packages: {
        '': {},
        'node_modules/node-llama-cpp': OWNER,
        'node_modules/@node-llama-cpp/linux-x64': { version: '3.21.1' },
        'node_modules/@node-llama-cpp/mac-arm64-metal': { version: '3.21.1' },
      },
    };
    assert.deepEqual(findMissingLockEntries(lock, ['node-llama-cpp']), []);
  });

  test("another platform's package that is missing is named, with the owner's version", () => {
    const lock: Lockfile = {
      packages: { 'node_modules/node-llama-cpp': OWNER, 'node_modules/@node-llama-cpp/linux-x64': { version: '3.21.1' } },
    };
    assert.deepEqual(findMissingLockEntries(lock, ['node-llama-cpp']), ['node-llama-cpp@3.21.1 needs @node-llama-cpp/mac-arm64-metal@3.21.1: missing from the lockfile']);
  });

  test('a platform package locked at another version than the exact one asked for is reported', () => {
    const lock: Lockfile = {
      packages: {
        'node_modules/node-llama-cpp': OWNER,
        'node_modules/@node-llama-cpp/linux-x64': { version: '3.21.1' },
        'node_modules/@node-llama-cpp/mac-arm64-metal': { version: '3.20.0' },
      },
    };
    assert.deepEqual(findMissingLockEntries(lock, ['node-llama-cpp']), [
      'node-llama-cpp@3.21.1 needs @node-llama-cpp/mac-arm64-metal@3.21.1: the lockfile has 3.20.0 at node_modules/@node-llama-cpp/mac-arm64-metal',
    ]);
  });

  test("a nested owner is resolved as Node resolves it: its own node_modules first, then its parents'", () => {
    const lock: Lockfile = {
      packages: {
        'node_modules/vite': { version: '7.3.8' },
        'node_modules/vite/node_modules/esbuild': { version: '0.28.2', optionalDependencies: { '@esbuild/linux-x64': '0.28.2', '@esbuild/darwin-arm64': '0.28.2' } },
        'node_modules/vite/node_modules/@esbuild/linux-x64': { version: '0.28.2' },
        'node_modules/@esbuild/darwin-arm64': { version: '0.28.2' },
        // A copy for another esbuild elsewhere in the tree does not count.
        'node_modules/other/node_modules/@esbuild/darwin-arm64': { version: '0.1.0' },
      },
    };
    assert.deepEqual(findMissingLockEntries(lock, ['esbuild']), []);
  });

  test('a range spec (fsevents@~2.3.2) only needs to be present', () => {
    const lock: Lockfile = {
      packages: { 'node_modules/rollup': { version: '4.69.3', optionalDependencies: { fsevents: '~2.3.2' } }, 'node_modules/fsevents': { version: '2.3.3' } },
    };
    assert.deepEqual(findMissingLockEntries(lock, ['rollup']), []);
  });

  test('an owner that is not in the lockfile at all is reported', () => {
    assert.deepEqual(findMissingLockEntries({ packages: {} }, ['@btc-vision/uwebsockets.js']), ['@btc-vision/uwebsockets.js is not in the lockfile']);
  });
});

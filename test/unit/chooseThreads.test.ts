import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseThreads, SMALL_MODEL_BYTES } from '../../server/engine/chooseThreads.js';

const MiB = 1024 * 1024;

test('the native build uses every math core, for small and large models alike', () => {
  assert.equal(chooseThreads({ build: 'native', mathCores: 2, modelBytes: 5 * MiB }).threads, 2);
  assert.equal(chooseThreads({ build: 'native', mathCores: 8, modelBytes: 4000 * MiB }).threads, 8);
});

test('the prebuilt binary gives a small model one thread and a large one every math core', () => {
  const small = chooseThreads({ build: 'prebuilt', mathCores: 8, modelBytes: SMALL_MODEL_BYTES - 1 });
  assert.equal(small.threads, 1);
  assert.match(small.reason, /small model/);
  assert.equal(chooseThreads({ build: 'prebuilt', mathCores: 8, modelBytes: SMALL_MODEL_BYTES }).threads, 8);
});

test('a machine reporting no math cores still gets one thread', () => {
  assert.equal(chooseThreads({ build: 'native', mathCores: 0, modelBytes: 900 * MiB }).threads, 1);
});

test('with layers on a GPU every math core is used, whatever the binary and model size (node-llama-cpp\'s GPU default)', () => {
  const small = chooseThreads({ build: 'prebuilt', mathCores: 8, modelBytes: 5 * MiB, gpuLayers: 3 });
  assert.equal(small.threads, 8);
  assert.match(small.reason, /GPU/);
  assert.equal(chooseThreads({ build: 'prebuilt', mathCores: 0, modelBytes: 5 * MiB, gpuLayers: 3 }).threads, 1);
});

test('no layer offloaded (the CPU, or a GPU binary holding none) keeps the CPU rules', () => {
  assert.equal(chooseThreads({ build: 'prebuilt', mathCores: 8, modelBytes: 5 * MiB, gpuLayers: 0 }).threads, 1);
  assert.equal(chooseThreads({ build: 'prebuilt', mathCores: 8, modelBytes: 5 * MiB }).threads, 1);
});

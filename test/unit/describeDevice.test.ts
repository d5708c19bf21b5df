import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeDevice } from '../../server/engine/describeDevice.js';

test('on the CPU the log says so plainly, with the reason', () => {
  assert.equal(describeDevice({ device: false, deviceReason: 'no GPU found', gpuLayers: 0, totalLayers: 3 }), 'gpu: false, the model runs on the CPU (no GPU found)');
});

test('on a GPU the log names the backend and the layers it holds', () => {
  assert.equal(describeDevice({ device: 'cuda', deviceReason: 'cuda found', gpuLayers: 25, totalLayers: 25 }), 'gpu: cuda, 25 of 25 layers offloaded');
});

test('a GPU holding no layer is reported as the CPU running the model', () => {
  assert.match(describeDevice({ device: 'vulkan', deviceReason: 'requested', gpuLayers: 0, totalLayers: 25 }), /^gpu: vulkan, .*the model runs on the CPU$/);
});

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { syncBuiltinESMExports } from 'node:module';
import { ConfigError, defaults, loadConfig, type ConfigInput } from '../../server/config.js';

function assertConfigError(input: ConfigInput, field: RegExp): void {
  assert.throws(
    () => loadConfig(input),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, `expected ConfigError, got ${String(error)}`);
      assert.equal(error.code, 'invalid_config');
      assert.equal(error.name, 'ConfigError');
      assert.match(error.message, field);
      return true;
    },
  );
}

describe('loadConfig', () => {
  test('with no input every default is applied', () => {
    const config = loadConfig();
    for (const [key, value] of Object.entries(defaults)) {
      if (key === 'dataDir' || key === 'pulledModelsDir') continue;
      assert.deepEqual(config[key as keyof typeof config], value, key);
    }
    assert.equal(config.dataDir, resolve(defaults.dataDir));
    assert.deepEqual(config.models, []);
    assert.equal(config.invite, undefined);
  });

  test('the config is frozen: assigning to it throws in strict mode and changes nothing', () => {
    const config = loadConfig();
    assert.ok(Object.isFrozen(config));
    assert.throws(() => {
      (config as { port: number }).port = 1;
    }, TypeError);
    assert.throws(() => {
      (config as unknown as Record<string, unknown>).extra = true;
    }, TypeError);
    assert.equal(config.port, defaults.port);
  });

  test('an input value of undefined keeps the default', () => {
    assert.equal(loadConfig({ port: undefined, slots: undefined }).port, defaults.port);
  });

  test('numeric strings from env or flags are coerced to numbers, and port "0" means 0', () => {
    const config = loadConfig({ port: '0', slots: '3', temperature: '0.25', maxTokens: ' 64 ', threads: '1' });
    assert.equal(config.port, 0);
    assert.equal(config.slots, 3);
    assert.equal(config.temperature, 0.25);
    assert.equal(config.maxTokens, 64);
    assert.equal(config.threads, 1);
  });

  test('an empty or non-numeric string for a number is rejected, not read as 0 or NaN', () => {
    assertConfigError({ port: '' }, /port/);
    assertConfigError({ port: '80a' }, /port/);
    assertConfigError({ slots: 'two' }, /slots/);
  });

  test('a fractional value for an integer field is rejected', () => {
    assertConfigError({ slots: '2.5' }, /slots/);
  });

  test('qr accepts the usual false-y strings', () => {
    for (const value of ['0', 'false', 'FALSE', 'no', 'off']) assert.equal(loadConfig({ qr: value }).qr, false, value);
    for (const value of ['1', 'true', 'yes', 'on']) assert.equal(loadConfig({ qr: value }).qr, true, value);
  });

  test('port 70000 is rejected with a ConfigError naming port', () => {
    assertConfigError({ port: 70000 }, /port/);
    assertConfigError({ port: -1 }, /port/);
  });

  test('slots 0 is rejected with a ConfigError naming slots', () => {
    assertConfigError({ slots: 0 }, /slots/);
    assertConfigError({ slots: '0' }, /slots/);
  });

  test("transport 'tcp' is rejected with a ConfigError naming transport", () => {
    assertConfigError({ transport: 'tcp' }, /transport/);
  });

  test('llamaBuild defaults to auto, takes prebuilt or native, and rejects anything else naming llamaBuild', () => {
    assert.equal(loadConfig().llamaBuild, 'auto');
    assert.equal(loadConfig({ llamaBuild: 'native' }).llamaBuild, 'native');
    assert.equal(loadConfig({ llamaBuild: 'prebuilt' }).llamaBuild, 'prebuilt');
    assertConfigError({ llamaBuild: 'cuda' }, /llamaBuild/);
  });

  test('an invite shorter than 8 characters is rejected with a ConfigError naming invite', () => {
    assertConfigError({ invite: 'short' }, /invite/);
  });

  test('an unknown key is rejected with a ConfigError naming that key', () => {
    assertConfigError({ prot: 8080 } as ConfigInput, /prot/);
  });

  test('every bad field is named in one error', () => {
    const error = captureError(() => loadConfig({ port: 70000, slots: 0, transport: 'tcp' }));
    for (const field of ['port', 'slots', 'transport']) assert.match(error.message, new RegExp(field));
  });

  test('the error message does not echo a rejected invite code', () => {
    const error = captureError(() => loadConfig({ invite: 'sekrit' }));
    assert.doesNotMatch(error.message, /sekrit/);
  });

  test('dataDir, models and the models folder become absolute paths', () => {
    const config = loadConfig({ dataDir: 'some/data', models: ['models/tiny.gguf', '/srv/m.gguf'], modelsDir: 'gguf' });
    assert.ok(isAbsolute(config.dataDir));
    assert.equal(config.dataDir, resolve('some/data'));
    assert.deepEqual(config.models, [resolve('models/tiny.gguf'), '/srv/m.gguf']);
    assert.equal(config.modelsDir, resolve('gguf'));
    assert.equal(config.pulledModelsDir, resolve('models/pulled'));
    // PARLEY_MODEL may list several files, comma-separated.
    assert.deepEqual(loadConfig({ models: 'a.gguf, b.gguf' }).models, [resolve('a.gguf'), resolve('b.gguf')]);
    assert.equal(loadConfig({ dataDir: '/srv/parley' }).dataDir, '/srv/parley');
  });

  test('threads default to auto (chosen when the model loads), take a count, and refuse 0, 257 or words', () => {
    assert.equal(loadConfig().threads, 'auto');
    assert.equal(loadConfig({ threads: 'auto' }).threads, 'auto');
    assert.equal(loadConfig({ threads: ' 2 ' }).threads, 2);
    assertConfigError({ threads: '0' }, /threads/);
    assertConfigError({ threads: '257' }, /threads/);
    assertConfigError({ threads: 'many' }, /threads/);
  });

  test('gpu defaults to auto, takes metal, cuda, vulkan or off, and rejects anything else naming the choices', () => {
    assert.equal(loadConfig().gpu, 'auto');
    for (const gpu of ['auto', 'metal', 'cuda', 'vulkan', 'off']) assert.equal(loadConfig({ gpu }).gpu, gpu);
    assertConfigError({ gpu: 'nvidia' }, /gpu: .*"auto"\|"metal"\|"cuda"\|"vulkan"\|"off"/);
    assertConfigError({ gpu: 'false' }, /gpu/);
    assertConfigError({ gpu: '' }, /gpu/);
  });

  test('gpuLayers defaults to auto, takes max or a count (numeric strings coerced), and rejects words, fractions and negatives', () => {
    assert.equal(loadConfig().gpuLayers, 'auto');
    assert.equal(loadConfig({ gpuLayers: 'max' }).gpuLayers, 'max');
    assert.equal(loadConfig({ gpuLayers: ' 12 ' }).gpuLayers, 12);
    assert.equal(loadConfig({ gpuLayers: '0' }).gpuLayers, 0);
    assertConfigError({ gpuLayers: 'all' }, /gpuLayers: must be auto, max or a whole number of layers/);
    assertConfigError({ gpuLayers: '2.5' }, /gpuLayers: must be auto, max or a whole number of layers/);
    assertConfigError({ gpuLayers: '-1' }, /gpuLayers/);
  });

  test('contradictory GPU settings are refused: the native build with a named GPU backend, layers to offload with gpu off', () => {
    assertConfigError({ llamaBuild: 'native', gpu: 'cuda' }, /llamaBuild native is a CPU build.*gpu cuda/);
    assert.equal(loadConfig({ llamaBuild: 'native', gpu: 'auto' }).gpu, 'auto');
    assert.equal(loadConfig({ llamaBuild: 'native', gpu: 'off' }).gpu, 'off');
    assertConfigError({ gpu: 'off', gpuLayers: '8' }, /gpuLayers 8 needs a GPU, and gpu is off/);
    assert.equal(loadConfig({ gpu: 'off', gpuLayers: '0' }).gpuLayers, 0);
    assertConfigError({ gpu: 'off', gpuLayers: 'max' }, /gpuLayers max needs a GPU, and gpu is off/);
  });

  test(
    'the defaults are valid on a machine with more than 256 logical CPUs',
    async () => {
      const original = os.availableParallelism;
      os.availableParallelism = () => 384;
      syncBuiltinESMExports();
      try {
        // A query string makes a fresh module instance, which reads the patched core count.
        const specifier = `../../server/config.js?cpus=${os.availableParallelism()}`;
        const fresh = (await import(specifier)) as typeof import('../../server/config.js');
        const config = fresh.loadConfig();
        assert.ok(config.slots >= 1 && config.slots <= 64);
      } finally {
        os.availableParallelism = original;
        syncBuiltinESMExports();
      }
    },
  );
});

function captureError(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof Error);
    return error;
  }
  assert.fail('expected an error');
}

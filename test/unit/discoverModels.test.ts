import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureModel } from '../../models/ensureModel.js';
import { ModelLoadError } from '../../server/engine/loadLlamaModel.js';
import { discoverModels, UnknownDefaultModelError } from '../../server/models/discoverModels.js';

describe('discoverModels', () => {
  let root: string;
  let tiny: string;
  let demo: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'parley-models-'));
    tiny = (await ensureModel('tiny')).path;
    demo = (await ensureModel('demo')).path;
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('a folder serves every .gguf in it by file name; a broken file is skipped with its reason; other files are ignored', async () => {
    const dir = join(root, 'folder');
    await mkdir(dir);
    await copyFile(tiny, join(dir, 'Qwen2.5-0.5B-Instruct.gguf'));
    await copyFile(demo, join(dir, 'b-demo.GGUF'));
    await writeFile(join(dir, 'broken.gguf'), 'not a model');
    await writeFile(join(dir, 'notes.txt'), 'hello');
    const found = await discoverModels({ models: [], dirs: [dir, join(root, 'missing')] });
    assert.deepEqual(found.files.map((file) => file.id), ['qwen2.5-0.5b-instruct', 'b-demo']);
    assert.equal(found.files[1]?.demo, true, "Parley's demo file is the demo model under any name");
    assert.deepEqual(found.skipped.map(({ path }) => path), [join(dir, 'broken.gguf')]);
    assert.match(found.skipped[0]?.reason ?? '', /GGUF/i);
    assert.equal(found.defaultModel, 'b-demo', 'with no --model, the first by id');
  });

  test('named files come first: the first one is the default, and its name wins over a folder file of the same name', async () => {
    const dir = join(root, 'clash');
    await mkdir(dir);
    await copyFile(demo, join(dir, 'parley-tiny.gguf'));
    const found = await discoverModels({ models: [demo, tiny], dirs: [dir] });
    assert.deepEqual(found.files.map((file) => [file.id, file.path]), [['parley-demo', demo], ['parley-tiny', tiny]]);
    assert.equal(found.defaultModel, 'parley-demo');
    assert.match(found.skipped[0]?.reason ?? '', /same name 'parley-tiny'/);
  });

  test('a named file that cannot be read fails the start with the real reason', async () => {
    await assert.rejects(discoverModels({ models: [join(root, 'nope.gguf')], dirs: [] }), (error: unknown) => error instanceof ModelLoadError && error.reason === 'the file does not exist');
  });

  test('--default-model must name a model found; nothing found leaves the default to the caller (the demo model)', async () => {
    await assert.rejects(discoverModels({ models: [tiny], dirs: [], defaultModel: 'gpt-4o' }), UnknownDefaultModelError);
    assert.equal((await discoverModels({ models: [tiny, demo], dirs: [], defaultModel: 'parley-demo' })).defaultModel, 'parley-demo');
    const none = await discoverModels({ models: [], dirs: [join(root, 'missing')] });
    assert.deepEqual(none, { files: [], defaultModel: undefined, skipped: [] });
  });
});

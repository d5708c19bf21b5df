import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { HISTORY_KEY_FILE, loadOrCreateHistoryKey } from '../../server/history/loadOrCreateHistoryKey.js';

const dirs: string[] = [];
async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-history-key-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe('loadOrCreateHistoryKey', () => {
  test('first start creates 32 random bytes in history.key, mode 0600; later starts read the same key', async () => {
    const dir = await freshDataDir();
    const key = await loadOrCreateHistoryKey({ dataDir: dir });
    assert.equal(key.length, 32);
    const file = join(dir, HISTORY_KEY_FILE);
    assert.deepEqual(await readFile(file), key);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.deepEqual(await loadOrCreateHistoryKey({ dataDir: dir }), key);
    assert.notDeepEqual(await loadOrCreateHistoryKey({ dataDir: await freshDataDir() }), key, 'each installation has its own key');
  });

  test('concurrent first starts agree on one key', async () => {
    const dir = await freshDataDir();
    const keys = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateHistoryKey({ dataDir: dir })));
    for (const key of keys) assert.deepEqual(key, keys[0]);
  });

  test('a key file of another size is refused, not padded or replaced', async () => {
    for (const size of [0, 16, 31, 33, 44]) {
      const dir = await freshDataDir();
      const file = join(dir, HISTORY_KEY_FILE);
      await writeFile(file, Buffer.alloc(size, 7), { mode: 0o600 });
      await assert.rejects(loadOrCreateHistoryKey({ dataDir: dir }), new RegExp(`is ${size} bytes; a history key is exactly 32`));
      assert.equal((await readFile(file)).length, size, 'the file is left as it was');
    }
  });

  test('a key file readable by group or others is refused', async () => {
    const dir = await freshDataDir();
    await loadOrCreateHistoryKey({ dataDir: dir });
    await chmod(join(dir, HISTORY_KEY_FILE), 0o640);
    await assert.rejects(loadOrCreateHistoryKey({ dataDir: dir }), /readable by other users.*chmod 600/);
  });

  test('a key file given by path is read from there, and never created', async () => {
    const dir = await freshDataDir();
    const elsewhere = join(await freshDataDir(), 'parley-history.key');
    await assert.rejects(loadOrCreateHistoryKey({ dataDir: dir, keyFile: elsewhere }), /does not exist; create one with: head -c 32 \/dev\/urandom/);
    await assert.rejects(stat(elsewhere), { code: 'ENOENT' });
    await assert.rejects(stat(join(dir, HISTORY_KEY_FILE)), { code: 'ENOENT' }, 'nor is one made in the data dir');

    const bytes = Buffer.alloc(32, 9);
    await writeFile(elsewhere, bytes, { mode: 0o600 });
    assert.deepEqual(await loadOrCreateHistoryKey({ dataDir: dir, keyFile: elsewhere }), bytes);
  });
});

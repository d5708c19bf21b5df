import { describe, test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkDataDir, DataDirPermissionError } from '../../server/auth/checkDataDir.js';

describe('checkDataDir', { skip: process.platform === 'win32' && 'no POSIX modes on Windows' }, () => {
  let root: string;
  let dataDir: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'parley-perm-'));
    dataDir = join(root, 'data');
    await mkdir(dataDir, { mode: 0o700 });
    for (const name of ['invite.txt', 'invite-rotated.json', 'blocks.json', 'users.json', 'sessions.json', 'api-keys.json', 'history.key', 'history.sqlite', 'signing-key.jwk.json']) {
      await writeFile(join(dataDir, name), 'x', { mode: 0o600 });
    }
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test('a private data dir passes without warnings; a missing one too (the first start creates it)', async () => {
    assert.deepEqual(await checkDataDir(dataDir), { warnings: [] });
    assert.deepEqual(await checkDataDir(join(root, 'not-yet')), { warnings: [] });
  });

  test('every secret file, and the dir, that other users can write stops the start, naming the file and the fix', async () => {
    for (const name of ['invite.txt', 'invite-rotated.json', 'blocks.json', 'users.json', 'sessions.json', 'api-keys.json', 'history.key', 'history.sqlite', 'signing-key.jwk.json']) {
      const file = join(dataDir, name);
      await chmod(file, 0o620);
      await assert.rejects(checkDataDir(dataDir), (error: unknown) => error instanceof DataDirPermissionError && error.message.includes(file) && error.message.includes(`chmod 600 ${file}`), name);
      await chmod(file, 0o600);
    }
    await chmod(dataDir, 0o777);
    await assert.rejects(checkDataDir(dataDir), (error: unknown) => error instanceof DataDirPermissionError && error.message.includes(`chmod 700 ${dataDir}`));
  });

  test('a history key kept outside the data dir is checked too', async () => {
    const key = join(root, 'elsewhere.key');
    await writeFile(key, 'x', { mode: 0o666 });
    await chmod(key, 0o666);
    await assert.rejects(checkDataDir(dataDir, [key]), DataDirPermissionError);
  });

  test('what other users can only read is a warning per path, not a refusal', async () => {
    await chmod(join(dataDir, 'users.json'), 0o644);
    await chmod(dataDir, 0o755);
    const { warnings } = await checkDataDir(dataDir);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0] ?? '', /data can be read by other users .*chmod 700/);
    assert.match(warnings[1] ?? '', /users\.json can be read by other users .*chmod 600/);
  });
});

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadOrCreateInvite, ROTATED_PIN_FILE } from '../../server/auth/loadOrCreateInvite.js';

const dirs: string[] = [];
async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-invite-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe('rotating a pinned invite', () => {
  test('the pinned code stops working at once and after a restart with the same --invite; the file holds its digest, not the code', async () => {
    const dir = await freshDataDir();
    const invite = await loadOrCreateInvite(dir, 'pinned-code-123');
    assert.equal(invite.pinRotated, false);
    const next = await invite.rotate();
    assert.equal(invite.code, next);
    assert.equal(invite.matches('pinned-code-123'), false);
    assert.equal(invite.matches(next), true);
    assert.equal(invite.pinRotated, true);
    const text = await readFile(join(dir, ROTATED_PIN_FILE), 'utf8');
    assert.ok(!text.includes('pinned-code-123'));
    assert.equal((await stat(join(dir, ROTATED_PIN_FILE))).mode & 0o777, 0o600);

    const restarted = await loadOrCreateInvite(dir, 'pinned-code-123');
    assert.equal(restarted.code, next);
    assert.equal(restarted.pinned, true);
    assert.equal(restarted.pinRotated, true);
    assert.equal(restarted.matches('pinned-code-123'), false);
  });

  test('a different --invite wins over an earlier rotation', async () => {
    const dir = await freshDataDir();
    await (await loadOrCreateInvite(dir, 'pinned-code-123')).rotate();
    const changed = await loadOrCreateInvite(dir, 'another-code-456');
    assert.equal(changed.code, 'another-code-456');
    assert.equal(changed.pinRotated, false);
  });

  test('a damaged rotation file stops the start instead of bringing the pinned code back', async () => {
    const dir = await freshDataDir();
    await writeFile(join(dir, ROTATED_PIN_FILE), 'garbage', { mode: 0o600 });
    await assert.rejects(loadOrCreateInvite(dir, 'pinned-code-123'), /not a valid rotated invite/);
  });
});

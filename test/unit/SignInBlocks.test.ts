import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { BLOCKS_FILE, SignInBlocks } from '../../server/auth/SignInBlocks.js';

const dirs: string[] = [];
async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-blocks-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const DAY = 24 * 3600 * 1000;
const DEVICE_A = 'device-a-0123456789';
const DEVICE_B = 'device-b-0123456789';

describe('SignInBlocks', () => {
  test("blocking an invite user blocks the devices and addresses they joined from, and only those, until lifted", async () => {
    const blocks = await SignInBlocks.load(await freshDataDir(), { keepSeenMs: 30 * DAY });
    await blocks.recordJoin('u_mallory', DEVICE_A, '192.168.1.66');
    await blocks.recordJoin('u_alice', DEVICE_B, '192.168.1.10');
    assert.equal(blocks.isBlocked(DEVICE_A, '192.168.1.66'), false, 'joins are recorded, not blocked');
    assert.deepEqual(await blocks.block('u_mallory'), { devices: 1, addresses: ['192.168.1.66'] });
    assert.equal(blocks.isBlocked(DEVICE_A, '192.168.1.99'), true, 'the device, from another address');
    assert.equal(blocks.isBlocked(undefined, '192.168.1.66'), true, 'the address, without a device');
    assert.equal(blocks.isBlocked(DEVICE_B, '192.168.1.66'), true, 'the address, with another device');
    assert.equal(blocks.isBlocked(DEVICE_B, '192.168.1.10'), false, 'someone else');
    assert.equal(blocks.isBlocked(undefined, '192.168.1.99'), false, 'a new device at a new address is not blocked (the documented limit)');
    assert.equal(await blocks.unblock('u_mallory'), true);
    assert.equal(blocks.isBlocked(DEVICE_A, '192.168.1.66'), false);
    assert.equal(await blocks.unblock('u_mallory'), false, 'nothing left to lift');
  });

  test('a user never seen blocks nothing', async () => {
    const blocks = await SignInBlocks.load(await freshDataDir(), { keepSeenMs: 30 * DAY });
    assert.deepEqual(await blocks.block('u_unknown'), { devices: 0, addresses: [] });
    assert.equal(blocks.isBlockedUser('u_unknown'), false);
  });

  test('blocks survive a restart; the file is mode 0600; joins older than the session lifetime are forgotten', async () => {
    const dir = await freshDataDir();
    let now = 1_000_000;
    const blocks = await SignInBlocks.load(dir, { keepSeenMs: DAY, now: () => now });
    await blocks.recordJoin('u_old', DEVICE_B, '10.0.0.2');
    await blocks.recordJoin('u_mallory', DEVICE_A, '10.0.0.1');
    await blocks.block('u_mallory');
    assert.equal((await stat(join(dir, BLOCKS_FILE))).mode & 0o777, 0o600);
    now += 2 * DAY;
    await blocks.recordJoin('u_new', undefined, '10.0.0.3');
    const restarted = await SignInBlocks.load(dir, { keepSeenMs: DAY, now: () => now });
    assert.equal(restarted.isBlocked(DEVICE_A, '10.0.0.9'), true);
    assert.equal(restarted.isBlockedUser('u_mallory'), true);
    assert.deepEqual(await restarted.block('u_old'), { devices: 0, addresses: [] }, 'the old join was pruned');
    const file = JSON.parse(await readFile(join(dir, BLOCKS_FILE), 'utf8')) as { seen: Record<string, unknown> };
    assert.deepEqual(Object.keys(file.seen), ['u_new'], 'old joins are forgotten; the block stays');
  });

  test('a corrupt file is reported, not treated as empty', async () => {
    const dir = await freshDataDir();
    await writeFile(join(dir, BLOCKS_FILE), '{"version":1}', { mode: 0o600 });
    await assert.rejects(SignInBlocks.load(dir, { keepSeenMs: DAY }), /not a valid Parley blocks file/);
  });
});

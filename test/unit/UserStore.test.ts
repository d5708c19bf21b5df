import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, describe, test } from 'node:test';
import { readNewPassword } from '../../server/auth/readPassword.js';
import { hashPassword, USERS_FILE, UserStore, UserStoreError, verifyPassword } from '../../server/auth/UserStore.js';

const dirs: string[] = [];
async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-users-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

describe('UserStore', () => {
  test('the stored hash is scrypt with its parameters and a per-user salt, never the password', async () => {
    const dir = await freshDataDir();
    const store = new UserStore(dir);
    await store.add('alice', 'correct horse battery');
    await store.add('bob', 'correct horse battery');
    const text = await readFile(join(dir, USERS_FILE), 'utf8');
    assert.ok(!text.includes('correct horse battery'));
    const users = (JSON.parse(text) as { users: Record<string, { password: string }> }).users;
    const pattern = /^scrypt\$N=16384,r=8,p=1\$([A-Za-z0-9_-]{22})\$([A-Za-z0-9_-]{86})$/;
    const [alice, bob] = [pattern.exec(users.alice?.password ?? ''), pattern.exec(users.bob?.password ?? '')];
    assert.ok(alice && bob, 'format scrypt$N=…,r=…,p=…$salt$hash (16-byte salt, 64-byte key)');
    assert.notEqual(alice[1], bob[1], 'each user has their own salt');
    assert.notEqual(alice[2], bob[2], 'so the same password hashes differently');
  });

  test('the users file is mode 0600', async () => {
    const dir = await freshDataDir();
    await new UserStore(dir).add('alice', 'password-1');
    assert.equal((await stat(join(dir, USERS_FILE))).mode & 0o777, 0o600);
  });

  test('verify returns the account for the right password, ignoring the case of the name', async () => {
    const store = new UserStore(await freshDataDir());
    const added = await store.add('Alice', 'password-1', 'admin');
    assert.match(added.id, /^a_[A-Za-z0-9_-]+$/);
    assert.deepEqual(await store.verify('alice', 'password-1'), { id: added.id, name: 'Alice', role: 'admin' });
    assert.deepEqual(await store.verify('ALICE', 'password-1'), { id: added.id, name: 'Alice', role: 'admin' });
  });

  test('a wrong password and an unknown name both get undefined', async () => {
    const store = new UserStore(await freshDataDir());
    await store.add('alice', 'password-1');
    for (const wrong of ['password-2', 'password-', 'Password-1', '', 'password-1 ']) {
      assert.equal(await store.verify('alice', wrong), undefined, JSON.stringify(wrong));
    }
    assert.equal(await store.verify('mallory', 'password-1'), undefined);
    assert.equal(await store.verify('__proto__', 'password-1'), undefined);
    assert.equal(await store.verify('constructor', 'password-1'), undefined);
  });

  test('every check costs exactly one scrypt, for a known name and an unknown one, the first after a start included', async (t) => {
    const dataDir = await freshDataDir();
    await new UserStore(dataDir).add('alice', 'password-1');
    // Count scrypt calls: node:crypto's named exports follow the module object after syncBuiltinESMExports.
    const calls = { count: 0 };
    const original = crypto.scrypt;
    t.mock.method(crypto, 'scrypt', (...args: Parameters<typeof crypto.scrypt>) => {
      calls.count++;
      return (original as (...rest: unknown[]) => void)(...args);
    });
    syncBuiltinESMExports();
    t.after(() => {
      t.mock.restoreAll();
      syncBuiltinESMExports();
    });
    const fresh = new UserStore(dataDir);
    for (const [name, password] of [['nobody', 'wrong-password'], ['nobody', 'wrong-password'], ['alice', 'wrong-password'], ['alice', 'password-1'], ['someone-else', 'x']] as const) {
      const before = calls.count;
      await fresh.verify(name, password);
      assert.equal(calls.count - before, 1, `${name}: one scrypt`);
    }
  });

  test('names are validated and unique regardless of case; short passwords are refused', async () => {
    const store = new UserStore(await freshDataDir());
    await store.add('alice', 'password-1');
    await assert.rejects(store.add('ALICE', 'password-2'), UserStoreError);
    for (const bad of ['', '1abc', '_x', '__proto__', 'a b', 'a'.repeat(33), 'ä']) {
      await assert.rejects(store.add(bad, 'password-1'), UserStoreError, JSON.stringify(bad));
    }
    await assert.rejects(store.add('bob', 'seven77'), /at least 8 characters/);
  });

  test('remove deletes the account; find and findById see the change', async () => {
    const store = new UserStore(await freshDataDir());
    const alice = await store.add('alice', 'password-1');
    assert.deepEqual(await store.findById(alice.id), alice);
    assert.deepEqual(await store.remove('Alice'), alice);
    assert.equal(await store.find('alice'), undefined);
    assert.equal(await store.findById(alice.id), undefined);
    assert.equal(await store.remove('alice'), undefined);
    assert.equal(await store.verify('alice', 'password-1'), undefined);
  });

  test('a second store on the same dir sees the first one’s writes (the CLI and a running server)', async () => {
    const dir = await freshDataDir();
    const server = new UserStore(dir);
    assert.equal(await server.verify('alice', 'password-1'), undefined);
    await new UserStore(dir).add('alice', 'password-1');
    assert.equal((await server.verify('alice', 'password-1'))?.name, 'alice');
  });

  test('a malformed or absurd stored hash never matches', async () => {
    assert.equal(await verifyPassword('x', 'plain-text'), false);
    assert.equal(await verifyPassword('x', 'scrypt$N=3,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA'), false);
    assert.equal(await verifyPassword('x', 'scrypt$N=1073741824,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA'), false);
    const good = await hashPassword('password-1');
    assert.equal(await verifyPassword('password-1', good), true);
  });

  test('a blocked account is marked on verify, find and findById until unblocked, by name or id; unknown names get undefined', async () => {
    const dir = await freshDataDir();
    const store = new UserStore(dir);
    const bob = await store.add('Bob', 'password-1');
    assert.deepEqual(await store.setBlocked('BOB', true), { ...bob, blocked: true });
    assert.deepEqual(await store.verify('bob', 'password-1'), { ...bob, blocked: true }, 'the right password finds the account, marked blocked');
    assert.equal(await store.verify('bob', 'password-2'), undefined);
    assert.deepEqual(await store.findById(bob.id), { ...bob, blocked: true });
    // Another store on the same dir (the CLI beside a running server) sees the block.
    assert.deepEqual(await new UserStore(dir).find('bob'), { ...bob, blocked: true });
    assert.deepEqual(await store.setBlocked(bob.id, false), bob);
    assert.deepEqual(await store.verify('bob', 'password-1'), bob);
    assert.equal(await store.setBlocked('nobody', true), undefined);
    assert.equal(await store.setBlocked('__proto__', true), undefined);
  });

  test('a corrupt users file is reported, not treated as empty', async () => {
    const dir = await freshDataDir();
    await writeFile(join(dir, USERS_FILE), 'not json', { mode: 0o600 });
    await assert.rejects(new UserStore(dir).verify('alice', 'password-1'), /not a valid Parley users file/);
  });
});

describe('reading a new password', () => {
  test('from a pipe, the first line is the password (CRLF or LF), the rest is ignored', async () => {
    for (const input of ['s3cret-pass\n', 's3cret-pass\r\nmore\n', 's3cret-pass']) {
      const stdin = new PassThrough();
      const read = readNewPassword(stdin, new PassThrough());
      stdin.end(input);
      assert.equal(await read, 's3cret-pass', JSON.stringify(input));
    }
  });

  test('an empty pipe is an error', async () => {
    const stdin = new PassThrough();
    const read = readNewPassword(stdin, new PassThrough());
    stdin.end();
    await assert.rejects(read, /No password/);
  });
});

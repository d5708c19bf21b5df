import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { API_KEYS_FILE } from '../../server/auth/ApiKeyStore.js';
import { USERS_FILE } from '../../server/auth/UserStore.js';

const run = promisify(execFile);

/**
 * The API key the gateways send to the engine nodes (`--upstream-key`), made the way an operator
 * makes one: `parley user add` (an account with a random password no one keeps) and
 * `parley key create` on the first node's data dir, before any node starts. The key is kept in
 * `keyFile` (mode 0600). Every node then gets a copy of the first one's users.json and
 * api-keys.json, which hold only the account's scrypt hash and the key's SHA-256, so every node
 * accepts the same key.
 */
export async function prepareEngineKey(root: string, engineDirs: readonly string[], keyFile: string): Promise<string> {
  const [first, ...others] = engineDirs;
  if (first === undefined) throw new Error('no engine node');
  for (const dir of engineDirs) await mkdir(dir, { recursive: true, mode: 0o700 });
  const made = await access(join(first, API_KEYS_FILE)).then(() => true, () => false);
  let key = made ? await readFile(keyFile, 'utf8').then((text) => text.trim(), () => undefined) : undefined;
  if (key === undefined) {
    const account = `gateways-${randomBytes(3).toString('hex')}`;
    const parley = (args: string[], input?: string) => {
      // No PARLEY_* from this environment: a PARLEY_REDIS_URL would send the account and key to that Redis instead of the node's files.
      const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PARLEY_')));
      const child = run(process.execPath, ['--import', 'tsx', 'server/main.ts', ...args, '--data-dir', first], { cwd: root, env, encoding: 'utf8' });
      if (input !== undefined) child.child.stdin?.end(input);
      return child;
    };
    await parley(['user', 'add', account], `${randomBytes(24).toString('base64url')}\n`);
    const created = await parley(['key', 'create', account, '--name', 'cluster gateways']);
    key = created.stdout.trim();
    await writeFile(keyFile, `${key}\n`, { mode: 0o600 });
  }
  for (const dir of others) {
    for (const file of [USERS_FILE, API_KEYS_FILE]) {
      await copyFile(join(first, file), join(dir, file));
      await chmod(join(dir, file), 0o600);
    }
  }
  return key;
}

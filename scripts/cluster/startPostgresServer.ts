import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { ClusterChild } from './ClusterChild.js';
import { freePort } from './freePort.js';
import { which } from './which.js';

export interface ClusterPostgres {
  readonly child: ClusterChild;
  /** postgres://parley:password@127.0.0.1:port/parley: for the gateways' environment only, never printed. */
  readonly url: string;
  readonly port: number;
  /** A fast shutdown (SIGINT to the postmaster), waited for. */
  stop(): Promise<void>;
}

const DATABASE = 'parley';
const USER = 'parley';

/** Debian's newest /usr/lib/postgresql/<version>/bin, else the folder of `initdb` on the PATH; undefined when PostgreSQL is not installed. */
export function postgresBinDir(): string | undefined {
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    for (const version of readdirSync(debian).sort((a, b) => Number(b) - Number(a))) {
      if (existsSync(join(debian, version, 'bin', 'initdb'))) return join(debian, version, 'bin');
    }
  }
  const initdb = which('initdb');
  return initdb === undefined ? undefined : initdb.slice(0, initdb.lastIndexOf('/'));
}

/**
 * A PostgreSQL cluster in `dir` (made by initdb on first use, kept between runs) on 127.0.0.1
 * with password authentication for the user `parley`, and its database `parley`. PostgreSQL
 * refuses to run as root, so as root it runs as the `postgres` user Debian's package makes, and
 * `dir` belongs to that user.
 */
export async function startPostgresServer(bin: string, dir: string, password: string, write: (line: string) => void): Promise<ClusterPostgres> {
  const data = join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  const runAs = (command: string, args: string[]): [string, string[]] => (asRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args]);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const owner = asRoot ? postgresUser() : undefined;
  if (owner !== undefined) await chown(dir, owner.uid, owner.gid);
  if (!existsSync(join(data, 'PG_VERSION'))) {
    // initdb reads the password from a file: one only its user can read, removed at once.
    const passwordFile = join(dir, 'initdb-password');
    await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
    if (owner !== undefined) await chown(passwordFile, owner.uid, owner.gid);
    try {
      const [command, args] = runAs(join(bin, 'initdb'), ['-D', data, '-U', USER, '--auth=scram-sha-256', `--pwfile=${passwordFile}`, '-E', 'UTF8']);
      const init = spawnSync(command, args, { encoding: 'utf8' });
      if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
    } finally {
      await rm(passwordFile, { force: true });
    }
  }
  const port = await freePort();
  const [command, args] = runAs(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`]);
  const child = new ClusterChild('postgres', command, args, { write });
  const admin = `postgres://${USER}:${encodeURIComponent(password)}@127.0.0.1:${port}`;
  try {
    await child.waitForLine((line) => (line.includes('database system is ready to accept connections') ? true : undefined), 60_000);
    const client = new pg.Client({ connectionString: `${admin}/postgres` });
    await client.connect();
    try {
      const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
      if (found.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`);
    } finally {
      await client.end();
    }
  } catch (error) {
    child.kill();
    throw error;
  }
  return {
    child,
    url: `${admin}/${DATABASE}`,
    port,
    async stop() {
      if (!child.running) return;
      // The postmaster itself: runuser does not pass signals on. SIGINT is a fast shutdown.
      const pid = Number((await readFile(join(data, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0]);
      await child.stop('SIGINT', 30_000, Number.isInteger(pid) && pid > 0 ? pid : child.pid);
    },
  };
}

function postgresUser(): { uid: number; gid: number } {
  const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) throw new Error('running as root, PostgreSQL needs the `postgres` user (Debian\'s postgresql package makes it)');
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, waitForPort, which } from './startRedis.js';

/** A real PostgreSQL server on loopback in a temporary cluster, for tests (trust auth, user `parley`). */
export interface TestPostgres {
  readonly port: number;
  /** A URL of a new, empty database on this server. */
  createDatabase(): Promise<string>;
  close(): Promise<void>;
}

/** Where Debian's (or the PATH's) initdb and postgres are; undefined when PostgreSQL is not installed. */
export function postgresBinDir(): string | undefined {
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian).sort((a, b) => Number(b) - Number(a));
    for (const version of versions) if (existsSync(join(debian, version, 'bin', 'initdb'))) return join(debian, version, 'bin');
  }
  const initdb = which('initdb');
  return initdb === undefined ? undefined : initdb.slice(0, initdb.lastIndexOf('/'));
}

export function hasPostgres(): boolean {
  return postgresBinDir() !== undefined;
}

let databases = 0;

export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (bin === undefined) throw new Error('PostgreSQL is not installed (apt-get install postgresql)');
  const dir = mkdtempSync(join(tmpdir(), 'parley-pg-'));
  // PostgreSQL refuses to run as root: as root, run it as the `postgres` user Debian's package makes.
  const asRoot = process.getuid?.() === 0;
  const runAs = (command: string, args: string[]): [string, string[]] => (asRoot ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args]);
  if (asRoot) {
    const user = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    const group = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
    chownSync(dir, Number(user.stdout.trim()), Number(group.stdout.trim()));
  }
  const data = join(dir, 'data');
  const [initCommand, initArgs] = runAs(join(bin, 'initdb'), ['-D', data, '-U', 'parley', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const init = spawnSync(initCommand, initArgs, { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}`);
  const port = await freePort();
  const [command, args] = runAs(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${dir}`, '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off']);
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitForPort(port, 30_000, () => (child.exitCode === null ? undefined : `postgres exited: ${output}`));
  const admin = `postgres://parley@127.0.0.1:${port}/postgres`;
  // Accepting TCP comes a moment before accepting sessions.
  for (let attempt = 0; ; attempt++) {
    const client = new pg.Client({ connectionString: admin });
    try {
      await client.connect();
      await client.end();
      break;
    } catch (error) {
      await client.end().catch(() => undefined);
      if (attempt > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return {
    port,
    async createDatabase() {
      const name = `parley_test_${process.pid}_${++databases}`;
      const client = new pg.Client({ connectionString: admin });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      return `postgres://parley@127.0.0.1:${port}/${name}`;
    },
    async close() {
      if (child.exitCode === null) {
        // The postmaster itself (runuser does not pass signals on): SIGINT is a fast shutdown.
        const pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
        const exited = once(child, 'exit');
        process.kill(pid, 'SIGINT');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

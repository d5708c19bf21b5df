import { mkdir } from 'node:fs/promises';
import { ClusterChild } from './ClusterChild.js';
import { freePort } from './freePort.js';

export interface ClusterRedis {
  readonly child: ClusterChild;
  /** redis://:password@127.0.0.1:port: for the gateways' environment only, never printed. */
  readonly url: string;
  readonly port: number;
}

/**
 * redis-server on 127.0.0.1 with a password, its append-only file in `dir` (so revocations and
 * budgets survive a restart of the cluster). The config, password included, goes in on stdin, so
 * it is in no command line another user of the machine can read.
 */
export async function startRedisServer(dir: string, password: string, write: (line: string) => void): Promise<ClusterRedis> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const port = await freePort();
  const config = [`port ${port}`, 'bind 127.0.0.1', `requirepass ${password}`, `dir ${dir}`, 'appendonly yes', 'save ""', 'loglevel notice'].join('\n');
  const child = new ClusterChild('redis', 'redis-server', ['-'], { stdin: `${config}\n`, write });
  try {
    await child.waitForLine((line) => (line.includes('Ready to accept connections') ? true : undefined), 30_000);
  } catch (error) {
    child.kill();
    throw error;
  }
  return { child, url: `redis://:${encodeURIComponent(password)}@127.0.0.1:${port}`, port };
}

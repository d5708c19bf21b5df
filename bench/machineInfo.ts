import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { arch, availableParallelism, cpus, loadavg, platform, release, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

export interface MachineInfo {
  readonly cpuModel: string;
  readonly cores: number;
  readonly ramGiB: number;
  readonly os: string;
  readonly node: string;
  readonly nodeLlamaCpp: string;
  readonly uwsPackage: string;
  readonly ws: string;
  /** Soft limit on open files for this process and the servers it spawns; caps the connection benchmark. */
  readonly openFilesLimit: number | undefined;
  /** 1, 5 and 15 minute load averages when the run started: above the core count, figures are noisy. */
  readonly loadAverage: readonly number[];
  readonly commit: string | undefined;
}

/** What the figures depend on, read once at the start of a run. */
export function machineInfo(): MachineInfo {
  return {
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    cores: availableParallelism(),
    ramGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${platform()} ${release()} ${arch()}`,
    node: process.version,
    nodeLlamaCpp: installedVersion('node-llama-cpp'),
    uwsPackage: installedVersion('@trufflesuite/uws-js-unofficial'),
    ws: installedVersion('ws'),
    openFilesLimit: openFilesLimit(),
    loadAverage: loadavg().map((value) => Math.round(value * 100) / 100),
    commit: commit(),
  };
}

function installedVersion(name: string): string {
  try {
    const manifest = JSON.parse(readFileSync(`${ROOT}node_modules/${name}/package.json`, 'utf8')) as { version?: string };
    return manifest.version ?? 'unknown';
  } catch {
    return 'not installed';
  }
}

/** From /proc on Linux (child processes inherit it); elsewhere the shell's `ulimit -n`. */
export function openFilesLimit(): number | undefined {
  try {
    const match = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (match?.[1] !== undefined) return match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
  } catch {
    // Not Linux.
  }
  const shell = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' });
  const value = shell.stdout?.trim();
  if (value === 'unlimited') return Number.POSITIVE_INFINITY;
  return value && /^\d+$/.test(value) ? Number(value) : undefined;
}

/** Read-only: the commit the figures were measured on, when this is a git checkout. */
function commit(): string | undefined {
  const git = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  return git.status === 0 ? git.stdout.trim() : undefined;
}

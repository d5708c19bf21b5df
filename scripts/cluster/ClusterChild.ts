import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createInterface } from 'node:readline';

const LEVELS: Readonly<Record<number, string>> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };

/**
 * One process of the local cluster, in its own process group (so a Ctrl-C at the terminal reaches
 * only `npm run cluster`, which then stops the parts in order), with every line of its output
 * written to the terminal behind its name. Parley's pino records are shown as `level message`.
 */
export class ClusterChild {
  /** Its exit code (128 when a signal ended it, null when it never started). */
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private readonly lineWatchers = new Set<(line: string) => void>();
  private tail: string[] = [];

  constructor(
    readonly name: string,
    command: string,
    args: readonly string[],
    options: SpawnOptions & { readonly stdin?: string; readonly write: (line: string) => void },
  ) {
    const child = spawn(command, args, { ...options, detached: true, stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    this.child = child;
    if (options.stdin !== undefined) child.stdin?.end(options.stdin);
    this.exited = new Promise((resolve) => {
      child.once('error', (error) => {
        options.write(`[${name}] could not start: ${error.message}`);
        resolve(null);
      });
      child.once('exit', (code, signal) => resolve(code ?? (signal === null ? null : 128)));
    });
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue;
      createInterface({ input: stream }).on('line', (line) => {
        const shown = format(line);
        if (shown === undefined) return;
        this.tail = [...this.tail.slice(-19), shown];
        options.write(`[${name}] ${shown}`);
        for (const watcher of this.lineWatchers) watcher(line);
      });
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The last lines it wrote, for an error message when it exits early. */
  get lastLines(): readonly string[] {
    return this.tail;
  }

  /** Resolves with the first value `match` finds in a line of its output; rejects if it exits first or after `timeoutMs`. */
  waitForLine<T>(match: (line: string) => T | undefined, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.lineWatchers.delete(watcher);
      };
      const watcher = (line: string) => {
        const value = match(line);
        if (value === undefined) return;
        done();
        resolve(value);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name} was not ready within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.lineWatchers.add(watcher);
      void this.exited.then((code) => {
        if (!this.lineWatchers.has(watcher)) return;
        done();
        reject(new Error(`${this.name} exited (${code}) before it was ready`));
      });
    });
  }

  /** Sends `signal` (to `pid`, default: the child itself) and waits for the child to exit; SIGKILLs its group after `timeoutMs`. */
  async stop(signal: NodeJS.Signals, timeoutMs: number, pid = this.child.pid): Promise<void> {
    if (!this.running || pid === undefined) return;
    try {
      process.kill(pid, signal);
    } catch {
      // Already gone.
    }
    const timer = setTimeout(() => this.kill(), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL to its whole process group, at once. */
  kill(): void {
    if (!this.running || this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

/** A pino record as `level message` (info unlabelled), with its error's message; other lines as they are; blank lines dropped. */
function format(line: string): string | undefined {
  if (line.trim() === '') return undefined;
  if (!line.startsWith('{')) return line;
  try {
    const record = JSON.parse(line) as { level?: number; msg?: string; err?: { message?: string } };
    if (typeof record.msg !== 'string') return line;
    const level = record.level === 30 || record.level === undefined ? '' : `${LEVELS[record.level] ?? record.level} `;
    // Parley logs no secret in an error's message (the style guide's rule), so it is shown.
    return `${level}${record.msg}${typeof record.err?.message === 'string' ? `: ${record.err.message}` : ''}`;
  } catch {
    return line;
  }
}

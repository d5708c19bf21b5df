import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { GateCommand } from './childGate.js';

/**
 * The real `server/main.ts` as a child process, for tests of what only a process shows (signals,
 * exit codes, load failures, a node killed mid-reply). Every bound is generous (a loaded 2-core
 * machine); none is a speed assertion.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** From spawn to the `listening on` log line: tsx compiles, llama.cpp starts, the model loads. */
export const START_MS = 90_000;
/** From the last signal (or from spawn, for a load failure) to the exit. */
export const EXIT_MS = 30_000;

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface LogRecord {
  readonly msg?: string;
  readonly [key: string]: unknown;
}

/** One `node --import tsx server/main.ts` child, with its JSON log (stdout) and stderr collected. */
export class ParleyProcess {
  readonly logs: LogRecord[] = [];
  stderr = '';
  readonly exited: Promise<Exit>;
  private logWaiters: Array<{ match: (record: LogRecord) => boolean; resolve: (record: LogRecord) => void }> = [];

  private constructor(readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { this.stderr += chunk; });
    if (child.stdout) {
      createInterface({ input: child.stdout }).on('line', (line) => {
        let record: LogRecord;
        try {
          record = JSON.parse(line) as LogRecord;
        } catch {
          return;
        }
        this.logs.push(record);
        this.logWaiters = this.logWaiters.filter((waiter) => {
          if (!waiter.match(record)) return true;
          waiter.resolve(record);
          return false;
        });
      });
    }
  }

  /** With `gated`, the child's replies pass a Gate that `gate()` controls (test/helpers/childGate.ts). */
  static spawn(args: readonly string[], options: { gated?: boolean } = {}): ParleyProcess {
    // The child's configuration comes from its flags alone, not from a PARLEY_* variable of the shell running the tests.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PARLEY_')));
    const child = options.gated
      ? spawn(process.execPath, ['--import', 'tsx', '--import', './test/helpers/childGate.ts', 'server/main.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
      : spawn(process.execPath, ['--import', 'tsx', 'server/main.ts', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const parley = new ParleyProcess(child);
    running.add(parley);
    void parley.exited.then(() => running.delete(parley));
    return parley;
  }

  waitForLog(match: (record: LogRecord) => boolean, timeoutMs: number): Promise<LogRecord> {
    const existing = this.logs.find(match);
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line within ${timeoutMs} ms; stderr: ${this.stderr.slice(-500)}`)), timeoutMs);
      this.logWaiters.push({ match, resolve: (record) => { clearTimeout(timer); resolve(record); } });
      void this.exited.then((exit) => {
        clearTimeout(timer);
        reject(new Error(`exited (${exit.code ?? exit.signal}) before the log line; stderr: ${this.stderr.slice(-500)}`));
      });
    });
  }

  /** Applies `command` to the child's gate; resolves once the child has. */
  gate(command: GateCommand): Promise<void> {
    return new Promise((resolve, reject) => {
      this.child.once('message', () => resolve());
      this.child.send(command, (error) => {
        if (error) reject(error);
      });
    });
  }

  /** Resolves with the exit, or rejects if the process is still running after `timeoutMs`. */
  exit(timeoutMs = EXIT_MS): Promise<Exit> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`still running ${timeoutMs} ms later`)), timeoutMs);
      void this.exited.then((exit) => { clearTimeout(timer); resolve(exit); });
    });
  }

  signal(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }
}

/** Children not yet exited; `after` kills any a failed test left behind. */
const running = new Set<ParleyProcess>();

/** SIGKILLs every child not yet exited (for a suite's `after`, so a failed test leaves none behind). */
export async function killAllParleyProcesses(): Promise<void> {
  for (const parley of running) parley.child.kill('SIGKILL');
  await Promise.all([...running].map((parley) => parley.exited));
}

/** True for a `listening on` log line, which carries the port. */
export const isListening = (record: LogRecord): boolean => typeof record.msg === 'string' && record.msg.startsWith('listening on');


import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { LlamaBuild, LlamaBuildChoice } from '../server/engine/LlamaBuild.js';
import { InviteTokens } from './InviteTokens.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const INVITE = 'bench-invite-code-0000';
const START_TIMEOUT_MS = 180_000;
const STOP_TIMEOUT_MS = 20_000;
/**
 * Wall-clock cap per reply (the server's --generation-timeout; the in-process runs abort at the
 * same time). A safety bound only: on a loaded machine the 0.5B shape can drop to a few tok/s,
 * and this keeps every run finite. Replies it cuts are counted and reported.
 */
export const REPLY_TIME_CAP_MS = 60_000;

export const BenchTransport = { uws: 'uws', ws: 'ws' } as const;
export type BenchTransport = (typeof BenchTransport)[keyof typeof BenchTransport];

export interface ServerSpec {
  readonly transport: BenchTransport;
  /** The GGUF file it serves; undefined for a gateway that serves only its `--upstream` engines. */
  readonly modelPath: string | undefined;
  readonly threads: number;
  readonly llamaBuild: LlamaBuildChoice;
  readonly slots: number;
  readonly contextSize: number;
  readonly maxTokens: number;
  /** A data dir prepared beforehand (e.g. a filled history); the server's own temporary one when absent. Never removed. */
  readonly dataDir?: string;
  /** Flags after the usual ones, e.g. `--role engine` or `--upstream NAME=URL`. */
  readonly extraArgs?: readonly string[];
  /** PARLEY_* variables it gets (every other PARLEY_* of this process is dropped), e.g. a key that must stay off the command line. */
  readonly env?: Readonly<Record<string, string>>;
}

/** The server refused `--transport uws` (exit 2): no native uWebSockets.js binary for this Node. */
export class TransportUnavailableError extends Error {
  override name = 'TransportUnavailableError';
  readonly code = 'transport_unavailable' as const;
}

/**
 * The real server (`node --import tsx server/main.ts`) as a child process on 127.0.0.1, port 0,
 * so its memory and CPU are its own: RSS is read from /proc/<pid>/status of that process.
 *
 * Every benchmark client comes from 127.0.0.1 and the benchmarks push one dimension each, so the
 * per-IP, per-user and per-connection limits are raised far above any run's size; the limiters
 * still run (they are part of the cost being measured), they just never refuse. Greedy decoding
 * (temperature 0) makes the in-process and server runs produce the same tokens.
 */
export class ServerProcess {
  /** The server's own log records at error level or above (pino 50+); a clean run has none. */
  readonly errors: string[] = [];
  private readonly exited: Promise<void>;
  private stderrTail = '';
  private stopping = false;
  private readonly tokens: InviteTokens;

  private constructor(
    private readonly child: ChildProcess,
    private readonly dataDir: string,
    readonly port: number,
    /** The transport the server reported in its `listening` log line: the one really running. */
    readonly transport: string,
    /** The llama.cpp binary the server reported in its `llama.cpp:` log line. */
    readonly llamaBuild: LlamaBuild | undefined,
    /** The backend from the same line: `cuda`, `metal`, `vulkan`, or false for the CPU. */
    readonly device: string | false | undefined,
    readonly spec: ServerSpec,
  ) {
    this.tokens = new InviteTokens(`http://127.0.0.1:${port}`, INVITE);
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-4000);
    });
    void this.exited.then(() => {
      if (!this.stopping) process.stderr.write(`bench: a server (${spec.transport}) exited during the run\n${this.stderrTail}\n`);
    });
  }

  static async start(spec: ServerSpec): Promise<ServerProcess> {
    const dataDir = spec.dataDir ?? (await mkdtemp(join(tmpdir(), 'parley-bench-')));
    const args = [
      '--import', 'tsx', 'server/main.ts',
      '--host', '127.0.0.1', '--port', '0', '--transport', spec.transport, ...(spec.modelPath === undefined ? [] : ['--model', spec.modelPath]),
      '--threads', String(spec.threads), '--llama-build', spec.llamaBuild, '--slots', String(spec.slots), '--context-size', String(spec.contextSize),
      '--max-tokens', String(spec.maxTokens), '--temperature', '0', '--generation-timeout', String(REPLY_TIME_CAP_MS),
      '--data-dir', dataDir, '--invite', INVITE, '--no-qr', '--log-level', 'info',
      '--max-connections-per-ip', '1000000', '--max-connections-per-user', '1000000',
      '--upgrades-per-minute', '100000000', '--token-requests-per-minute', '100000000',
      '--generations-per-minute', '100000000', '--tokens-per-hour', '1000000000000',
      '--generations-per-minute-per-ip', '100000000', '--tokens-per-hour-per-ip', '1000000000000', '--invite-users-per-hour', '100000000',
      '--frames-per-second', '100000000', '--frame-burst', '100000000',
      '--max-queue', '1024', '--max-queued-per-user', '64',
      '--token-ttl', '3600',
      // A closed benchmark client never leaves a reply running into the next measurement.
      '--resume-grace-ms', '0',
      '--shutdown-timeout-ms', '2000',
      ...(spec.extraArgs ?? []),
    ];
    const env = { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PARLEY_'))), ...spec.env };
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const errors: string[] = [];
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr = (stderr + chunk).slice(-4000); });
    // stdout must be drained for the server's whole life, or pino blocks it once the pipe fills.
    const lines = createInterface({ input: child.stdout });
    try {
      let llamaBuild: LlamaBuild | undefined;
      let device: string | false | undefined;
      const listening = await new Promise<{ port: number; transport: string }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the server did not start within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
        child.once('exit', (code) => {
          clearTimeout(timer);
          const reason = stderr.trim().split('\n').filter((line) => line.startsWith('parley:')).at(-1) ?? stderr.trim().slice(-500);
          reject(code === 2 && /uws|uWebSockets/i.test(reason)
            ? new TransportUnavailableError(reason)
            : new Error(`the server exited with ${code} before listening: ${reason}`));
        });
        lines.on('line', (line) => {
          // Cheap level check: parsing every record would cost the bench process CPU under load.
          if (/"level":(5\d|6\d)/.test(line) && errors.length < 20) errors.push(line.slice(0, 500));
          if (line.includes('"msg":"llama.cpp: ')) ({ llamaBuild, gpu: device } = JSON.parse(line) as { llamaBuild?: LlamaBuild; gpu?: string | false });
          if (!line.includes('"listening on')) return;
          const record = JSON.parse(line) as { port?: number; transport?: string };
          if (typeof record.port !== 'number') return;
          clearTimeout(timer);
          resolve({ port: record.port, transport: record.transport ?? spec.transport });
        });
      });
      child.removeAllListeners('exit');
      child.stderr.removeAllListeners('data');
      const server = new ServerProcess(child, dataDir, listening.port, listening.transport, llamaBuild, device, spec);
      lines.removeAllListeners('line');
      server.errors.push(...errors);
      lines.on('line', (line) => {
        if (/"level":(5\d|6\d)/.test(line) && server.errors.length < 20) server.errors.push(line.slice(0, 500));
      });
      return server;
    } catch (error) {
      child.kill('SIGKILL');
      await rm(dataDir, { recursive: true, force: true });
      throw error;
    }
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** An access token for user `name`, fetched once per name (each sign-in makes a new user). */
  token(name: string): Promise<string> {
    return this.tokens.get(name);
  }

  /** Resident memory of the server process, from the kernel (Linux); else /metrics. */
  async rssBytes(): Promise<number> {
    try {
      const status = await readFile(`/proc/${this.pid}/status`, 'utf8');
      const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
      if (match?.[1] !== undefined) return Number(match[1]) * 1024;
    } catch {
      // Not Linux: ask the server itself.
    }
    return this.metric('process_resident_memory_bytes');
  }

  /** One unlabelled series from the server's /metrics (loopback peers need no credential). */
  async metric(name: string): Promise<number> {
    const response = await fetch(`${this.origin}/metrics`);
    const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(await response.text());
    if (match?.[1] === undefined) throw new Error(`/metrics has no ${name}`);
    return Number(match[1]);
  }

  /** SIGTERM (graceful: closes every socket), SIGKILL if it overruns; then removes the data dir. */
  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await this.exited;
      clearTimeout(timer);
    }
    await this.exited;
    if (this.spec.dataDir === undefined) await rm(this.dataDir, { recursive: true, force: true });
  }

  /** At once, for an interrupted run. */
  kill(): void {
    this.stopping = true;
    this.child.kill('SIGKILL');
  }
}

import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { BenchModel } from './resolveModel.js';
import { streamChatCompletion, type ChatCompletionTrace } from './streamChatCompletion.js';

const START_TIMEOUT_MS = 180_000;
const STOP_TIMEOUT_MS = 10_000;

/**
 * llama.cpp's own server (`llama-server`), the usual way to serve several users from one model,
 * started as a child process on 127.0.0.1 with the same model, threads, slots and per-slot
 * context as Parley's servers in the same run: `-t`/`-tb` threads, `-np` slots, `-c` = slots ×
 * the per-sequence context (llama-server splits its context between slots; node-llama-cpp's
 * contextSize is per sequence). Requests are fresh, greedy, streamed chat completions with the
 * prompt cache off, like the benchmark's fresh Parley requests.
 *
 * Parley does not ship llama-server: pass a binary built from the llama.cpp source that
 * node-llama-cpp bundles (see README, "Benchmarks") to compare against the same llama.cpp commit.
 */
export class LlamaServerProcess {
  private readonly exited: Promise<void>;
  private stderrTailText = '';

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    readonly model: BenchModel,
    readonly slots: number,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrTailText = (this.stderrTailText + chunk).slice(-4000);
    });
    // Its stdout carries request logs: drain it so the pipe never blocks the server.
    child.stdout?.resume();
  }

  /** Whether the process has ended. */
  get ended(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  /** The last 4,000 characters llama-server wrote to stderr: its log, for error messages. */
  get stderrTail(): string {
    return this.stderrTailText;
  }

  static async start(binary: string, model: BenchModel, slots: number): Promise<LlamaServerProcess> {
    await access(binary, constants.X_OK).catch(() => {
      throw new Error(`--llama-server ${binary}: not an executable file`);
    });
    const port = await freePort();
    const threads = String(model.threads);
    const child = spawn(binary, [
      '--host', '127.0.0.1', '--port', String(port), '-m', model.path,
      '-t', threads, '-tb', threads, '-np', String(slots), '-c', String(model.contextSize * slots),
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new LlamaServerProcess(child, port, model, slots);
    const deadline = Date.now() + START_TIMEOUT_MS;
    let exitCode: number | null | undefined;
    child.once('exit', (code) => { exitCode = code; });
    while (Date.now() < deadline) {
      if (exitCode !== undefined) throw new Error(`llama-server exited with ${exitCode} before it was ready: ${server.stderrTail.trim().slice(-500)}`);
      const ready = await fetch(`${server.origin}/health`).then((response) => response.ok, () => false);
      if (ready) return server;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await server.stop();
    throw new Error(`llama-server was not ready within ${START_TIMEOUT_MS / 1000} s`);
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** One fresh, greedy, streamed chat completion of at most `maxTokens`. */
  complete(text: string, maxTokens: number, signal: AbortSignal): Promise<ChatCompletionTrace> {
    return streamChatCompletion(this.origin, { text, maxTokens, temperature: 0, signal });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}

/** A port free on 127.0.0.1 right now (llama-server cannot listen on port 0 and report it). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

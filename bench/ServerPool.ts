import { ServerProcess, TransportUnavailableError, type BenchTransport, type ServerSpec } from './ServerProcess.js';

/**
 * The servers of one run. Benchmarks that can share a server (same spec) do, which saves a
 * model load per benchmark; one that needs a clean process (memory per connection) gets its
 * own. A transport that fails to start once is not retried, and every server is stopped at the
 * end (or killed on Ctrl+C).
 */
export class ServerPool {
  private readonly shared = new Map<string, Promise<ServerProcess>>();
  private readonly all = new Set<ServerProcess>();
  private readonly unavailable = new Map<BenchTransport, TransportUnavailableError>();
  /** The llama.cpp binaries the servers reported running. */
  readonly llamaBuilds = new Set<string>();
  private readonly loggedErrors: Array<{ transport: string; lines: readonly string[] }> = [];

  /** The server for `spec`, started on first use. Rejects with TransportUnavailableError. */
  get(spec: ServerSpec): Promise<ServerProcess> {
    const key = JSON.stringify(spec);
    let server = this.shared.get(key);
    if (server === undefined) {
      server = this.start(spec);
      server.catch(() => this.shared.delete(key));
      this.shared.set(key, server);
    }
    return server;
  }

  /** A server of its own; stop it with `release`. */
  fresh(spec: ServerSpec): Promise<ServerProcess> {
    return this.start(spec);
  }

  /** Like `get`, but a transport that cannot run gives its reason instead of throwing. */
  async getOrReason(spec: ServerSpec): Promise<ServerProcess | { readonly unavailable: string }> {
    try {
      return await this.get(spec);
    } catch (error) {
      if (error instanceof TransportUnavailableError) return { unavailable: error.message };
      throw error;
    }
  }

  async release(server: ServerProcess): Promise<void> {
    if (!this.all.delete(server)) return;
    if (server.errors.length > 0) this.loggedErrors.push({ transport: server.transport, lines: server.errors });
    for (const [key, shared] of this.shared) {
      if ((await shared.catch(() => undefined)) === server) this.shared.delete(key);
    }
    await server.stop();
  }

  /** Stops the shared servers of one model once its benchmarks are done, to free its memory. */
  async releaseModel(modelPath: string): Promise<void> {
    for (const server of [...this.all]) {
      if (server.spec.modelPath === modelPath) await this.release(server);
    }
  }

  /** Error lines the servers logged (level error and above), by transport. */
  serverErrors(): Array<{ transport: string; lines: readonly string[] }> {
    const running = [...this.all].filter((server) => server.errors.length > 0).map((server) => ({ transport: server.transport, lines: server.errors }));
    return [...this.loggedErrors, ...running];
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.all].map((server) => this.release(server)));
  }

  killAll(): void {
    for (const server of this.all) server.kill();
  }

  private async start(spec: ServerSpec): Promise<ServerProcess> {
    const known = this.unavailable.get(spec.transport);
    if (known !== undefined) throw known;
    try {
      const server = await ServerProcess.start(spec);
      this.all.add(server);
      if (server.llamaBuild !== undefined) this.llamaBuilds.add(server.llamaBuild);
      return server;
    } catch (error) {
      if (error instanceof TransportUnavailableError) this.unavailable.set(spec.transport, error);
      throw error;
    }
  }
}

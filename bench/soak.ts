/**
 * Soak test: runs the real server (`server/main.ts`) as a child process on 127.0.0.1, holds many
 * idle authenticated sockets open while a few clients chat (send, stream, random cancels,
 * reconnects and abrupt drops), scrapes /metrics throughout, and checks that once the load is
 * gone the process returns near its baseline: memory, event-loop delay, handles, connections.
 *
 *   npm run soak -- --minutes 5 [--idle 200] [--chatters 4] [--transport auto|uws|ws] [--model file.gguf]
 *
 * Loopback only, and bounded in time and in sockets. Exit status: 0 PASS, 1 WARN, 2 error.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { InviteTokens } from './InviteTokens.js';
import { integerBetween, positiveNumber } from './parseArguments.js';
import { Command, Option } from 'commander';
import { WebSocket } from 'ws';
import { ensureModel } from '../models/ensureModel.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const INVITE = 'soak-invite-code-0000';
/** Sockets one user holds; below the server's default per-user cap of 8, like one person's tabs. */
const IDLE_PER_USER = 8;
/** A reply with no terminal frame after this long is counted as stuck: a protocol bug. */
const TERMINAL_TIMEOUT_MS = 120_000;

/**
 * When the end counts as "near baseline". Memory and delay get slack because V8 keeps heap it
 * grew under load and the machine may be shared; handles and connections must come back.
 */
const TOLERANCE = {
  /** End RSS may exceed the baseline by this much, or by rssFraction of it, whichever is larger. */
  rssMiB: 64,
  rssFraction: 0.25,
  /** End event-loop delay p99 may exceed the baseline by this much, or be up to lagFactor × it. */
  lagMs: 10,
  lagFactor: 2,
  /** Node handles (sockets, timers) above the baseline. */
  handles: 2,
} as const;

const Phase = {
  warmup: 'warmup',
  load: 'load',
  settle: 'settle',
} as const;
type Phase = (typeof Phase)[keyof typeof Phase];

const Verdict = {
  pass: 'PASS',
  warn: 'WARN',
} as const;
type Verdict = (typeof Verdict)[keyof typeof Verdict];

interface Options {
  minutes: number;
  idle: number;
  chatters: number;
  transport: string;
  model?: string;
  interval: number;
  warmup: number;
  settle: number;
  slots: number;
  maxTokens: number;
}

interface Figures {
  rssMiB: number;
  lagP99Ms: number;
  lagMeanMs: number;
  handles: number;
  connections: number;
  generationsActive: number;
  repliesDetached: number;
}

interface Sample extends Figures {
  t: number;
  phase: Phase;
  /** Cumulative client-side counts at the time of the sample. */
  replies: number;
  cancelled: number;
  errors: number;
  reconnects: number;
  idleOpen: number;
}

/** What the clients saw, cumulatively. */
const counts = {
  replies: 0,
  cancelled: 0,
  /** Requests that ended with an error frame, by code. */
  errors: 0,
  errorCodes: {} as Record<string, number>,
  /** Error frames about no request (e.g. a cancel that crossed its reply's `done`), by code. */
  notices: {} as Record<string, number>,
  stuck: 0,
  reconnects: 0,
  drops: 0,
  unexpectedCloses: {} as Record<string, number>,
  connectFailures: 0,
};

const program = new Command('soak')
  .description('Soak the real Parley server on loopback and check it returns to its baseline.')
  .addOption(new Option('--minutes <n>', 'load duration in minutes (fractions allowed)').argParser(positiveNumber(720)).default(5))
  .addOption(new Option('--idle <n>', 'idle authenticated sockets held open during the load').argParser(integerBetween(0, 5000)).default(200))
  .addOption(new Option('--chatters <n>', 'clients looping send → reply, with random cancels and reconnects').argParser(integerBetween(0, 64)).default(4))
  .addOption(new Option('--transport <name>', 'server transport').choices(['auto', 'uws', 'ws']).default('auto'))
  .addOption(new Option('--model <path>', "GGUF to serve (default: Parley's tiny test model)"))
  .addOption(new Option('--interval <seconds>', 'seconds between /metrics scrapes').argParser(positiveNumber(600)).default(5))
  .addOption(new Option('--warmup <seconds>', 'quiet seconds after the warm-up replies, before the baseline').argParser(positiveNumber(600)).default(10))
  .addOption(new Option('--settle <seconds>', 'seconds after the load stops, before the end figures').argParser(positiveNumber(600)).default(15))
  .addOption(new Option('--slots <n>', 'server slots').argParser(integerBetween(1, 64)).default(2))
  .addOption(new Option('--max-tokens <n>', 'server reply token cap').argParser(integerBetween(1, 100_000)).default(128));

program.parse(process.argv);
const options = program.opts<Options>();

let server: ServerProcess | undefined;

async function soak(options: Options): Promise<number> {
  const model = options.model ?? (await ensureModel('tiny')).path;
  const dataDir = await mkdtemp(join(tmpdir(), 'parley-soak-'));
  const started = Date.now();
  const elapsed = () => (Date.now() - started) / 1000;
  const samples: Sample[] = [];
  let phase: Phase = Phase.warmup;
  const idle: IdleSocket[] = [];

  try {
    server = await ServerProcess.start(model, dataDir, options);
    const running = server;
    process.stdout.write(`soak: Parley pid ${running.child.pid} on ${running.origin} (${running.transport}), model ${model}\n`);
    process.stdout.write(`soak: ${options.minutes} min load, ${options.idle} idle sockets, ${options.chatters} chatters, scrape every ${options.interval} s\n\n`);
    const table = new SampleTable();
    table.header();

    // Samples come only from this ticker: the event-loop delay figures cover the time since the
    // previous scrape (prom-client resets its histogram on each), so every sample spans one
    // whole interval, and the baseline and end samples span a quiet one.
    let scraping = Promise.resolve();
    let scrapeFailures = 0;
    const scrape = async () => {
      try {
        const sample = { t: Math.round(elapsed()), phase, ...(await running.figures()), ...clientCounts(idle) };
        samples.push(sample);
        table.row(sample);
      } catch (error) {
        scrapeFailures++;
        process.stderr.write(`soak: scrape failed: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    };
    const ticker = setInterval(() => { scraping = scraping.then(scrape); }, options.interval * 1000);
    const lastSampleOf = (wanted: Phase) => {
      const sample = samples.at(-1);
      if (sample?.phase !== wanted) throw new Error(`no ${wanted} sample (${scrapeFailures} scrapes failed)`);
      return sample;
    };

    try {
      // Warm-up: a few replies so lazily built state exists, then at least two quiet intervals.
      const warm = await ChatClient.connect(running, 'warmup');
      for (let index = 0; index < 3; index++) await warm.ask('Warm up, please.');
      warm.close();
      await sleep(Math.max(options.warmup, 2 * options.interval) * 1000);
      await scraping;
      const baseline = lastSampleOf(Phase.warmup);

      phase = Phase.load;
      const loadEnds = Date.now() + options.minutes * 60_000;
      const chatters = Array.from({ length: options.chatters }, (_, index) => chatterLoop(running, `chatter-${index}`, loadEnds));
      await openIdleSockets(running, options.idle, idle, loadEnds);
      await Promise.all(chatters);
      await sleep(Math.max(0, loadEnds - Date.now()));

      phase = Phase.settle;
      for (const socket of idle) socket.close();
      await sleep(Math.max(options.settle, 2 * options.interval) * 1000);
      await scraping;
      const end = lastSampleOf(Phase.settle);
      clearInterval(ticker);

      const stop = await running.stop();
      const verdicts = judge(baseline, end);
      const clean = stop.code === 0 && running.logged.error === 0 && counts.stuck === 0;
      const overall = Object.values(verdicts).every((verdict) => verdict.verdict === Verdict.pass) && clean ? Verdict.pass : Verdict.warn;
      report(baseline, end, verdicts, stop, running.logged, overall);
      const file = await writeResult({ options, model, transport: running.transport, baseline, end, verdicts, overall, stop, counts, serverLog: running.logged, tolerance: TOLERANCE, samples });
      process.stdout.write(`\nresult: ${file}\n`);
      return overall === Verdict.pass ? 0 : 1;
    } finally {
      clearInterval(ticker);
      for (const socket of idle) socket.terminate();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

function clientCounts(idle: readonly IdleSocket[]) {
  return {
    replies: counts.replies,
    cancelled: counts.cancelled,
    errors: counts.errors,
    reconnects: counts.reconnects,
    idleOpen: idle.filter((socket) => socket.open).length,
  };
}

/** One chatting user until `until`: ask, sometimes cancel, sometimes reconnect or drop the connection. */
async function chatterLoop(server: ServerProcess, name: string, until: number): Promise<void> {
  let client: ChatClient | undefined;
  while (Date.now() < until) {
    try {
      client ??= await ChatClient.connect(server, name);
    } catch {
      counts.connectFailures++;
      await sleep(1000);
      continue;
    }
    const roll = Math.random();
    if (roll < 0.05) {
      // Drop the connection mid-reply: the server keeps the reply for the resume grace, then cancels it.
      client.sendOnly(randomPrompt());
      await sleep(20 + Math.random() * 200);
      client.terminate();
      counts.drops++;
      client = undefined;
      continue;
    }
    await client.ask(randomPrompt(), roll < 0.3 ? 10 + Math.random() * 400 : undefined);
    if (!client.open) {
      client = undefined;
      continue;
    }
    if (Math.random() < 0.1) {
      client.close();
      client = undefined;
      counts.reconnects++;
    }
    await sleep(Math.random() * 300);
  }
  client?.close();
}

const PROMPTS = ['Tell me a story.', 'What is the weather like?', 'Write a short poem about the sea.', 'Explain WebSockets briefly.', 'Hello!'];
function randomPrompt(): string {
  return PROMPTS[Math.floor(Math.random() * PROMPTS.length)] ?? 'Hello!';
}

/** Opens `total` idle sockets, a few at a time, sharing one user per IDLE_PER_USER sockets. */
async function openIdleSockets(server: ServerProcess, total: number, into: IdleSocket[], until: number): Promise<void> {
  const batch = 16;
  for (let first = 0; first < total && Date.now() < until; first += batch) {
    const opened = await Promise.allSettled(
      Array.from({ length: Math.min(batch, total - first) }, async (_, offset) => {
        const index = first + offset;
        const token = await server.token(`idle-${Math.floor(index / IDLE_PER_USER)}`);
        return IdleSocket.open(server, token);
      }),
    );
    for (const result of opened) {
      if (result.status === 'fulfilled') into.push(result.value);
      else counts.connectFailures++;
    }
  }
}

/** The server as a child process: `node --import tsx server/main.ts` on 127.0.0.1, port 0. */
class ServerProcess {
  stderrTail = '';
  /** The server's own warn and error log records (pino levels 40 and up), the first few kept whole. */
  readonly logged = { warn: 0, error: 0, first: [] as Array<Record<string, unknown>> };
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly tokens: InviteTokens;

  private constructor(readonly child: ChildProcess, readonly port: number, readonly transport: string) {
    this.tokens = new InviteTokens(`http://127.0.0.1:${port}`, INVITE);
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { this.stderrTail = (this.stderrTail + chunk).slice(-4000); });
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      let record: { level?: number } & Record<string, unknown>;
      try {
        record = JSON.parse(line) as typeof record;
      } catch {
        return;
      }
      if ((record.level ?? 0) < 40) return;
      if ((record.level ?? 0) >= 50) this.logged.error++;
      else this.logged.warn++;
      if (this.logged.first.length < 10) this.logged.first.push(record);
    });
    void this.exited.then(({ code, signal }) => {
      if (!this.stopping) {
        process.stderr.write(`soak: the server exited during the soak (code ${code}, signal ${signal})\n${this.stderrTail}\n`);
        process.exit(2);
      }
    });
  }

  private stopping = false;

  static async start(model: string, dataDir: string, options: Options): Promise<ServerProcess> {
    const connections = options.idle + 2 * options.chatters + 16;
    const args = [
      '--import', 'tsx', 'server/main.ts',
      '--host', '127.0.0.1', '--port', '0', '--transport', options.transport, '--model', model,
      '--threads', '1', '--slots', String(options.slots), '--max-tokens', String(options.maxTokens),
      '--data-dir', dataDir, '--invite', INVITE, '--no-qr', '--log-level', 'info',
      // Every client comes from 127.0.0.1, so the per-IP limits must fit the whole soak; the
      // per-user and per-connection limits stay at their defaults.
      '--max-connections-per-ip', String(connections),
      '--upgrades-per-minute', String(connections * 4),
      '--token-requests-per-minute', String(connections * 4),
      '--generations-per-minute', '100000',
      '--tokens-per-hour', '1000000000',
      // Every client comes from 127.0.0.1: the per-address budgets and the new-user cap would refuse them.
      '--generations-per-minute-per-ip', '100000',
      '--tokens-per-hour-per-ip', '1000000000',
      '--invite-users-per-hour', String(connections * 4),
      // Idle sockets outlive the default 5-minute token; a soak is bounded well below a day.
      '--token-ttl', '86400',
      // Dropped replies are kept briefly, so the settle period sees them gone.
      '--resume-grace-ms', '2000',
      '--shutdown-timeout-ms', '5000',
    ];
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PARLEY_')));
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const listening = await new Promise<{ port: number; transport: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server did not start within 120 s')), 120_000);
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr = (stderr + chunk).slice(-4000); });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the server exited with ${code} before listening: ${stderr.trim()}`));
      });
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        try {
          const record = JSON.parse(line) as { msg?: string; port?: number; transport?: string };
          if (record.msg?.startsWith('listening on') && typeof record.port === 'number') {
            clearTimeout(timer);
            resolve({ port: record.port, transport: record.transport ?? options.transport });
          }
        } catch {
          // Not a log line.
        }
      });
    }).catch((error: unknown) => {
      child.kill('SIGKILL');
      throw error;
    });
    return new ServerProcess(child, listening.port, listening.transport);
  }

  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** One access token per user name, fetched once (they last a day here). */
  token(name: string): Promise<string> {
    return this.tokens.get(name);
  }

  async figures(): Promise<Figures> {
    const response = await fetch(`${this.origin}/metrics`);
    if (response.status !== 200) throw new Error(`GET /metrics: ${response.status}`);
    const metrics = parsePrometheus(await response.text());
    const value = (name: string) => {
      const found = metrics.get(name);
      if (found === undefined) throw new Error(`/metrics has no ${name}`);
      return found;
    };
    return {
      rssMiB: value('process_resident_memory_bytes') / 2 ** 20,
      lagP99Ms: value('nodejs_eventloop_lag_p99_seconds') * 1000,
      lagMeanMs: value('nodejs_eventloop_lag_mean_seconds') * 1000,
      handles: value('nodejs_active_handles_total'),
      connections: value('parley_connections'),
      generationsActive: value('parley_generations_active'),
      repliesDetached: metrics.get('parley_replies_detached') ?? 0,
    };
  }

  /** Ends the server at once (an aborted soak). */
  kill(): void {
    this.stopping = true;
    this.child.kill('SIGKILL');
  }

  /** SIGTERM, and how the graceful stop went. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    this.stopping = true;
    const started = Date.now();
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 60_000);
    const exit = await this.exited;
    clearTimeout(timer);
    return { ...exit, ms: Date.now() - started };
  }
}

/**
 * Sums the samples of each series name across its label sets. A declared metric with no samples
 * (a labelled gauge with nothing to count) reads 0; an undeclared one is absent.
 */
function parsePrometheus(text: string): Map<string, number> {
  const metrics = new Map<string, number>();
  for (const line of text.split('\n')) {
    const declared = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) /.exec(line);
    if (declared?.[1] !== undefined && !metrics.has(declared[1])) metrics.set(declared[1], 0);
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!match?.[1] || match[3] === undefined) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) metrics.set(match[1], (metrics.get(match[1]) ?? 0) + value);
  }
  return metrics;
}

/** Opens a socket the Parley way: the parley.v1 and bearer subprotocols, our own Origin; resolves on `ready`. */
function openSocket(server: ServerProcess, token: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${server.port}/ws`, ['parley.v1', `bearer.${token}`], { origin: server.origin });
    const timer = setTimeout(() => {
      socket.terminate();
      reject(new Error('no ready frame within 30 s'));
    }, 30_000);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once('unexpected-response', (_request, response) => {
      clearTimeout(timer);
      socket.terminate();
      reject(new Error(`upgrade refused: ${response.statusCode}`));
    });
    socket.on('message', function onMessage(data) {
      if ((JSON.parse(String(data)) as { type?: string }).type !== 'ready') return;
      clearTimeout(timer);
      socket.off('message', onMessage);
      socket.removeAllListeners('error');
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}

/** A socket that only holds its place: the ws client answers the server's pings by itself. */
class IdleSocket {
  private constructor(private readonly socket: WebSocket) {
    socket.on('close', (code) => {
      if (!this.closing) countUnexpectedClose(code);
    });
  }

  private closing = false;

  static async open(server: ServerProcess, token: string): Promise<IdleSocket> {
    return new IdleSocket(await openSocket(server, token));
  }

  get open(): boolean {
    return this.socket.readyState === WebSocket.OPEN;
  }

  close(): void {
    this.closing = true;
    this.socket.close(1000);
  }

  terminate(): void {
    this.closing = true;
    this.socket.terminate();
  }
}

function countUnexpectedClose(code: number): void {
  counts.unexpectedCloses[code] = (counts.unexpectedCloses[code] ?? 0) + 1;
}

type TerminalType = 'done' | 'cancelled' | 'error';

/** A chatting client: one request at a time, each awaited to its terminal frame. */
class ChatClient {
  private counter = 0;
  private closing = false;
  private readonly pending = new Map<string, (type: TerminalType) => void>();

  private constructor(private readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { type: string; id?: string; code?: string };
      if (frame.type === 'error' && frame.id === undefined) counts.notices[frame.code ?? '?'] = (counts.notices[frame.code ?? '?'] ?? 0) + 1;
      if (frame.id === undefined || !(frame.type === 'done' || frame.type === 'cancelled' || frame.type === 'error')) return;
      this.pending.get(frame.id)?.(frame.type);
      this.pending.delete(frame.id);
      if (frame.type === 'done') counts.replies++;
      else if (frame.type === 'cancelled') counts.cancelled++;
      else {
        counts.errors++;
        counts.errorCodes[frame.code ?? '?'] = (counts.errorCodes[frame.code ?? '?'] ?? 0) + 1;
      }
    });
    socket.on('close', (code) => {
      if (!this.closing) countUnexpectedClose(code);
      for (const resolve of this.pending.values()) resolve('error');
      this.pending.clear();
    });
  }

  static async connect(server: ServerProcess, name: string): Promise<ChatClient> {
    return new ChatClient(await openSocket(server, await server.token(name)));
  }

  get open(): boolean {
    return this.socket.readyState === WebSocket.OPEN;
  }

  sendOnly(text: string): string {
    const id = `s${++this.counter}`;
    this.socket.send(JSON.stringify({ type: 'send', id, text }));
    return id;
  }

  /** Sends, optionally cancels after `cancelAfterMs`, and waits for the terminal frame. */
  async ask(text: string, cancelAfterMs?: number): Promise<TerminalType | 'stuck'> {
    const id = this.sendOnly(text);
    const terminal = new Promise<TerminalType | 'stuck'>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        counts.stuck++;
        resolve('stuck');
      }, TERMINAL_TIMEOUT_MS);
      this.pending.set(id, (type) => {
        clearTimeout(timer);
        resolve(type);
      });
    });
    if (cancelAfterMs !== undefined) {
      const cancel = setTimeout(() => {
        if (this.open && this.pending.has(id)) this.socket.send(JSON.stringify({ type: 'cancel', id }));
      }, cancelAfterMs);
      void terminal.then(() => clearTimeout(cancel));
    }
    return terminal;
  }

  close(): void {
    this.closing = true;
    this.socket.close(1000);
  }

  terminate(): void {
    this.closing = true;
    this.socket.terminate();
  }
}

interface Judgement {
  baseline: number;
  end: number;
  limit: number;
  verdict: Verdict;
}

function judge(baseline: Figures, end: Figures): Record<string, Judgement> {
  const within = (base: number, value: number, limit: number): Judgement => ({
    baseline: round(base),
    end: round(value),
    limit: round(limit),
    verdict: value <= limit ? Verdict.pass : Verdict.warn,
  });
  return {
    rssMiB: within(baseline.rssMiB, end.rssMiB, baseline.rssMiB + Math.max(TOLERANCE.rssMiB, baseline.rssMiB * TOLERANCE.rssFraction)),
    lagP99Ms: within(baseline.lagP99Ms, end.lagP99Ms, Math.max(baseline.lagP99Ms + TOLERANCE.lagMs, baseline.lagP99Ms * TOLERANCE.lagFactor)),
    handles: within(baseline.handles, end.handles, baseline.handles + TOLERANCE.handles),
    connections: within(baseline.connections, end.connections, 0),
    generationsActive: within(baseline.generationsActive, end.generationsActive, 0),
  };
}

function report(
  baseline: Sample,
  end: Sample,
  verdicts: Record<string, Judgement>,
  stop: { code: number | null; ms: number },
  logged: ServerProcess['logged'],
  overall: Verdict,
): void {
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out('');
  out(`clients: ${counts.replies} replies done, ${counts.cancelled} cancelled, ${counts.errors} ended in error ${JSON.stringify(counts.errorCodes)}, ${counts.stuck} stuck (no terminal frame); ` +
    `${counts.reconnects} reconnects, ${counts.drops} dropped mid-reply, ${counts.connectFailures} failed connects; ` +
    `other error frames ${JSON.stringify(counts.notices)}, unexpected closes ${JSON.stringify(counts.unexpectedCloses)}`);
  out(`server log: ${logged.error} errors, ${logged.warn} warnings`);
  for (const record of logged.first.filter((entry) => (entry.level as number) >= 50).slice(0, 3)) {
    const err = record.err as { type?: string; message?: string } | undefined;
    out(`  ${String(record.msg)}${err ? `: ${err.type ?? ''} ${err.message ?? ''}` : ''}`);
  }
  out(`baseline at ${baseline.t} s, end at ${end.t} s (after ${options.settle} s settling, every socket closed)`);
  out('');
  const rows = [['', 'baseline', 'end', 'limit', 'verdict'], ...Object.entries(verdicts).map(([name, judgement]) => [name, String(judgement.baseline), String(judgement.end), `≤ ${judgement.limit}`, judgement.verdict])];
  rows.push(['graceful stop', '', `exit ${stop.code}`, 'exit 0', stop.code === 0 ? Verdict.pass : Verdict.warn]);
  rows.push(['server errors', '', String(logged.error), '0', logged.error === 0 ? Verdict.pass : Verdict.warn]);
  rows.push(['stuck replies', '', String(counts.stuck), '0', counts.stuck === 0 ? Verdict.pass : Verdict.warn]);
  const widths = rows[0]?.map((_, column) => Math.max(...rows.map((row) => row[column]?.length ?? 0))) ?? [];
  for (const row of rows) out(row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))).join('  '));
  out('');
  out(`tolerances: RSS +max(${TOLERANCE.rssMiB} MiB, ${TOLERANCE.rssFraction * 100}%), event-loop p99 max(+${TOLERANCE.lagMs} ms, ×${TOLERANCE.lagFactor}), handles +${TOLERANCE.handles}, connections and generations 0`);
  out(`shutdown took ${stop.ms} ms`);
  out(`verdict: ${overall}`);
}

async function writeResult(result: Record<string, unknown>): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `soak-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, ...result }, null, 2)}\n`);
  return file;
}

/** Padded columns, printed as samples arrive. */
class SampleTable {
  private readonly columns: ReadonlyArray<readonly [string, number, (sample: Sample) => string]> = [
    ['t(s)', 6, (sample) => String(sample.t)],
    ['phase', 7, (sample) => sample.phase],
    ['rss MiB', 8, (sample) => sample.rssMiB.toFixed(1)],
    ['lag p99', 8, (sample) => `${sample.lagP99Ms.toFixed(1)}ms`],
    ['lag mean', 9, (sample) => `${sample.lagMeanMs.toFixed(1)}ms`],
    ['handles', 8, (sample) => String(sample.handles)],
    ['conns', 6, (sample) => String(sample.connections)],
    ['gens', 5, (sample) => String(sample.generationsActive)],
    ['detached', 9, (sample) => String(sample.repliesDetached)],
    ['idle', 5, (sample) => String(sample.idleOpen)],
    ['replies', 8, (sample) => String(sample.replies)],
    ['cancels', 8, (sample) => String(sample.cancelled)],
    ['errors', 7, (sample) => String(sample.errors)],
    ['reconn', 7, (sample) => String(sample.reconnects)],
  ];

  header(): void {
    process.stdout.write(`${this.columns.map(([title, width]) => title.padStart(width)).join(' ')}\n`);
  }

  row(sample: Sample): void {
    process.stdout.write(`${this.columns.map(([, width, cell]) => cell(sample).padStart(width)).join(' ')}\n`);
  }
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Last, so that every class above is initialised before the soak uses it.
process.once('SIGINT', () => {
  process.stderr.write('\nsoak: interrupted; stopping the server\n');
  server?.kill();
  process.exit(2);
});
try {
  process.exitCode = await soak(options);
} catch (error) {
  process.stderr.write(`soak: ${error instanceof Error ? error.message : String(error)}\n`);
  if (server?.stderrTail) process.stderr.write(`server stderr (last lines):\n${server.stderrTail}\n`);
  process.exitCode = 2;
} finally {
  server?.kill();
}

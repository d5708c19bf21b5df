import { randomInt } from 'node:crypto';
import pg from 'pg';
import type { Logger } from 'pino';
import { AdvisoryLock } from './AdvisoryLock.js';

/** How long the presence session waits before it reconnects after losing its connection. */
const RECONNECT_MS = 1000;

/**
 * Tells the other gateways on the same database that this one is running: a session of its own
 * holds the advisory lock (AdvisoryLock.presence, `key`) for as long as the gateway runs.
 * PostgreSQL ends the session, and with it the lock, when the process dies (its socket closes),
 * so "the lock is held" means "that gateway is alive" without clocks or heartbeats.
 *
 * Rows the gateway writes carry `key` (messages.writer); `liveKeysSql` lists the keys held now.
 * If the session drops while the gateway runs, it reconnects and takes the same key again; in the
 * gap another gateway starting may mark this one's streaming replies interrupted, and the reply's
 * next outcome (done, stopped, error) overwrites that mark.
 */
export class PostgresPresence {
  /** Positive int4, random: two gateways drawing the same one is caught by the lock itself. */
  private currentKey = randomInt(1, 2 ** 31 - 1);
  private client: pg.Client | undefined;
  /** When the current session took the lock (performance.now()); undefined while it has none. */
  private heldSince: number | undefined;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly config: pg.ClientConfig,
    private readonly shownUrl: string,
    private readonly logger: Pick<Logger, 'warn' | 'info'> | undefined,
  ) {}

  get key(): number {
    return this.currentKey;
  }

  /** How long this gateway has held its lock without a break; 0 while it holds none. */
  heldForMs(): number {
    return this.heldSince === undefined ? 0 : performance.now() - this.heldSince;
  }

  /** Connects and takes a key nobody holds; rejects if the database cannot be reached. */
  async start(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (await this.connect()) return;
      if (attempt >= 3) throw new Error('no free presence key after 4 draws');
      this.currentKey = randomInt(1, 2 ** 31 - 1);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    this.heldSince = undefined;
    await client?.end().catch(() => undefined);
  }

  /** Resolves false if another session holds the key. */
  private async connect(): Promise<boolean> {
    const client = new pg.Client({ ...this.config, application_name: 'parley presence', keepAlive: true });
    client.on('error', (error: Error) => this.logger?.warn({ database: this.shownUrl, err: { message: error.message } }, 'history database presence session failed'));
    try {
      await client.connect();
      const { rows } = await client.query<{ held: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS held', [AdvisoryLock.presence, this.currentKey]);
      if (rows[0]?.held !== true) {
        await client.end();
        return false;
      }
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    client.once('end', () => this.lost(client));
    this.client = client;
    this.heldSince = performance.now();
    return true;
  }

  private lost(client: pg.Client): void {
    if (this.closed || this.client !== client) return;
    this.client = undefined;
    this.heldSince = undefined;
    this.logger?.warn({ database: this.shownUrl }, 'history database presence session lost; reconnecting');
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this.reconnectTimer = setTimeout(() => {
      if (this.closed) return;
      this.connect().then(
        (held) => {
          if (this.closed) {
            void this.close();
          } else if (held) {
            this.logger?.info({ database: this.shownUrl }, 'history database presence session back');
          } else {
            this.logger?.warn({ database: this.shownUrl, key: this.currentKey }, 'presence key held by another session; retrying');
            this.scheduleReconnect();
          }
        },
        () => this.scheduleReconnect(),
      );
    }, RECONNECT_MS);
    this.reconnectTimer.unref();
  }
}

/**
 * The presence keys held now in the current database, as one column `key` (int8). For
 * `writer NOT IN (…)`: a streaming row whose writer is not among them was left by a gateway that
 * stopped.
 */
export const liveKeysSql = `SELECT l.objid::int8 AS key FROM pg_locks l
  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
    AND l.classid::int8 = ${AdvisoryLock.presence}
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`;

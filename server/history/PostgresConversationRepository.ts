import pg from 'pg';
import { CONVERSATION_COLUMNS, conversationFromRow, messageFromRow, type ConversationRow, type MessageRow, type SummaryRow } from './historyRows.js';
import type { Logger } from 'pino';
import { redactUrl } from '../cluster/redactUrl.js';
import { applyPostgresMigrations } from './applyPostgresMigrations.js';
import type {
  ConversationRepository,
  ConversationSummary,
  ImportedConversation,
  MessageUpdate,
  StoredConversation,
  StoredMessage,
} from './ConversationRepository.js';
import type { HistoryCipher } from './HistoryCipher.js';
import { HistoryKeyMismatchError } from './HistoryKeyMismatchError.js';
import { HistoryUnreadableError } from './HistoryUnreadableError.js';
import { listLimit } from './listLimit.js';
import { postgresMigrations } from './postgresMigrations.js';
import { liveKeysSql, PostgresPresence } from './PostgresPresence.js';
import { KEY_CHECK_TEXT, SealContext } from './SealContext.js';
import { withTransaction } from './withTransaction.js';

export interface PostgresRepositoryOptions {
  /** `postgres://` URL of the database; its password is never logged nor put in an error. */
  readonly url: string;
  /** Every gateway of a cluster must be given the same key. */
  readonly cipher: HistoryCipher;
  readonly logger?: Pick<Logger, 'warn' | 'info'>;
  /** Connections the pool opens at most (besides the presence session). */
  readonly poolSize?: number;
  /** How long opening a connection may take before it fails. */
  readonly connectTimeoutMs?: number;
  /** purgeIdle deletes at most this many conversations per statement. */
  readonly purgeBatchSize?: number;
  /** Rows per INSERT when importing. */
  readonly importBatchSize?: number;
  /** How often markAbandoned runs while the store is open; 0 never (tests call it). */
  readonly abandonedSweepMs?: number;
}

/**
 * markAbandoned runs only once this gateway has held its presence lock this long without a
 * break: after a database restart every gateway's session drops at once, and each takes its lock
 * back within a second or so (PostgresPresence), so none marks the others' replies meanwhile.
 */
const SETTLED_PRESENCE_MS = 10_000;

/**
 * Conversations in a PostgreSQL database shared by several gateways (`--database`), sealed like
 * SqliteConversationRepository: message text and titles encrypted by HistoryCipher with the same
 * contexts (SealContext), ids, owners, times, counts and outcomes plain because queries need them.
 *
 * - open() applies migrations under an advisory lock (applyPostgresMigrations), then checks the
 *   key: the first gateway seals the key check, every later one must read it back, so a gateway
 *   given another key stops at start.
 * - Every write that touches several rows is one statement or one transaction: appendMessage's
 *   insert and its conversation's new updatedAt are one statement (a refused insert leaves
 *   updatedAt alone); importConversations is one transaction.
 * - markInterrupted marks only replies no running gateway is writing: each message records the
 *   presence key of the gateway that last wrote it (PostgresPresence), and a reply whose writer's
 *   presence lock is still held (another gateway streams it right now) is left alone. This
 *   gateway's own replies, and those of gateways that stopped, are marked. While the store is
 *   open, markAbandoned does the same every minute for the other gateways' replies only, so a
 *   gateway that crashed while the others run does not leave its replies streaming for ever.
 * - BIGINT columns are read as numbers (epoch ms and counts are far below 2^53).
 * - A deleted row's ciphertext stays in the table's files until VACUUM reuses the space; unlike
 *   SQLite's secure_delete it is not zeroed at once. It stays encrypted.
 */
export class PostgresConversationRepository implements ConversationRepository {
  private readonly url: string;
  private readonly shownUrl: string;
  private readonly cipher: HistoryCipher;
  private readonly logger: Pick<Logger, 'warn' | 'info'> | undefined;
  private readonly poolSize: number;
  private readonly connectTimeoutMs: number;
  private readonly purgeBatchSize: number;
  private readonly importBatchSize: number;
  private readonly abandonedSweepMs: number;
  private state: State = { phase: 'created' };

  constructor(options: PostgresRepositoryOptions) {
    this.url = options.url;
    this.shownUrl = redactUrl(options.url);
    this.cipher = options.cipher;
    this.logger = options.logger;
    this.poolSize = options.poolSize ?? 10;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.purgeBatchSize = options.purgeBatchSize ?? 500;
    this.importBatchSize = options.importBatchSize ?? 1000;
    this.abandonedSweepMs = options.abandonedSweepMs ?? 60_000;
  }

  /** The open pool, for the stores that share this database (PostgresDocumentRepository). */
  get pool(): pg.Pool {
    return this.ready().pool;
  }

  /** This gateway's presence key, recorded as the writer of every message it writes. */
  get writerKey(): number {
    return this.ready().presence.key;
  }

  async open(): Promise<void> {
    if (this.state.phase !== 'created') throw new Error(`open() runs once; the history store is ${this.state.phase}`);
    this.state = { phase: 'opening' };
    const config: pg.ClientConfig = {
      connectionString: this.url,
      connectionTimeoutMillis: this.connectTimeoutMs,
      keepAlive: true,
      types: { getTypeParser: parseType },
    };
    const pool = new pg.Pool({ ...config, max: this.poolSize, application_name: 'parley' });
    pool.on('error', (error: Error) => this.logger?.warn({ database: this.shownUrl, err: { message: this.scrub(error.message) } }, 'idle history database connection failed'));
    const presence = new PostgresPresence(config, this.shownUrl, this.logger);
    try {
      await this.reach(pool);
      await applyPostgresMigrations(pool, postgresMigrations);
      await this.checkKey(pool);
      await presence.start();
      if (this.state.phase !== 'opening') throw new Error('the history store was closed while it opened');
    } catch (error) {
      await presence.close();
      await pool.end().catch(() => undefined);
      this.state = { phase: 'closed' };
      throw error;
    }
    const sweep = this.abandonedSweepMs > 0 ? setInterval(() => void this.sweepAbandoned(), this.abandonedSweepMs) : undefined;
    sweep?.unref();
    this.state = { phase: 'open', pool, presence, sweep };
  }

  async createConversation(conversation: StoredConversation): Promise<void> {
    await this.ready().pool.query(
      'INSERT INTO conversations (id, owner_id, title, created_at, updated_at, model) VALUES ($1, $2, $3, $4, $5, $6)',
      [conversation.id, conversation.ownerId, this.sealTitle(conversation.ownerId, conversation.id, conversation.title), conversation.createdAt, conversation.updatedAt, conversation.model],
    );
  }

  async getConversation(ownerId: string, id: string): Promise<StoredConversation | undefined> {
    const { rows } = await this.ready().pool.query<ConversationRow>(`SELECT ${CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = $1 AND c.owner_id = $2`, [id, ownerId]);
    return rows[0] === undefined ? undefined : conversationFromRow(rows[0], this.cipher);
  }

  async listConversations(ownerId: string, options: { readonly limit?: number } = {}): Promise<ConversationSummary[]> {
    const limit = listLimit(options.limit);
    const { rows } = await this.ready().pool.query<SummaryRow>(
      `SELECT ${CONVERSATION_COLUMNS}, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count
       FROM conversations c WHERE c.owner_id = $1 ORDER BY c.updated_at DESC, c.id DESC LIMIT $2`,
      [ownerId, limit],
    );
    return rows.map((row) => ({ ...conversationFromRow(row, this.cipher), messageCount: row.message_count }));
  }

  async countConversations(ownerId: string): Promise<number> {
    const { rows } = await this.ready().pool.query<{ count: number }>('SELECT COUNT(*) AS count FROM conversations WHERE owner_id = $1', [ownerId]);
    return rows[0]?.count ?? 0;
  }

  async listMessages(ownerId: string, conversationId: string): Promise<StoredMessage[]> {
    const { rows } = await this.ready().pool.query<MessageRow>(
      `SELECT m.id, m.conversation_id, m.role, m.text, m.created_at, m.token_count, m.request_id, m.outcome
       FROM messages m JOIN conversations c ON c.id = m.conversation_id
       WHERE m.conversation_id = $1 AND c.owner_id = $2 ORDER BY m.seq`,
      [conversationId, ownerId],
    );
    return rows.map((row) => messageFromRow(row, this.cipher));
  }

  async appendMessage(ownerId: string, message: StoredMessage): Promise<boolean> {
    const { pool, presence } = this.ready();
    // One statement: the conversation's row lock orders appends to it, and a refused insert
    // (an id in use) rolls back the new updatedAt with it.
    const result = await pool.query(
      `WITH touched AS (UPDATE conversations SET updated_at = $3 WHERE id = $2 AND owner_id = $10 RETURNING id)
       INSERT INTO messages (id, conversation_id, role, text, created_at, token_count, request_id, outcome, writer)
       SELECT $1, touched.id, $4, $5, $3, $6, $7, $8, $9 FROM touched`,
      [
        message.id,
        message.conversationId,
        message.createdAt,
        message.role,
        this.sealText(message.conversationId, message.id, message.text),
        message.tokenCount ?? null,
        message.requestId ?? null,
        message.outcome ?? null,
        presence.key,
        ownerId,
      ],
    );
    return result.rowCount === 1;
  }

  async updateMessage(ownerId: string, messageId: string, update: MessageUpdate): Promise<boolean> {
    const { pool, presence } = this.ready();
    const { rows } = await pool.query<{ conversation_id: string }>(
      'SELECT m.conversation_id FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = $1 AND c.owner_id = $2',
      [messageId, ownerId],
    );
    const conversationId = rows[0]?.conversation_id;
    if (conversationId === undefined) return false;
    const text = update.text === undefined ? null : this.sealText(conversationId, messageId, update.text);
    // NULL keeps a column: an update never clears text, a count or an outcome. A message never
    // changes conversation, so the id pair still names the row checked above, or none if deleted since.
    const result = await pool.query(
      `UPDATE messages SET text = COALESCE($1, text), token_count = COALESCE($2, token_count), outcome = COALESCE($3, outcome), writer = $4
       WHERE id = $5 AND conversation_id = $6`,
      [text, update.tokenCount ?? null, update.outcome ?? null, presence.key, messageId, conversationId],
    );
    return result.rowCount === 1;
  }

  async deleteMessages(ownerId: string, conversationId: string, messageIds: readonly string[]): Promise<number> {
    const result = await this.ready().pool.query(
      `DELETE FROM messages m USING conversations c
       WHERE c.id = m.conversation_id AND c.owner_id = $1 AND m.conversation_id = $2 AND m.id = ANY($3::text[])`,
      [ownerId, conversationId, [...new Set(messageIds)]],
    );
    return result.rowCount ?? 0;
  }

  async renameConversation(ownerId: string, id: string, title: string): Promise<boolean> {
    const result = await this.ready().pool.query('UPDATE conversations SET title = $1 WHERE id = $2 AND owner_id = $3', [this.sealTitle(ownerId, id, title), id, ownerId]);
    return result.rowCount === 1;
  }

  async setConversationModel(ownerId: string, id: string, model: string): Promise<boolean> {
    const result = await this.ready().pool.query('UPDATE conversations SET model = $1 WHERE id = $2 AND owner_id = $3', [model, id, ownerId]);
    return result.rowCount === 1;
  }

  async deleteConversation(ownerId: string, id: string): Promise<boolean> {
    const result = await this.ready().pool.query('DELETE FROM conversations WHERE id = $1 AND owner_id = $2', [id, ownerId]);
    return result.rowCount === 1;
  }

  async deleteAllConversations(ownerId: string): Promise<number> {
    const result = await this.ready().pool.query('DELETE FROM conversations WHERE owner_id = $1', [ownerId]);
    return result.rowCount ?? 0;
  }

  async purgeIdle(before: number): Promise<number> {
    let deleted = 0;
    for (;;) {
      // close() may have run meanwhile: the batches done stay done, the rest waits for next time.
      if (this.state.phase !== 'open' && deleted > 0) return deleted;
      // SKIP LOCKED: gateways purging at once share the work instead of waiting on each other.
      const result = await this.ready().pool.query(
        'DELETE FROM conversations WHERE id IN (SELECT id FROM conversations WHERE updated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)',
        [before, this.purgeBatchSize],
      );
      const batch = result.rowCount ?? 0;
      deleted += batch;
      if (batch < this.purgeBatchSize) return deleted;
    }
  }

  async markInterrupted(): Promise<number> {
    const { pool, presence } = this.ready();
    const result = await pool.query(
      `UPDATE messages SET outcome = 'interrupted'
       WHERE outcome = 'streaming' AND (writer IS NULL OR writer = $1 OR writer NOT IN (${liveKeysSql}))`,
      [presence.key],
    );
    return result.rowCount ?? 0;
  }

  /**
   * Marks interrupted the streaming replies of other gateways that stopped (their presence lock
   * is gone), never this gateway's own; resolves with how many. Does nothing until this
   * gateway's own lock has been held for SETTLED_PRESENCE_MS, or `settledMs`.
   */
  async markAbandoned(settledMs = SETTLED_PRESENCE_MS): Promise<number> {
    const { pool, presence } = this.ready();
    if (presence.heldForMs() < settledMs) return 0;
    const result = await pool.query(
      `UPDATE messages SET outcome = 'interrupted'
       WHERE outcome = 'streaming' AND writer IS DISTINCT FROM $1 AND (writer IS NULL OR writer NOT IN (${liveKeysSql}))`,
      [presence.key],
    );
    return result.rowCount ?? 0;
  }

  async importConversations(entries: readonly ImportedConversation[]): Promise<void> {
    const { pool, presence } = this.ready();
    for (const { conversation, messages } of entries) {
      for (const message of messages) {
        if (message.conversationId !== conversation.id) throw new Error(`message ${message.id} names conversation ${message.conversationId}, not ${conversation.id}`);
      }
    }
    const messages = entries.flatMap((entry) => entry.messages);
    await withTransaction(pool, async (client) => {
      for (const batch of batches(entries, this.importBatchSize)) {
        const conversations = batch.map((entry) => entry.conversation);
        await client.query(
          `INSERT INTO conversations (id, owner_id, title, created_at, updated_at, model)
           SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[], $5::int8[], $6::text[])`,
          [
            conversations.map((c) => c.id),
            conversations.map((c) => c.ownerId),
            conversations.map((c) => this.sealTitle(c.ownerId, c.id, c.title)),
            conversations.map((c) => c.createdAt),
            conversations.map((c) => c.updatedAt),
            conversations.map((c) => c.model),
          ],
        );
      }
      for (const batch of batches(messages, this.importBatchSize)) {
        // Inserted in the order given, so the identity column numbers them in that order.
        await client.query(
          `INSERT INTO messages (id, conversation_id, role, text, created_at, token_count, request_id, outcome, writer)
           SELECT id, conversation_id, role, text, created_at, token_count, request_id, outcome, $9
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int8[], $6::int4[], $7::text[], $8::text[])
             WITH ORDINALITY AS m (id, conversation_id, role, text, created_at, token_count, request_id, outcome, n)
           ORDER BY n`,
          [
            batch.map((m) => m.id),
            batch.map((m) => m.conversationId),
            batch.map((m) => m.role),
            batch.map((m) => this.sealText(m.conversationId, m.id, m.text)),
            batch.map((m) => m.createdAt),
            batch.map((m) => m.tokenCount ?? null),
            batch.map((m) => m.requestId ?? null),
            batch.map((m) => m.outcome ?? null),
            presence.key,
          ],
        );
      }
    });
  }

  async close(): Promise<void> {
    const previous = this.state;
    this.state = { phase: 'closed' };
    if (previous.phase === 'open') {
      clearInterval(previous.sweep);
      await previous.presence.close();
      await previous.pool.end();
    }
  }

  private ready(): OpenState {
    if (this.state.phase !== 'open') throw new Error(`the history store is ${this.state.phase}, not open`);
    return this.state;
  }

  private async sweepAbandoned(): Promise<void> {
    try {
      const marked = await this.markAbandoned();
      if (marked > 0) this.logger?.warn({ interrupted: marked }, 'replies of a gateway that stopped are kept as interrupted');
    } catch (error) {
      if (this.state.phase === 'open') this.logger?.warn({ database: this.shownUrl, err: { message: this.scrub(error instanceof Error ? error.message : String(error)) } }, 'marking abandoned replies failed');
    }
  }

  /** One connection, to fail open() with a clear error naming the database (without its password). */
  private async reach(pool: pg.Pool): Promise<void> {
    try {
      const client = await pool.connect();
      client.release();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(`cannot reach the history database at ${this.shownUrl}: ${this.scrub(reason)}`);
    }
  }

  /** A driver's message with the URL and its password taken out, whatever it quoted. */
  private scrub(message: string): string {
    let scrubbed = message.replaceAll(this.url, this.shownUrl);
    const password = passwordOf(this.url);
    for (const form of [password, safeDecode(password)]) if (form !== '') scrubbed = scrubbed.replaceAll(form, '***');
    return scrubbed;
  }

  /** Seals a known value on first open (whichever gateway comes first) and reads it back on every open. */
  private async checkKey(pool: pg.Pool): Promise<void> {
    await pool.query(`INSERT INTO meta (key, value) VALUES ('key_check', $1) ON CONFLICT (key) DO NOTHING`, [this.cipher.encrypt(KEY_CHECK_TEXT, SealContext.keyCheck)]);
    const { rows } = await pool.query<{ value: Buffer }>(`SELECT value FROM meta WHERE key = 'key_check'`);
    try {
      const row = rows[0];
      if (row === undefined || this.cipher.decrypt(row.value, SealContext.keyCheck) !== KEY_CHECK_TEXT) throw new HistoryUnreadableError(SealContext.keyCheck.join(':'));
    } catch (error) {
      throw new HistoryKeyMismatchError(
        `the history database at ${this.shownUrl} was written with another history key than the one given: every gateway must be given the same --history-key file, the one it was written with`,
        { cause: error },
      );
    }
  }

  private sealTitle(ownerId: string, id: string, title: string): Buffer {
    return this.cipher.encrypt(title, SealContext.title(ownerId, id));
  }

  private sealText(conversationId: string, id: string, text: string): Buffer {
    return this.cipher.encrypt(text, SealContext.messageText(conversationId, id));
  }

}

type State =
  | { readonly phase: 'created' }
  | { readonly phase: 'opening' }
  | OpenState
  | { readonly phase: 'closed' };

interface OpenState {
  readonly phase: 'open';
  readonly pool: pg.Pool;
  readonly presence: PostgresPresence;
  readonly sweep: NodeJS.Timeout | undefined;
}

const INT8_OID = 20;

/** The driver's parsers, except BIGINT (counts, epoch ms): a number, refused if past 2^53 rather than rounded. */
function parseType(oid: number, format?: 'text' | 'binary'): unknown {
  if (oid !== INT8_OID) return pg.types.getTypeParser(oid, format);
  return (value: string): number => {
    const parsed = Number(value);
    if (!Number.isSafeInteger(parsed)) throw new RangeError(`a BIGINT of the history database is past 2^53: ${value}`);
    return parsed;
  };
}

function batches<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let start = 0; start < items.length; start += size) out.push(items.slice(start, start + size));
  return out;
}

function passwordOf(url: string): string {
  try {
    return new URL(url).password;
  } catch {
    return '';
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

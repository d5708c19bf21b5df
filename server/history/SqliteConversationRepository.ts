import Database from 'better-sqlite3';
import { CONVERSATION_COLUMNS, conversationFromRow, messageFromRow, type ConversationRow, type MessageRow, type SummaryRow } from './historyRows.js';
import { mkdir, open as openFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type {
  ConversationRepository,
  ConversationSummary,
  ImportedConversation,
  MessageOutcome,
  MessageRole,
  MessageUpdate,
  StoredConversation,
  StoredMessage,
} from './ConversationRepository.js';
import { applyMigrations } from './applyMigrations.js';
import type { HistoryCipher } from './HistoryCipher.js';
import { HistoryKeyMismatchError } from './HistoryKeyMismatchError.js';
import { HistoryUnreadableError } from './HistoryUnreadableError.js';
import { listLimit } from './listLimit.js';
import { migrations } from './migrations.js';
import { KEY_CHECK_TEXT, SealContext } from './SealContext.js';

export const HISTORY_FILE = 'history.sqlite';

export interface SqliteRepositoryOptions {
  /** Where `history.sqlite` lives (the server's data dir); created 0700 if missing. */
  readonly directory: string;
  readonly cipher: HistoryCipher;
  /** How long a statement waits for another connection's lock before it fails. */
  readonly busyTimeoutMs?: number;
  /** purgeIdle deletes at most this many conversations per transaction and yields between them. */
  readonly purgeBatchSize?: number;
}

/**
 * Conversations in one SQLite file (better-sqlite3), message text and titles encrypted by
 * HistoryCipher; ids, owners, times, counts and outcomes stay plain because queries need them.
 *
 * - better-sqlite3 is synchronous: every method does its work at once and returns a settled
 *   promise. So each one stays small: listings are LIMITed and read indexes (a listing counts a
 *   conversation's messages in the index, it never reads their text); purges go in batches.
 * - Every statement is prepared once, in `open()`; writes that touch several rows are one
 *   transaction.
 * - The file is created 0600 before SQLite opens it; SQLite gives `-wal` and `-shm` the mode of
 *   the database file.
 * - `secure_delete` zeroes deleted rows in their pages, and every delete ends with a TRUNCATE
 *   checkpoint, so no older copy of a deleted page stays behind in the WAL either.
 * - `synchronous = NORMAL` (the WAL default advice): a power cut may lose the last commits, never
 *   the database's consistency, and streaming checkpoints do not fsync each time.
 */
export class SqliteConversationRepository implements ConversationRepository {
  private readonly directory: string;
  private readonly cipher: HistoryCipher;
  private readonly busyTimeoutMs: number;
  private readonly purgeBatchSize: number;
  private state: State = { phase: 'created' };

  constructor(options: SqliteRepositoryOptions) {
    this.directory = options.directory;
    this.cipher = options.cipher;
    this.busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.purgeBatchSize = options.purgeBatchSize ?? 500;
  }

  get file(): string {
    return join(this.directory, HISTORY_FILE);
  }

  /** The open database, for the stores that share this file (SqliteDocumentRepository). */
  get database(): Database.Database {
    return this.ready().db;
  }

  async open(): Promise<void> {
    if (this.state.phase !== 'created') throw new Error(`open() runs once; the history store is ${this.state.phase}`);
    await mkdir(this.directory, { recursive: true, mode: 0o700 });
    await createPrivateFile(this.file);
    const db = new Database(this.file, { fileMustExist: true, timeout: this.busyTimeoutMs });
    try {
      const mode = db.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new Error(`${this.file}: SQLite refused WAL mode (journal_mode is ${String(mode)})`);
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma('secure_delete = ON');
      applyMigrations(db, migrations);
      this.checkKey(db);
      const statements = prepareStatements(db);
      this.state = { phase: 'open', db, statements, transactions: this.prepareTransactions(db, statements) };
    } catch (error) {
      db.close();
      this.state = { phase: 'closed' };
      throw error;
    }
  }

  async createConversation(conversation: StoredConversation): Promise<void> {
    this.ready().transactions.insertConversation(conversation);
  }

  async getConversation(ownerId: string, id: string): Promise<StoredConversation | undefined> {
    const row = this.ready().statements.getConversation.get(id, ownerId);
    return row === undefined ? undefined : conversationFromRow(row, this.cipher);
  }

  async listConversations(ownerId: string, options: { readonly limit?: number } = {}): Promise<ConversationSummary[]> {
    const rows = this.ready().statements.listConversations.all(ownerId, listLimit(options.limit));
    return rows.map((row) => ({ ...conversationFromRow(row, this.cipher), messageCount: row.message_count }));
  }

  async countConversations(ownerId: string): Promise<number> {
    return this.ready().statements.countConversations.get(ownerId)?.count ?? 0;
  }

  async listMessages(ownerId: string, conversationId: string): Promise<StoredMessage[]> {
    const { statements } = this.ready();
    if (statements.ownsConversation.get(conversationId, ownerId) === undefined) return [];
    return statements.listMessages.all(conversationId).map((row) => messageFromRow(row, this.cipher));
  }

  async appendMessage(ownerId: string, message: StoredMessage): Promise<boolean> {
    return this.ready().transactions.appendMessage(ownerId, message);
  }

  async updateMessage(ownerId: string, messageId: string, update: MessageUpdate): Promise<boolean> {
    return this.ready().transactions.updateMessage(ownerId, messageId, update);
  }

  async deleteMessages(ownerId: string, conversationId: string, messageIds: readonly string[]): Promise<number> {
    const open = this.ready();
    const deleted = open.transactions.deleteMessages(ownerId, conversationId, messageIds);
    if (deleted > 0) eraseDeleted(open.db);
    return deleted;
  }

  async renameConversation(ownerId: string, id: string, title: string): Promise<boolean> {
    const { statements } = this.ready();
    return statements.renameConversation.run(this.cipher.encrypt(title, titleContext(ownerId, id)), id, ownerId).changes > 0;
  }

  async setConversationModel(ownerId: string, id: string, model: string): Promise<boolean> {
    const { statements } = this.ready();
    return statements.setConversationModel.run(model, id, ownerId).changes > 0;
  }

  async deleteConversation(ownerId: string, id: string): Promise<boolean> {
    const { db, statements } = this.ready();
    const deleted = statements.deleteConversation.run(id, ownerId).changes > 0;
    if (deleted) eraseDeleted(db);
    return deleted;
  }

  async deleteAllConversations(ownerId: string): Promise<number> {
    const { db, statements } = this.ready();
    const deleted = statements.deleteAllConversations.run(ownerId).changes;
    if (deleted > 0) eraseDeleted(db);
    return deleted;
  }

  async purgeIdle(before: number): Promise<number> {
    let open = this.ready();
    let deleted = 0;
    for (;;) {
      const batch = open.statements.purgeIdleBatch.run(before, this.purgeBatchSize).changes;
      deleted += batch;
      if (batch < this.purgeBatchSize) break;
      await nextTurn();
      // close() may have run meanwhile: the batches done stay done, the rest waits for next time.
      if (this.state.phase !== 'open') return deleted;
      open = this.state;
    }
    if (deleted > 0) eraseDeleted(open.db);
    return deleted;
  }

  async markInterrupted(): Promise<number> {
    return this.ready().statements.markInterrupted.run().changes;
  }

  async importConversations(entries: readonly ImportedConversation[]): Promise<void> {
    this.ready().transactions.importConversations(entries);
  }

  async close(): Promise<void> {
    const previous = this.state;
    this.state = { phase: 'closed' };
    if (previous.phase === 'open') {
      previous.db.pragma('optimize');
      previous.db.close();
    }
  }

  private ready(): OpenState {
    if (this.state.phase !== 'open') throw new Error(`the history store is ${this.state.phase}, not open`);
    return this.state;
  }

  /** Seals a known value on first open and reads it back on every open. */
  private checkKey(db: Database.Database): void {
    db.prepare<[Buffer]>(`INSERT OR IGNORE INTO meta (key, value) VALUES ('key_check', ?)`).run(this.cipher.encrypt(KEY_CHECK_TEXT, KEY_CHECK_CONTEXT));
    const row = db.prepare<[], { value: Buffer }>(`SELECT value FROM meta WHERE key = 'key_check'`).get();
    try {
      if (row === undefined || this.cipher.decrypt(row.value, KEY_CHECK_CONTEXT) !== KEY_CHECK_TEXT) throw new HistoryUnreadableError(KEY_CHECK_CONTEXT.join(':'));
    } catch (error) {
      throw new HistoryKeyMismatchError(
        `${this.file} was written with another history key than the one given: restore the key it was written with, or move ${HISTORY_FILE} away to start an empty history`,
        { cause: error },
      );
    }
  }

  private prepareTransactions(db: Database.Database, statements: Statements) {
    const insertMessage = (message: StoredMessage, seq: number): void => {
      statements.insertMessage.run(
        message.id,
        message.conversationId,
        seq,
        message.role,
        this.cipher.encrypt(message.text, textContext(message.conversationId, message.id)),
        message.createdAt,
        message.tokenCount ?? null,
        message.requestId ?? null,
        message.outcome ?? null,
      );
    };
    const insertConversation = (conversation: StoredConversation): void => {
      statements.insertConversation.run(
        conversation.id,
        conversation.ownerId,
        this.cipher.encrypt(conversation.title, titleContext(conversation.ownerId, conversation.id)),
        conversation.createdAt,
        conversation.updatedAt,
        conversation.model,
      );
    };
    return {
      insertConversation,
      appendMessage: db.transaction((ownerId: string, message: StoredMessage): boolean => {
        if (statements.ownsConversation.get(message.conversationId, ownerId) === undefined) return false;
        insertMessage(message, (statements.lastSeq.get(message.conversationId)?.seq ?? 0) + 1);
        statements.touchConversation.run(message.createdAt, message.conversationId);
        return true;
      }),
      updateMessage: db.transaction((ownerId: string, messageId: string, update: MessageUpdate): boolean => {
        const owned = statements.findOwnedMessage.get(messageId, ownerId);
        if (owned === undefined) return false;
        const text = update.text === undefined ? null : this.cipher.encrypt(update.text, textContext(owned.conversation_id, messageId));
        statements.updateMessage.run(text, update.tokenCount ?? null, update.outcome ?? null, messageId);
        return true;
      }),
      deleteMessages: db.transaction((ownerId: string, conversationId: string, messageIds: readonly string[]): number => {
        if (statements.ownsConversation.get(conversationId, ownerId) === undefined) return 0;
        let deleted = 0;
        for (const id of new Set(messageIds)) deleted += statements.deleteMessage.run(conversationId, id).changes;
        return deleted;
      }),
      importConversations: db.transaction((entries: readonly ImportedConversation[]): void => {
        for (const { conversation, messages } of entries) {
          insertConversation(conversation);
          messages.forEach((message, index) => {
            if (message.conversationId !== conversation.id) throw new Error(`message ${message.id} names conversation ${message.conversationId}, not ${conversation.id}`);
            insertMessage(message, index + 1);
          });
        }
      }),
    };
  }

}

const titleContext = SealContext.title;
const textContext = SealContext.messageText;
const KEY_CHECK_CONTEXT = SealContext.keyCheck;

type State =
  | { readonly phase: 'created' }
  | OpenState
  | { readonly phase: 'closed' };

interface OpenState {
  readonly phase: 'open';
  readonly db: Database.Database;
  readonly statements: Statements;
  readonly transactions: ReturnType<SqliteConversationRepository['prepareTransactions']>;
}

type Statements = ReturnType<typeof prepareStatements>;

function prepareStatements(db: Database.Database) {
  return {
    insertConversation: db.prepare<[string, string, Buffer, number, number, string]>(
      'INSERT INTO conversations (id, owner_id, title, created_at, updated_at, model) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    getConversation: db.prepare<[string, string], ConversationRow>(
      `SELECT ${CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = ? AND c.owner_id = ?`,
    ),
    ownsConversation: db.prepare<[string, string], { readonly one: 1 }>('SELECT 1 AS one FROM conversations WHERE id = ? AND owner_id = ?'),
    listConversations: db.prepare<[string, number], SummaryRow>(
      `SELECT ${CONVERSATION_COLUMNS}, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count
       FROM conversations c WHERE c.owner_id = ? ORDER BY c.updated_at DESC, c.id DESC LIMIT ?`,
    ),
    countConversations: db.prepare<[string], { readonly count: number }>('SELECT COUNT(*) AS count FROM conversations WHERE owner_id = ?'),
    listMessages: db.prepare<[string], MessageRow>(
      `SELECT id, conversation_id, role, text, created_at, token_count, request_id, outcome
       FROM messages WHERE conversation_id = ? ORDER BY seq`,
    ),
    lastSeq: db.prepare<[string], { readonly seq: number | null }>('SELECT MAX(seq) AS seq FROM messages WHERE conversation_id = ?'),
    insertMessage: db.prepare<[string, string, number, MessageRole, Buffer, number, number | null, string | null, MessageOutcome | null]>(
      `INSERT INTO messages (id, conversation_id, seq, role, text, created_at, token_count, request_id, outcome)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    touchConversation: db.prepare<[number, string]>('UPDATE conversations SET updated_at = ? WHERE id = ?'),
    findOwnedMessage: db.prepare<[string, string], { readonly conversation_id: string }>(
      'SELECT m.conversation_id FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ? AND c.owner_id = ?',
    ),
    // NULL keeps a column: an update never clears text, a count or an outcome.
    updateMessage: db.prepare<[Buffer | null, number | null, MessageOutcome | null, string]>(
      'UPDATE messages SET text = COALESCE(?, text), token_count = COALESCE(?, token_count), outcome = COALESCE(?, outcome) WHERE id = ?',
    ),
    deleteMessage: db.prepare<[string, string]>('DELETE FROM messages WHERE conversation_id = ? AND id = ?'),
    renameConversation: db.prepare<[Buffer, string, string]>('UPDATE conversations SET title = ? WHERE id = ? AND owner_id = ?'),
    setConversationModel: db.prepare<[string, string, string]>('UPDATE conversations SET model = ? WHERE id = ? AND owner_id = ?'),
    deleteConversation: db.prepare<[string, string]>('DELETE FROM conversations WHERE id = ? AND owner_id = ?'),
    deleteAllConversations: db.prepare<[string]>('DELETE FROM conversations WHERE owner_id = ?'),
    purgeIdleBatch: db.prepare<[number, number]>(
      'DELETE FROM conversations WHERE id IN (SELECT id FROM conversations WHERE updated_at < ? LIMIT ?)',
    ),
    markInterrupted: db.prepare<[]>("UPDATE messages SET outcome = 'interrupted' WHERE outcome = 'streaming'"),
  };
}

/**
 * Copies the WAL into the database and truncates it. secure_delete zeroed the deleted rows in the
 * pages just written, but the WAL can still hold earlier versions of those pages until it is
 * reset; after this the deleted ciphertext is in no file.
 */
function eraseDeleted(db: Database.Database): void {
  db.pragma('wal_checkpoint(TRUNCATE)');
}

/**
 * Creates `file` empty with mode 0600 if it is missing (SQLite would create it with 0644), and
 * refuses one that group or others can read.
 */
async function createPrivateFile(file: string): Promise<void> {
  const handle = await openFile(file, 'a', 0o600);
  await handle.close();
  const info = await stat(file);
  if (process.platform !== 'win32' && (info.mode & 0o077) !== 0) {
    throw new Error(`${file} is readable by other users (mode ${(info.mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  }
}

import type Database from 'better-sqlite3';
import { DOCUMENT_COLUMNS, documentFromRow, type DocumentRow } from './documentRows.js';
import type { DocumentKind } from '../../shared/protocol.js';
import type { HistoryCipher } from '../history/HistoryCipher.js';
import { SealContext } from '../history/SealContext.js';
import type { SqliteConversationRepository } from '../history/SqliteConversationRepository.js';
import type { AttachResult, DocumentRepository, MessageDocuments, StoredDocument } from './DocumentRepository.js';

/**
 * Documents in the history database (migration 2), beside the conversations they belong to:
 * names, chunk text and message notes are encrypted by HistoryCipher, each bound to its row;
 * ids, owners, sizes, kinds and times stay plain because queries need them. Foreign keys cascade
 * a conversation's deletion to its documents, their chunks and its messages' notes.
 *
 * Like SqliteConversationRepository, every method works synchronously (better-sqlite3) and
 * multi-row writes are one transaction. Statements are prepared on first use, after the
 * conversation store opened the file.
 */
export class SqliteDocumentRepository implements DocumentRepository {
  private prepared: Prepared | undefined;

  constructor(
    private readonly history: SqliteConversationRepository,
    private readonly cipher: HistoryCipher,
  ) {}

  async addDocument(document: StoredDocument, chunks: readonly string[], maxOwnerBytes: number): Promise<boolean> {
    return this.ready().transactions.add(document, chunks, maxOwnerBytes);
  }

  async getDocument(ownerId: string, id: string): Promise<StoredDocument | undefined> {
    const row = this.ready().statements.get.get(id, ownerId);
    return row === undefined ? undefined : documentFromRow(row, this.cipher);
  }

  async listDocuments(ownerId: string, conversationId: string): Promise<StoredDocument[]> {
    return this.ready().statements.listByConversation.all(conversationId, ownerId).map((row) => documentFromRow(row, this.cipher));
  }

  async readChunks(ownerId: string, documentId: string): Promise<string[]> {
    const { statements } = this.ready();
    if (statements.get.get(documentId, ownerId) === undefined) return [];
    return statements.chunks.all(documentId).map((row) => this.cipher.decrypt(row.text, chunkContext(documentId, row.seq)));
  }

  async setEmbeddings(ownerId: string, documentId: string, model: string, vectors: ReadonlyArray<Float32Array | undefined>): Promise<boolean> {
    return this.ready().transactions.setEmbeddings(ownerId, documentId, model, vectors);
  }

  async readEmbeddings(ownerId: string, documentId: string, model: string): Promise<Array<Float32Array | undefined>> {
    const { statements } = this.ready();
    if (statements.get.get(documentId, ownerId) === undefined) return [];
    return statements.embeddings.all(documentId).map((row) => {
      if (row.embedding === null) return undefined;
      const sealed = JSON.parse(this.cipher.decrypt(row.embedding, embeddingContext(documentId, row.seq))) as { model: string; vector: string };
      if (sealed.model !== model) return undefined;
      const bytes = Buffer.from(sealed.vector, 'base64');
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    });
  }

  async attachDocuments(ownerId: string, conversationId: string, ids: readonly string[], maxPerConversation: number): Promise<AttachResult> {
    return this.ready().transactions.attach(ownerId, conversationId, [...new Set(ids)], maxPerConversation);
  }

  async deleteDocument(ownerId: string, id: string): Promise<boolean> {
    const { db, statements } = this.ready();
    const deleted = statements.delete.run(id, ownerId).changes > 0;
    if (deleted) eraseDeleted(db);
    return deleted;
  }

  async deleteOwnerDocuments(ownerId: string): Promise<number> {
    const { db, statements } = this.ready();
    const deleted = statements.deleteOwner.run(ownerId).changes;
    if (deleted > 0) eraseDeleted(db);
    return deleted;
  }

  async purgeUnattached(before: number): Promise<number> {
    const { db, statements } = this.ready();
    const deleted = statements.purgeUnattached.run(before).changes;
    if (deleted > 0) eraseDeleted(db);
    return deleted;
  }

  async setMessageDocuments(ownerId: string, conversationId: string, messageId: string, note: MessageDocuments): Promise<boolean> {
    const { statements } = this.ready();
    if (statements.ownsMessage.get(messageId, conversationId, ownerId) === undefined) return false;
    statements.setNote.run(messageId, this.cipher.encrypt(JSON.stringify(note), noteContext(conversationId, messageId)));
    return true;
  }

  async listMessageDocuments(ownerId: string, conversationId: string): Promise<Map<string, MessageDocuments>> {
    const rows = this.ready().statements.notes.all(conversationId, ownerId);
    return new Map(rows.map((row) => [row.message_id, JSON.parse(this.cipher.decrypt(row.value, noteContext(conversationId, row.message_id))) as MessageDocuments]));
  }

  private ready(): Prepared {
    // The history store throws here unless it is open; a reopened store has a new handle.
    const db = this.history.database;
    if (this.prepared?.db !== db) this.prepared = this.prepare(db);
    return this.prepared;
  }

  private prepare(db: Database.Database) {
    const statements = prepareStatements(db);
    return {
      db,
      statements,
      transactions: {
        add: db.transaction((document: StoredDocument, chunks: readonly string[], maxOwnerBytes: number): boolean => {
          const used = statements.ownerBytes.get(document.ownerId)?.bytes ?? 0;
          if (used + document.size > maxOwnerBytes) return false;
          statements.insert.run(
            document.id,
            document.ownerId,
            document.conversationId ?? null,
            this.cipher.encrypt(document.name, nameContext(document.ownerId, document.id)),
            document.size,
            document.kind,
            document.chars,
            document.createdAt,
          );
          chunks.forEach((text, seq) => statements.insertChunk.run(document.id, seq, this.cipher.encrypt(text, chunkContext(document.id, seq))));
          return true;
        }),
        setEmbeddings: db.transaction((ownerId: string, documentId: string, model: string, vectors: ReadonlyArray<Float32Array | undefined>): boolean => {
          if (statements.get.get(documentId, ownerId) === undefined) return false;
          vectors.forEach((vector, seq) => {
            if (vector === undefined) return;
            const encoded = Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
            statements.setEmbedding.run(this.cipher.encrypt(JSON.stringify({ model, vector: encoded }), embeddingContext(documentId, seq)), documentId, seq);
          });
          return true;
        }),
        attach: db.transaction((ownerId: string, conversationId: string, ids: readonly string[], maxPerConversation: number): AttachResult => {
          if (statements.ownsConversation.get(conversationId, ownerId) === undefined) return { ok: false, reason: 'not_found' };
          let added = 0;
          for (const id of ids) {
            const row = statements.get.get(id, ownerId);
            if (row === undefined || (row.conversation_id !== null && row.conversation_id !== conversationId)) return { ok: false, reason: 'not_found' };
            if (row.conversation_id === null) added += 1;
          }
          const held = statements.countByConversation.get(conversationId)?.count ?? 0;
          if (held + added > maxPerConversation) return { ok: false, reason: 'limit' };
          for (const id of ids) statements.attach.run(conversationId, id, ownerId);
          return { ok: true };
        }),
      },
    };
  }

}

type Prepared = ReturnType<SqliteDocumentRepository['prepare']>;

/** AAD contexts (SealContext): each sealed value is bound to its row, so one copied elsewhere fails to open. */
const nameContext = SealContext.documentName;
const chunkContext = SealContext.chunkText;
const embeddingContext = SealContext.chunkEmbedding;
const noteContext = SealContext.messageDocuments;

function prepareStatements(db: Database.Database) {
  return {
    insert: db.prepare<[string, string, string | null, Buffer, number, DocumentKind, number, number]>(
      `INSERT INTO documents (${DOCUMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    insertChunk: db.prepare<[string, number, Buffer]>('INSERT INTO document_chunks (document_id, seq, text) VALUES (?, ?, ?)'),
    get: db.prepare<[string, string], DocumentRow>(`SELECT ${DOCUMENT_COLUMNS} FROM documents WHERE id = ? AND owner_id = ?`),
    listByConversation: db.prepare<[string, string], DocumentRow>(
      `SELECT ${DOCUMENT_COLUMNS} FROM documents WHERE conversation_id = ? AND owner_id = ? ORDER BY created_at, id`,
    ),
    countByConversation: db.prepare<[string], { readonly count: number }>('SELECT COUNT(*) AS count FROM documents WHERE conversation_id = ?'),
    ownerBytes: db.prepare<[string], { readonly bytes: number | null }>('SELECT SUM(size) AS bytes FROM documents WHERE owner_id = ?'),
    chunks: db.prepare<[string], { readonly seq: number; readonly text: Buffer }>('SELECT seq, text FROM document_chunks WHERE document_id = ? ORDER BY seq'),
    embeddings: db.prepare<[string], { readonly seq: number; readonly embedding: Buffer | null }>('SELECT seq, embedding FROM document_chunks WHERE document_id = ? ORDER BY seq'),
    setEmbedding: db.prepare<[Buffer, string, number]>('UPDATE document_chunks SET embedding = ? WHERE document_id = ? AND seq = ?'),
    ownsConversation: db.prepare<[string, string], { readonly one: 1 }>('SELECT 1 AS one FROM conversations WHERE id = ? AND owner_id = ?'),
    attach: db.prepare<[string, string, string]>('UPDATE documents SET conversation_id = ? WHERE id = ? AND owner_id = ?'),
    delete: db.prepare<[string, string]>('DELETE FROM documents WHERE id = ? AND owner_id = ?'),
    deleteOwner: db.prepare<[string]>('DELETE FROM documents WHERE owner_id = ?'),
    purgeUnattached: db.prepare<[number]>('DELETE FROM documents WHERE conversation_id IS NULL AND created_at < ?'),
    ownsMessage: db.prepare<[string, string, string], { readonly one: 1 }>(
      'SELECT 1 AS one FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ? AND m.conversation_id = ? AND c.owner_id = ?',
    ),
    setNote: db.prepare<[string, Buffer]>('INSERT OR REPLACE INTO message_documents (message_id, value) VALUES (?, ?)'),
    notes: db.prepare<[string, string], { readonly message_id: string; readonly value: Buffer }>(
      `SELECT n.message_id, n.value FROM message_documents n JOIN messages m ON m.id = n.message_id JOIN conversations c ON c.id = m.conversation_id
       WHERE m.conversation_id = ? AND c.owner_id = ?`,
    ),
  };
}

/** As in SqliteConversationRepository: after a delete no older copy of the pages stays in the WAL. */
function eraseDeleted(db: Database.Database): void {
  db.pragma('wal_checkpoint(TRUNCATE)');
}

import { DOCUMENT_COLUMNS, documentFromRow, type DocumentRow } from './documentRows.js';
import { AdvisoryLock } from '../history/AdvisoryLock.js';
import type { HistoryCipher } from '../history/HistoryCipher.js';
import type { PostgresConversationRepository } from '../history/PostgresConversationRepository.js';
import { SealContext } from '../history/SealContext.js';
import { withTransaction } from '../history/withTransaction.js';
import type { AttachResult, DocumentRepository, MessageDocuments, StoredDocument } from './DocumentRepository.js';

/**
 * Documents in the PostgreSQL history database (postgresMigrations), beside the conversations
 * they belong to, sealed exactly like SqliteDocumentRepository (SealContext): names, chunk text,
 * vectors and message notes encrypted, each bound to its row. Foreign keys cascade a
 * conversation's deletion to its documents, their chunks and its messages' notes.
 *
 * Several gateways write at once, so the checks that guard a limit hold a lock until their write
 * commits: an upload takes the owner's advisory lock (AdvisoryLock.ownerDocuments) around the
 * storage sum and the insert, an attach locks the conversation's row around the count and the
 * update. Two uploads or attaches racing on two gateways cannot both pass a cap only one fits.
 */
export class PostgresDocumentRepository implements DocumentRepository {
  constructor(
    private readonly history: PostgresConversationRepository,
    private readonly cipher: HistoryCipher,
  ) {}

  async addDocument(document: StoredDocument, chunks: readonly string[], maxOwnerBytes: number): Promise<boolean> {
    return withTransaction(this.history.pool, async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [AdvisoryLock.ownerDocuments, document.ownerId]);
      const { rows } = await client.query<{ bytes: number }>('SELECT COALESCE(SUM(size), 0)::int8 AS bytes FROM documents WHERE owner_id = $1', [document.ownerId]);
      if ((rows[0]?.bytes ?? 0) + document.size > maxOwnerBytes) return false;
      await client.query(`INSERT INTO documents (${DOCUMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, [
        document.id,
        document.ownerId,
        document.conversationId ?? null,
        this.cipher.encrypt(document.name, SealContext.documentName(document.ownerId, document.id)),
        document.size,
        document.kind,
        document.chars,
        document.createdAt,
      ]);
      if (chunks.length > 0) {
        await client.query('INSERT INTO document_chunks (document_id, seq, text) SELECT $1, seq, text FROM unnest($2::int4[], $3::bytea[]) AS c (seq, text)', [
          document.id,
          chunks.map((_, seq) => seq),
          chunks.map((text, seq) => this.cipher.encrypt(text, SealContext.chunkText(document.id, seq))),
        ]);
      }
      return true;
    });
  }

  async getDocument(ownerId: string, id: string): Promise<StoredDocument | undefined> {
    const { rows } = await this.history.pool.query<DocumentRow>(`SELECT ${DOCUMENT_COLUMNS} FROM documents WHERE id = $1 AND owner_id = $2`, [id, ownerId]);
    return rows[0] === undefined ? undefined : documentFromRow(rows[0], this.cipher);
  }

  async listDocuments(ownerId: string, conversationId: string): Promise<StoredDocument[]> {
    const { rows } = await this.history.pool.query<DocumentRow>(
      `SELECT ${DOCUMENT_COLUMNS} FROM documents WHERE conversation_id = $1 AND owner_id = $2 ORDER BY created_at, id`,
      [conversationId, ownerId],
    );
    return rows.map((row) => documentFromRow(row, this.cipher));
  }

  async readChunks(ownerId: string, documentId: string): Promise<string[]> {
    const { rows } = await this.history.pool.query<{ seq: number; text: Buffer }>(
      `SELECT ch.seq, ch.text FROM document_chunks ch JOIN documents d ON d.id = ch.document_id
       WHERE ch.document_id = $1 AND d.owner_id = $2 ORDER BY ch.seq`,
      [documentId, ownerId],
    );
    return rows.map((row) => this.cipher.decrypt(row.text, SealContext.chunkText(documentId, row.seq)));
  }

  async setEmbeddings(ownerId: string, documentId: string, model: string, vectors: ReadonlyArray<Float32Array | undefined>): Promise<boolean> {
    const sealed: Array<{ seq: number; value: Buffer }> = [];
    vectors.forEach((vector, seq) => {
      if (vector === undefined) return;
      const encoded = Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
      sealed.push({ seq, value: this.cipher.encrypt(JSON.stringify({ model, vector: encoded }), SealContext.chunkEmbedding(documentId, seq)) });
    });
    return withTransaction(this.history.pool, async (client) => {
      const owned = await client.query('SELECT 1 FROM documents WHERE id = $1 AND owner_id = $2 FOR SHARE', [documentId, ownerId]);
      if (owned.rowCount !== 1) return false;
      await client.query(
        'UPDATE document_chunks ch SET embedding = v.value FROM unnest($2::int4[], $3::bytea[]) AS v (seq, value) WHERE ch.document_id = $1 AND ch.seq = v.seq',
        [documentId, sealed.map((entry) => entry.seq), sealed.map((entry) => entry.value)],
      );
      return true;
    });
  }

  async readEmbeddings(ownerId: string, documentId: string, model: string): Promise<Array<Float32Array | undefined>> {
    const { rows } = await this.history.pool.query<{ seq: number; embedding: Buffer | null }>(
      `SELECT ch.seq, ch.embedding FROM document_chunks ch JOIN documents d ON d.id = ch.document_id
       WHERE ch.document_id = $1 AND d.owner_id = $2 ORDER BY ch.seq`,
      [documentId, ownerId],
    );
    return rows.map((row) => {
      if (row.embedding === null) return undefined;
      const sealed = JSON.parse(this.cipher.decrypt(row.embedding, SealContext.chunkEmbedding(documentId, row.seq))) as { model: string; vector: string };
      if (sealed.model !== model) return undefined;
      const bytes = Buffer.from(sealed.vector, 'base64');
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    });
  }

  async attachDocuments(ownerId: string, conversationId: string, ids: readonly string[], maxPerConversation: number): Promise<AttachResult> {
    const wanted = [...new Set(ids)];
    return withTransaction(this.history.pool, async (client): Promise<AttachResult> => {
      const conversation = await client.query('SELECT 1 FROM conversations WHERE id = $1 AND owner_id = $2 FOR UPDATE', [conversationId, ownerId]);
      if (conversation.rowCount !== 1) return { ok: false, reason: 'not_found' };
      const { rows } = await client.query<{ id: string; conversation_id: string | null }>(
        'SELECT id, conversation_id FROM documents WHERE id = ANY($1::text[]) AND owner_id = $2 FOR UPDATE',
        [wanted, ownerId],
      );
      if (rows.length !== wanted.length || rows.some((row) => row.conversation_id !== null && row.conversation_id !== conversationId)) return { ok: false, reason: 'not_found' };
      const added = rows.filter((row) => row.conversation_id === null).length;
      const held = await client.query<{ count: number }>('SELECT COUNT(*) AS count FROM documents WHERE conversation_id = $1', [conversationId]);
      if ((held.rows[0]?.count ?? 0) + added > maxPerConversation) return { ok: false, reason: 'limit' };
      await client.query('UPDATE documents SET conversation_id = $1 WHERE id = ANY($2::text[]) AND owner_id = $3', [conversationId, wanted, ownerId]);
      return { ok: true };
    });
  }

  async deleteDocument(ownerId: string, id: string): Promise<boolean> {
    const result = await this.history.pool.query('DELETE FROM documents WHERE id = $1 AND owner_id = $2', [id, ownerId]);
    return result.rowCount === 1;
  }

  async deleteOwnerDocuments(ownerId: string): Promise<number> {
    const result = await this.history.pool.query('DELETE FROM documents WHERE owner_id = $1', [ownerId]);
    return result.rowCount ?? 0;
  }

  async purgeUnattached(before: number): Promise<number> {
    const result = await this.history.pool.query('DELETE FROM documents WHERE conversation_id IS NULL AND created_at < $1', [before]);
    return result.rowCount ?? 0;
  }

  async setMessageDocuments(ownerId: string, conversationId: string, messageId: string, note: MessageDocuments): Promise<boolean> {
    const result = await this.history.pool.query(
      `INSERT INTO message_documents (message_id, value)
       SELECT m.id, $4 FROM messages m JOIN conversations c ON c.id = m.conversation_id
       WHERE m.id = $1 AND m.conversation_id = $2 AND c.owner_id = $3
       ON CONFLICT (message_id) DO UPDATE SET value = EXCLUDED.value`,
      [messageId, conversationId, ownerId, this.cipher.encrypt(JSON.stringify(note), SealContext.messageDocuments(conversationId, messageId))],
    );
    return result.rowCount === 1;
  }

  async listMessageDocuments(ownerId: string, conversationId: string): Promise<Map<string, MessageDocuments>> {
    const { rows } = await this.history.pool.query<{ message_id: string; value: Buffer }>(
      `SELECT n.message_id, n.value FROM message_documents n JOIN messages m ON m.id = n.message_id JOIN conversations c ON c.id = m.conversation_id
       WHERE m.conversation_id = $1 AND c.owner_id = $2`,
      [conversationId, ownerId],
    );
    return new Map(rows.map((row) => [row.message_id, JSON.parse(this.cipher.decrypt(row.value, SealContext.messageDocuments(conversationId, row.message_id))) as MessageDocuments]));
  }

}


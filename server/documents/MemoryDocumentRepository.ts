import type { MemoryConversationRepository } from '../history/MemoryConversationRepository.js';
import type { AttachResult, DocumentRepository, MessageDocuments, StoredDocument } from './DocumentRepository.js';

interface Entry {
  document: StoredDocument;
  readonly chunks: readonly string[];
  embeddings?: { readonly model: string; readonly vectors: ReadonlyArray<Float32Array | undefined> };
}

/**
 * Documents for `--history off`, in this process's memory beside MemoryConversationRepository:
 * it follows the conversations' deletions (each removed conversation takes its documents and
 * notes along), as the SQLite schema's cascades do.
 */
export class MemoryDocumentRepository implements DocumentRepository {
  private readonly documents = new Map<string, Entry>();
  /** Conversation id to message id to note. */
  private readonly notes = new Map<string, Map<string, MessageDocuments>>();

  constructor(private readonly conversations: MemoryConversationRepository) {
    conversations.onRemoved((conversationId) => {
      this.notes.delete(conversationId);
      for (const [id, entry] of this.documents) if (entry.document.conversationId === conversationId) this.documents.delete(id);
    });
  }

  async addDocument(document: StoredDocument, chunks: readonly string[], maxOwnerBytes: number): Promise<boolean> {
    if (this.documents.has(document.id)) throw new Error(`document ${document.id} already exists`);
    if (this.ownerBytes(document.ownerId) + document.size > maxOwnerBytes) return false;
    this.documents.set(document.id, { document: Object.freeze({ ...document }), chunks: Object.freeze([...chunks]) });
    return true;
  }

  async getDocument(ownerId: string, id: string): Promise<StoredDocument | undefined> {
    return this.owned(ownerId, id)?.document;
  }

  async listDocuments(ownerId: string, conversationId: string): Promise<StoredDocument[]> {
    return [...this.documents.values()]
      .map((entry) => entry.document)
      .filter((document) => document.ownerId === ownerId && document.conversationId === conversationId)
      .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  async setEmbeddings(ownerId: string, documentId: string, model: string, vectors: ReadonlyArray<Float32Array | undefined>): Promise<boolean> {
    const entry = this.owned(ownerId, documentId);
    if (entry === undefined) return false;
    entry.embeddings = { model, vectors: vectors.slice(0, entry.chunks.length).map((vector) => (vector === undefined ? undefined : Float32Array.from(vector))) };
    return true;
  }

  async readEmbeddings(ownerId: string, documentId: string, model: string): Promise<Array<Float32Array | undefined>> {
    const entry = this.owned(ownerId, documentId);
    if (entry === undefined) return [];
    const stored = entry.embeddings?.model === model ? entry.embeddings.vectors : [];
    return entry.chunks.map((_, seq) => {
      const vector = stored[seq];
      return vector === undefined ? undefined : Float32Array.from(vector);
    });
  }

  async readChunks(ownerId: string, documentId: string): Promise<string[]> {
    return [...(this.owned(ownerId, documentId)?.chunks ?? [])];
  }

  async attachDocuments(ownerId: string, conversationId: string, ids: readonly string[], maxPerConversation: number): Promise<AttachResult> {
    if ((await this.conversations.getConversation(ownerId, conversationId)) === undefined) return { ok: false, reason: 'not_found' };
    const entries: Entry[] = [];
    for (const id of new Set(ids)) {
      const entry = this.owned(ownerId, id);
      if (entry === undefined || (entry.document.conversationId !== undefined && entry.document.conversationId !== conversationId)) return { ok: false, reason: 'not_found' };
      entries.push(entry);
    }
    const held = (await this.listDocuments(ownerId, conversationId)).length;
    const added = entries.filter((entry) => entry.document.conversationId === undefined).length;
    if (held + added > maxPerConversation) return { ok: false, reason: 'limit' };
    for (const entry of entries) entry.document = Object.freeze({ ...entry.document, conversationId });
    return { ok: true };
  }

  async deleteDocument(ownerId: string, id: string): Promise<boolean> {
    if (this.owned(ownerId, id) === undefined) return false;
    this.documents.delete(id);
    return true;
  }

  async deleteOwnerDocuments(ownerId: string): Promise<number> {
    let deleted = 0;
    for (const [id, entry] of this.documents) {
      if (entry.document.ownerId !== ownerId) continue;
      this.documents.delete(id);
      deleted += 1;
    }
    return deleted;
  }

  async purgeUnattached(before: number): Promise<number> {
    let deleted = 0;
    for (const [id, entry] of this.documents) {
      if (entry.document.conversationId !== undefined || entry.document.createdAt >= before) continue;
      this.documents.delete(id);
      deleted += 1;
    }
    return deleted;
  }

  async setMessageDocuments(ownerId: string, conversationId: string, messageId: string, note: MessageDocuments): Promise<boolean> {
    const messages = await this.conversations.listMessages(ownerId, conversationId);
    if (!messages.some((message) => message.id === messageId)) return false;
    let notes = this.notes.get(conversationId);
    if (notes === undefined) this.notes.set(conversationId, (notes = new Map()));
    notes.set(messageId, structuredClone(note));
    return true;
  }

  async listMessageDocuments(ownerId: string, conversationId: string): Promise<Map<string, MessageDocuments>> {
    const messages = await this.conversations.listMessages(ownerId, conversationId);
    const notes = this.notes.get(conversationId);
    const found = new Map<string, MessageDocuments>();
    // Only the messages still stored: a regenerated exchange's notes go with its messages.
    for (const message of messages) {
      const note = notes?.get(message.id);
      if (note !== undefined) found.set(message.id, structuredClone(note));
    }
    return found;
  }

  private owned(ownerId: string, id: string): Entry | undefined {
    const entry = this.documents.get(id);
    return entry?.document.ownerId === ownerId ? entry : undefined;
  }

  private ownerBytes(ownerId: string): number {
    let bytes = 0;
    for (const entry of this.documents.values()) if (entry.document.ownerId === ownerId) bytes += entry.document.size;
    return bytes;
  }
}

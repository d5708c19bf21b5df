import type { AttachedDocument, DocumentKind, DocumentSource } from '../../shared/protocol.js';

/**
 * Where uploaded documents are kept: their metadata, their extracted text in chunks, and what
 * each stored message says about documents (a user message's attachments, a reply's sources).
 * It lives in the history store beside the conversations (SqliteDocumentRepository and
 * PostgresDocumentRepository share the history database, MemoryDocumentRepository serves
 * `--history off`).
 *
 * Invariants every implementation keeps:
 * - Every read and write is scoped to the owner: another user's id and an unknown id give the
 *   same answer (undefined, false or nothing).
 * - A document is either unattached (an upload not yet sent) or attached to one conversation of
 *   its owner; deleting that conversation deletes the document, its chunks, and the messages'
 *   notes (with the conversation's messages).
 * - Writes are all or nothing: a refused upload or attachment leaves nothing behind.
 * - Text and names are encrypted at rest like message text (HistoryCipher), bound to their row.
 */
export interface StoredDocument {
  readonly id: string;
  readonly ownerId: string;
  /** Sanitised for display (sanitiseFileName); never used as a path. */
  readonly name: string;
  /** Bytes uploaded. */
  readonly size: number;
  readonly kind: DocumentKind;
  /** Characters of extracted text. */
  readonly chars: number;
  readonly createdAt: number;
  /** Undefined while unattached. */
  readonly conversationId: string | undefined;
}

/** What a stored message says about documents. */
export interface MessageDocuments {
  /** User messages: the documents sent with it. */
  readonly documents?: readonly AttachedDocument[];
  /** Replies: the passages that went into the prompt. */
  readonly sources?: readonly DocumentSource[];
}

/** Why an attach was refused: a document that is not the owner's upload, or the conversation's cap. */
export type AttachResult = { readonly ok: true } | { readonly ok: false; readonly reason: 'not_found' | 'limit' };

export interface DocumentRepository {
  /**
   * Stores a new upload (unattached) with its text in chunks (in order), unless the owner's
   * stored bytes would pass `maxOwnerBytes`: then nothing is stored and it resolves false.
   */
  addDocument(document: StoredDocument, chunks: readonly string[], maxOwnerBytes: number): Promise<boolean>;
  getDocument(ownerId: string, id: string): Promise<StoredDocument | undefined>;
  /** Stores the chunks' vectors (in chunk order) made by embedding model `model`. False if unknown or foreign. */
  setEmbeddings(ownerId: string, documentId: string, model: string, vectors: ReadonlyArray<Float32Array | undefined>): Promise<boolean>;
  /** The chunks' vectors made by `model`, in chunk order; undefined for a chunk without one (or made by another model). */
  readEmbeddings(ownerId: string, documentId: string, model: string): Promise<Array<Float32Array | undefined>>;
  /** The conversation's documents, oldest first. */
  listDocuments(ownerId: string, conversationId: string): Promise<StoredDocument[]>;
  /** The document's chunks, in order; empty for an unknown or foreign one. */
  readChunks(ownerId: string, documentId: string): Promise<string[]>;
  /**
   * Attaches the owner's documents to the owner's conversation, all or none: each must be
   * unattached or already in that conversation, and the conversation may then hold at most
   * `maxPerConversation`.
   */
  attachDocuments(ownerId: string, conversationId: string, ids: readonly string[], maxPerConversation: number): Promise<AttachResult>;
  deleteDocument(ownerId: string, id: string): Promise<boolean>;
  /** Deletes every document of the owner, attached or not; resolves with how many. */
  deleteOwnerDocuments(ownerId: string): Promise<number>;
  /** Deletes unattached uploads (of every owner) created before `before` (epoch ms); resolves with how many. */
  purgeUnattached(before: number): Promise<number>;
  /** Records what a message of the owner's conversation says about documents (replacing an earlier note). False if unknown or foreign. */
  setMessageDocuments(ownerId: string, conversationId: string, messageId: string, note: MessageDocuments): Promise<boolean>;
  /** The notes of the conversation's messages, by message id. */
  listMessageDocuments(ownerId: string, conversationId: string): Promise<Map<string, MessageDocuments>>;
}

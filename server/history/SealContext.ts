/**
 * The AAD context each sealed history value is bound to (HistoryCipher): its table, its row and
 * its column. Every store seals with these, so a value copied into another row or column, or into
 * the same place in another store of the same key, fails its tag instead of decrypting there.
 * Changing one makes every value already written under it unreadable.
 */
export const SealContext = {
  /** A conversation's title: bound to the conversation and its owner. */
  title: (ownerId: string, id: string): string[] => ['conversation', ownerId, id, 'title'],
  /** A message's text: bound to the message and its conversation. */
  messageText: (conversationId: string, id: string): string[] => ['message', conversationId, id, 'text'],
  documentName: (ownerId: string, id: string): string[] => ['document', ownerId, id, 'name'],
  chunkText: (documentId: string, seq: number): string[] => ['document_chunk', documentId, String(seq), 'text'],
  chunkEmbedding: (documentId: string, seq: number): string[] => ['document_chunk', documentId, String(seq), 'embedding'],
  messageDocuments: (conversationId: string, messageId: string): string[] => ['message_documents', conversationId, messageId, 'value'],
  /** The key check: a known text sealed when the store is created, read back on every open. */
  keyCheck: ['meta', 'key_check', 'value'] as readonly string[],
} as const;

/** The text the key check seals. */
export const KEY_CHECK_TEXT = 'parley history key check';

import type { HistoryCipher } from './HistoryCipher.js';
import type { MessageOutcome, MessageRole, StoredConversation, StoredMessage } from './ConversationRepository.js';
import { SealContext } from './SealContext.js';

/**
 * The history tables' rows as both SQL stores (SQLite and PostgreSQL) read them, and their one
 * decoding into the repository's records: the same columns, the same sealed values, opened with
 * the same row-bound contexts, whichever store holds them.
 */
export interface ConversationRow {
  readonly id: string;
  readonly owner_id: string;
  readonly title: Buffer;
  readonly created_at: number;
  readonly updated_at: number;
  readonly model: string;
}

export interface SummaryRow extends ConversationRow {
  readonly message_count: number;
}

export interface MessageRow {
  readonly id: string;
  readonly conversation_id: string;
  readonly role: MessageRole;
  readonly text: Buffer;
  readonly created_at: number;
  readonly token_count: number | null;
  readonly request_id: string | null;
  readonly outcome: MessageOutcome | null;
}

/** A conversation's columns, from the table aliased `c`. */
export const CONVERSATION_COLUMNS = 'c.id, c.owner_id, c.title, c.created_at, c.updated_at, c.model';

/** Throws HistoryUnreadableError (from the cipher) when the title was altered, moved or sealed under another key. */
export function conversationFromRow(row: ConversationRow, cipher: HistoryCipher): StoredConversation {
  return {
    id: row.id,
    ownerId: row.owner_id,
    title: cipher.decrypt(row.title, SealContext.title(row.owner_id, row.id)),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    model: row.model,
  };
}

/** Throws HistoryUnreadableError (from the cipher) when the text was altered, moved or sealed under another key. */
export function messageFromRow(row: MessageRow, cipher: HistoryCipher): StoredMessage {
  return {
    id: row.id,
    conversationId: row.conversation_id,
    role: row.role,
    text: cipher.decrypt(row.text, SealContext.messageText(row.conversation_id, row.id)),
    createdAt: row.created_at,
    tokenCount: row.token_count ?? undefined,
    requestId: row.request_id ?? undefined,
    outcome: row.outcome ?? undefined,
  };
}

import type { DocumentKind } from '../../shared/protocol.js';
import type { HistoryCipher } from '../history/HistoryCipher.js';
import { SealContext } from '../history/SealContext.js';
import type { StoredDocument } from './DocumentRepository.js';

/** The documents table's row as both SQL stores read it, and its one decoding into a StoredDocument. */
export interface DocumentRow {
  readonly id: string;
  readonly owner_id: string;
  readonly conversation_id: string | null;
  readonly name: Buffer;
  readonly size: number;
  readonly kind: DocumentKind;
  readonly chars: number;
  readonly created_at: number;
}

export const DOCUMENT_COLUMNS = 'id, owner_id, conversation_id, name, size, kind, chars, created_at';

/** Throws HistoryUnreadableError (from the cipher) when the name was altered, moved or sealed under another key. */
export function documentFromRow(row: DocumentRow, cipher: HistoryCipher): StoredDocument {
  return {
    id: row.id,
    ownerId: row.owner_id,
    name: cipher.decrypt(row.name, SealContext.documentName(row.owner_id, row.id)),
    size: row.size,
    kind: row.kind,
    chars: row.chars,
    createdAt: row.created_at,
    conversationId: row.conversation_id ?? undefined,
  };
}

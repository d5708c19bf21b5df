import type { Database } from 'better-sqlite3';
import type { VersionedMigration } from './pendingMigrations.js';

/** A SQLite migration: `PRAGMA user_version` holds the last version applied. */
export interface Migration extends VersionedMigration {
  /** Runs inside the transaction that records `version`; it must not open its own. */
  readonly up: (db: Database) => void;
}

/**
 * The history schema, as the changes that build it. Append only: a shipped migration never
 * changes, because databases out there already recorded its version.
 *
 * Encrypted columns are BLOBs written by HistoryCipher (titles, message text); everything a query
 * filters or sorts on stays plain. STRICT tables refuse a value of the wrong type.
 */
export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'conversations, messages and the key check',
    up: (db) => {
      db.exec(`
        CREATE TABLE conversations (
          id TEXT PRIMARY KEY,
          owner_id TEXT NOT NULL,
          title BLOB NOT NULL,
          created_at INTEGER NOT NULL,
          updated_at INTEGER NOT NULL,
          model TEXT NOT NULL
        ) STRICT;
        -- A user's list, newest first, read in index order (no sort, LIMIT stops early).
        CREATE INDEX conversations_by_owner ON conversations (owner_id, updated_at DESC, id DESC);
        -- purgeIdle: conversations of every owner idle since a time.
        CREATE INDEX conversations_by_updated ON conversations (updated_at);

        CREATE TABLE messages (
          id TEXT PRIMARY KEY,
          conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
          seq INTEGER NOT NULL,
          role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
          text BLOB NOT NULL,
          created_at INTEGER NOT NULL,
          token_count INTEGER,
          request_id TEXT,
          outcome TEXT CHECK (outcome IN ('streaming', 'done', 'stopped', 'error', 'interrupted')),
          -- Also the index that reads a conversation in order, counts its messages, and finds
          -- them for ON DELETE CASCADE.
          UNIQUE (conversation_id, seq)
        ) STRICT;
        -- markInterrupted at start: holds only replies still streaming, so it stays tiny.
        CREATE INDEX messages_streaming ON messages (id) WHERE outcome = 'streaming';

        -- 'key_check': a value sealed at creation, so a wrong key fails open(), not the first read.
        CREATE TABLE meta (
          key TEXT PRIMARY KEY,
          value BLOB NOT NULL
        ) STRICT;
      `);
    },
  },
  {
    version: 2,
    name: 'documents, their chunks and what messages say about them',
    up: (db) => {
      db.exec(`
        -- An upload: unattached (conversation_id NULL) until a message sends it. Its name is
        -- encrypted; the bytes uploaded are not kept, only the extracted text in chunks.
        CREATE TABLE documents (
          id TEXT PRIMARY KEY,
          owner_id TEXT NOT NULL,
          conversation_id TEXT REFERENCES conversations (id) ON DELETE CASCADE,
          name BLOB NOT NULL,
          size INTEGER NOT NULL,
          kind TEXT NOT NULL CHECK (kind IN ('text', 'pdf')),
          chars INTEGER NOT NULL,
          created_at INTEGER NOT NULL
        ) STRICT;
        -- A user's stored bytes (the storage limit), and delete-all.
        CREATE INDEX documents_by_owner ON documents (owner_id);
        -- A conversation's documents, and the cascade when it is deleted.
        CREATE INDEX documents_by_conversation ON documents (conversation_id) WHERE conversation_id IS NOT NULL;
        -- The sweep of unsent uploads.
        CREATE INDEX documents_unattached ON documents (created_at) WHERE conversation_id IS NULL;

        -- Extracted text in order, each chunk encrypted. No FTS table here: a full-text index
        -- would hold the text in plain; it is built in memory when needed (ChunkIndex).
        CREATE TABLE document_chunks (
          document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
          seq INTEGER NOT NULL,
          text BLOB NOT NULL,
          PRIMARY KEY (document_id, seq)
        ) STRICT;

        -- What a message says about documents (a user message's attachments, a reply's
        -- sources), encrypted JSON; goes with its message.
        CREATE TABLE message_documents (
          message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
          value BLOB NOT NULL
        ) STRICT;
      `);
    },
  },
  {
    version: 3,
    name: 'chunk embeddings',
    up: (db) => {
      // A chunk's vector from --embedding-model, encrypted with the model's name inside; NULL
      // until it is computed (in the background, after the upload) or without such a model.
      db.exec('ALTER TABLE document_chunks ADD COLUMN embedding BLOB');
    },
  },
];

import type { Database } from 'better-sqlite3';

export interface Migration {
  /** 1 for the first, then each one more: `PRAGMA user_version` holds the last one applied. */
  readonly version: number;
  readonly name: string;
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
];

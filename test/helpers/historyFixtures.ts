import type { ConversationRepository, MessageOutcome, StoredMessage } from '../../server/history/ConversationRepository.js';

/** The owner and the clock of the store-specific repository suites (SQLite, PostgreSQL). */
export const ALICE = 'u_alice';
export const T0 = 1_900_000_000_000;

/** A user message, or with `outcome` a reply, of ALICE's conversation. */
export function message(id: string, conversationId: string, text: string, outcome?: MessageOutcome): StoredMessage {
  return {
    id,
    conversationId,
    role: outcome === undefined ? 'user' : 'assistant',
    text,
    createdAt: T0 + 1,
    tokenCount: outcome === undefined ? undefined : 3,
    requestId: outcome === undefined ? undefined : `r_${id}`,
    outcome,
  };
}

/** ALICE's conversation `id` with one user message per text. */
export async function withConversation(repository: ConversationRepository, id: string, title: string, texts: readonly string[]): Promise<void> {
  await repository.createConversation({ id, ownerId: ALICE, title, createdAt: T0, updatedAt: T0, model: 'tiny' });
  for (const [index, text] of texts.entries()) await repository.appendMessage(ALICE, message(`${id}_m${index}`, id, text));
}

import type { ConversationResponse, StoredMessageInfo } from '../../../shared/protocol.js';
import { MessageStatus, Sender, type ChatMessage } from './ChatMessage.js';

export const SERVER_INTERRUPTED = 'The server stopped (a restart or a shutdown) before this reply finished.';
export const STORED_FAILURE = 'This reply failed.';

/** The server's copy of a conversation, as this page shows it. */
export interface ServerCopy {
  /** The finished messages, oldest first, with the server's message ids. */
  readonly messages: ChatMessage[];
  /** The reply in progress, if any: it is followed over the socket rather than shown from here. */
  readonly activeReplyId: string | undefined;
  /**
   * False when a reply was stored as still running but the server no longer runs it: it ended
   * while the server answered, and the copy should be fetched again.
   */
  readonly settled: boolean;
}

/**
 * Maps stored messages to the page's: a reply stored `stopped` or `interrupted` shows as such,
 * one that `error`ed as failed. The reply in progress (`streaming`, named by the conversation's
 * `activeReplyId`) is left out, to be followed from its first delta; a `streaming` reply nobody
 * runs any more (it ended while the server answered) shows its text so far, and the copy is
 * not `settled`.
 */
export function messagesFromServer(response: ConversationResponse): ServerCopy {
  const activeReplyId = response.conversation.activeReplyId;
  const messages: ChatMessage[] = [];
  for (const stored of response.messages) {
    if (stored.role === Sender.assistant && activeReplyId !== undefined && stored.requestId === activeReplyId) continue;
    messages.push(toMessage(stored));
  }
  const following = activeReplyId !== undefined && response.messages.some((stored) => stored.requestId === activeReplyId);
  const settled = !response.messages.some((stored) => stored.outcome === 'streaming' && (activeReplyId === undefined || stored.requestId !== activeReplyId));
  return { messages, activeReplyId: following ? activeReplyId : undefined, settled };
}

function toMessage(stored: StoredMessageInfo): ChatMessage {
  const message: ChatMessage = { id: stored.id, from: stored.role, text: stored.text, status: MessageStatus.done };
  if (stored.documents && stored.documents.length > 0) message.documents = stored.documents;
  if (stored.sources && stored.sources.length > 0) message.sources = stored.sources;
  if (stored.role !== Sender.assistant) return message;
  switch (stored.outcome) {
    case 'stopped':
      message.status = MessageStatus.stopped;
      break;
    case 'interrupted':
      message.status = MessageStatus.interrupted;
      message.error = SERVER_INTERRUPTED;
      break;
    case 'error':
      message.status = MessageStatus.error;
      message.error = STORED_FAILURE;
      break;
    default:
      break;
  }
  return message;
}

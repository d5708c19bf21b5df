import { ErrorCode } from '../../shared/errorCodes.js';
import {
  RenameRequest,
  type ConversationListResponse,
  type ConversationResponse,
  type DeleteAllResponse,
  type StoredConversationInfo,
  type StoredMessageInfo,
} from '../../shared/protocol.js';
import type { TokenService } from '../auth/createTokenService.js';
import type { ChatCore } from '../chat/ChatCore.js';
import type { MessageDocuments } from '../documents/DocumentRepository.js';
import type { ConversationSummary, StoredConversation, StoredMessage } from '../history/ConversationRepository.js';
import { ListLimit } from '../history/listLimit.js';
import { LimitRefusedError } from '../limits/LimitRefusedError.js';
import type { Limiters } from '../limits/Limiters.js';
import { BadRequestError, NotFoundError, ParleyError } from '../ParleyError.js';
import type { HttpRequest, HttpResponse } from '../transport/Transport.js';
import { authenticateAccessToken } from './authenticateAccessToken.js';
import { readJsonBody } from './readJsonBody.js';
import { toHttpResponse } from './toHttpResponse.js';

export interface ConversationApiDeps {
  readonly tokens: TokenService;
  readonly chat: ChatCore;
  readonly limiters: Limiters;
}

export const CONVERSATIONS_PATH = '/api/conversations';

/** Conversations a listing or an export of all holds: the store's largest page, the default per-user cap. */
const MAX_LISTED = ListLimit.max;

/**
 * The stored-conversation API, for the signed-in user only (bearer access token):
 * - GET    /api/conversations                      list
 * - DELETE /api/conversations                      delete all of mine
 * - GET    /api/conversations/export?format=json|markdown   export all
 * - GET    /api/conversations/{id}                 one, with its messages
 * - PATCH  /api/conversations/{id} {title}         rename
 * - DELETE /api/conversations/{id}                 delete (a reply in progress is stopped first)
 * - GET    /api/conversations/{id}/export?format=json|markdown
 *
 * Invariants: every read and write is the token owner's (another user's id answers 404, as an
 * unknown one does); requests count against the owner's frame rate; nothing here logs text.
 */
export async function handleConversationApi(request: HttpRequest, deps: ConversationApiDeps): Promise<HttpResponse> {
  try {
    const principal = await authenticateAccessToken(request, deps.tokens);
    const rate = await deps.limiters.frame(`api:${principal.userId}`);
    if (!rate.ok) throw new LimitRefusedError(rate, 'Too many requests; slow down.');
    return await dispatch(request, principal.userId, deps);
  } catch (error) {
    if (error instanceof ParleyError) return toHttpResponse(error, error.code === ErrorCode.unauthorized ? { 'www-authenticate': 'Bearer' } : {});
    throw error;
  }
}

async function dispatch(request: HttpRequest, userId: string, deps: ConversationApiDeps): Promise<HttpResponse> {
  const repository = deps.chat.conversations.repository;
  const rest = request.path.slice(CONVERSATIONS_PATH.length);
  const parts = rest.split('/').filter(Boolean);
  const method = request.method;
  if (parts.length === 0) {
    if (method === 'GET' || method === 'HEAD') {
      const items = await repository.listConversations(userId, { limit: MAX_LISTED });
      return json(200, { items: items.map((item) => infoOf(item, item.messageCount, deps.chat, userId)) } satisfies ConversationListResponse);
    }
    if (method === 'DELETE') {
      await deps.chat.stopReplies(userId);
      const deleted = await repository.deleteAllConversations(userId);
      deps.chat.conversations.forgetOwner(userId);
      // Their documents too, sent or not (sent ones went with their conversations already).
      await deps.chat.documents?.repository.deleteOwnerDocuments(userId);
      deps.chat.documents?.forgetOwner(userId);
      return json(200, { deleted } satisfies DeleteAllResponse);
    }
    return methodNotAllowed('GET, DELETE');
  }
  if (parts.length === 1 && parts[0] === 'export') {
    if (method !== 'GET') return methodNotAllowed('GET');
    const format = formatOf(request);
    const summaries = await repository.listConversations(userId, { limit: MAX_LISTED });
    const all: Array<{ conversation: StoredConversation; messages: StoredMessage[] }> = [];
    for (const summary of summaries) all.push({ conversation: summary, messages: await repository.listMessages(userId, summary.id) });
    return exported(format, 'parley-conversations', all);
  }
  const id = decodeURIComponent(parts[0] ?? '');
  if (parts.length === 1) {
    if (method === 'GET' || method === 'HEAD') {
      const conversation = await owned(userId, id, deps);
      const messages = await repository.listMessages(userId, id);
      // What messages say about documents: a user message's attachments, a reply's sources.
      const notes = (await deps.chat.documents?.repository.listMessageDocuments(userId, id)) ?? new Map<string, MessageDocuments>();
      const infos = messages.map((message) => withDocuments(messageInfoOf(message), notes.get(message.id)));
      return json(200, { conversation: infoOf(conversation, messages.length, deps.chat, userId), messages: infos } satisfies ConversationResponse);
    }
    if (method === 'PATCH') {
      const { title } = readJsonBody(request, RenameRequest, '{"title": "…"}');
      if (!(await repository.renameConversation(userId, id, title))) throw notFound();
      deps.chat.conversations.forget(id);
      const conversation = await owned(userId, id, deps);
      return json(200, { conversation: infoOf(conversation, (await repository.listMessages(userId, id)).length, deps.chat, userId) });
    }
    if (method === 'DELETE') {
      await owned(userId, id, deps);
      await deps.chat.stopReplies(userId, new Set([id]));
      if (!(await repository.deleteConversation(userId, id))) throw notFound();
      deps.chat.conversations.forget(id);
      deps.chat.documents?.forgetConversation(id);
      return { status: 204, headers: { 'cache-control': 'no-store' }, body: '' };
    }
    return methodNotAllowed('GET, PATCH, DELETE');
  }
  if (parts.length === 2 && parts[1] === 'export') {
    if (method !== 'GET') return methodNotAllowed('GET');
    const format = formatOf(request);
    const conversation = await owned(userId, id, deps);
    return exported(format, `parley-${conversation.id}`, [{ conversation, messages: await repository.listMessages(userId, id) }]);
  }
  throw new NotFoundError('No such endpoint.');
}

async function owned(userId: string, id: string, deps: ConversationApiDeps): Promise<StoredConversation> {
  const conversation = await deps.chat.conversations.repository.getConversation(userId, id);
  if (!conversation) throw notFound();
  return conversation;
}

function notFound(): ParleyError {
  return new ParleyError(ErrorCode.conversationNotFound, 'No such conversation.', { httpStatus: 404 });
}

function infoOf(conversation: StoredConversation | ConversationSummary, messages: number, chat: ChatCore, userId: string): StoredConversationInfo {
  const active = chat.conversations.cached(userId, conversation.id);
  return {
    id: conversation.id,
    title: conversation.title,
    createdAt: conversation.createdAt,
    updatedAt: conversation.updatedAt,
    model: conversation.model,
    messages,
    ...(active?.busy && active.activeReplyId !== undefined ? { activeReplyId: active.activeReplyId } : {}),
  };
}

function withDocuments(info: StoredMessageInfo, note: MessageDocuments | undefined): StoredMessageInfo {
  if (note === undefined) return info;
  return {
    ...info,
    ...(note.documents === undefined || note.documents.length === 0 ? {} : { documents: note.documents.map(({ id, name, size, kind }) => ({ id, name, size, kind })) }),
    ...(note.sources === undefined || note.sources.length === 0 ? {} : { sources: note.sources.map(({ documentId, name, chunk }) => ({ documentId, name, chunk })) }),
  };
}

function messageInfoOf(message: StoredMessage): StoredMessageInfo {
  return {
    id: message.id,
    role: message.role,
    text: message.text,
    createdAt: message.createdAt,
    ...(message.outcome === undefined ? {} : { outcome: message.outcome }),
    ...(message.requestId === undefined ? {} : { requestId: message.requestId }),
  };
}

type ExportFormat = 'json' | 'markdown';

function formatOf(request: HttpRequest): ExportFormat {
  const format = new URLSearchParams(request.query).get('format') ?? 'json';
  if (format !== 'json' && format !== 'markdown') throw new BadRequestError('format is json or markdown.');
  return format;
}

/** An export as a download: JSON (every field) or Markdown (for reading). The file name holds only ids. */
function exported(format: ExportFormat, baseName: string, conversations: ReadonlyArray<{ conversation: StoredConversation; messages: StoredMessage[] }>): HttpResponse {
  const fileName = `${baseName.replace(/[^A-Za-z0-9_-]/g, '_')}.${format === 'json' ? 'json' : 'md'}`;
  const headers = { 'cache-control': 'no-store', 'content-disposition': `attachment; filename="${fileName}"` };
  if (format === 'json') {
    const body = {
      exportedAt: new Date().toISOString(),
      conversations: conversations.map(({ conversation, messages }) => ({
        id: conversation.id,
        title: conversation.title,
        model: conversation.model,
        createdAt: new Date(conversation.createdAt).toISOString(),
        updatedAt: new Date(conversation.updatedAt).toISOString(),
        messages: messages.map((message) => ({ ...messageInfoOf(message), createdAt: new Date(message.createdAt).toISOString() })),
      })),
    };
    return { status: 200, headers: { ...headers, 'content-type': 'application/json; charset=utf-8' }, body: JSON.stringify(body, null, 2) };
  }
  const sections = conversations.map(({ conversation, messages }) => {
    const lines = [`# ${oneLine(conversation.title) || 'Untitled'}`, '', `_${conversation.model}, started ${new Date(conversation.createdAt).toISOString()}_`, ''];
    for (const message of messages) {
      const who = message.role === 'user' ? 'You' : 'Parley';
      const note = message.outcome && message.outcome !== 'done' ? ` (${message.outcome})` : '';
      lines.push(`## ${who}${note}`, '', message.text, '');
    }
    return lines.join('\n');
  });
  return { status: 200, headers: { ...headers, 'content-type': 'text/markdown; charset=utf-8' }, body: sections.join('\n---\n\n') };
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

function methodNotAllowed(allow: string): HttpResponse {
  return toHttpResponse(new BadRequestError(`Use ${allow}.`, 405), { allow });
}

function json(status: number, value: unknown): HttpResponse {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }, body: JSON.stringify(value) };
}

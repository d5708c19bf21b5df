import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ChatCompletionRequest, type ChatCompletion, type ChatMessage, type ModelList, type OpenAiModel } from '../../shared/openAiProtocol.js';
import type { ModelInfo } from '../../shared/protocol.js';
import { ErrorCode } from '../../shared/errorCodes.js';
import type { Principal } from '../auth/Principal.js';
import { AbortReason } from '../chat/AbortReason.js';
import type { AdmissionListener, ChatCore } from '../chat/ChatCore.js';
import type { Reply } from '../chat/Reply.js';
import type { GenerationOptions, ResponseFormat, Turn } from '../engine/Engine.js';
import { budgetKeysOf } from '../limits/budgetKeysOf.js';
import { BadRequestError, NotFoundError, ParleyError } from '../ParleyError.js';
import type { HttpRequest, HttpResponse, HttpStreamResponse } from '../transport/Transport.js';
import { finishReasonOf, isFilteredOutcome, SseReplyWriter, usageOf } from './SseReplyWriter.js';
import { toOpenAiError } from './toOpenAiError.js';

export interface OpenAiApiDeps {
  /** The chat core; its model pool is what `/v1/models` lists and requests name. */
  readonly chat: ChatCore;
  /** Verifies the request's API key (401, or 429 while its address is locked out). */
  readonly authenticate: (request: HttpRequest) => Promise<Principal>;
  readonly logger: Logger;
}

export const OPENAI_PATH = '/v1';

/** A request that Parley cannot honour, named by the parameter at fault. */
class UnsupportedParameterError extends ParleyError {
  override name = 'UnsupportedParameterError';
  constructor(
    readonly param: string,
    message: string,
  ) {
    super(ErrorCode.badRequest, message, { httpStatus: 400 });
  }
}

/**
 * The OpenAI-compatible API, a thin adapter over the chat core: `GET /v1/models` and
 * `POST /v1/chat/completions`, streamed (SSE) or not. Requests map to a ChatRequest with the
 * caller's own history (nothing is stored), the key's user and budgets; outcomes map to OpenAI's
 * bodies. API requests share the chat core's fair queue, batch and limits with the web page.
 *
 * Invariants: what Parley cannot honour (n ≠ 1, tools, images, audio, logprobs) is refused with a
 * 400 naming the parameter, never ignored; every admitted request ends once, streamed or not; a
 * client that leaves stops its generation at once.
 */
export async function handleOpenAiApi(request: HttpRequest, deps: OpenAiApiDeps): Promise<HttpResponse | HttpStreamResponse> {
  try {
    const principal = await deps.authenticate(request);
    const path = request.path.replace(/\/+$/, '');
    if (path === `${OPENAI_PATH}/models`) {
      if (request.method !== 'GET' && request.method !== 'HEAD') return toOpenAiError(new BadRequestError('Use GET.', 405));
      const list: ModelList = { object: 'list', data: deps.chat.models.list().map(openAiModelOf) };
      return json(200, list);
    }
    if (path.startsWith(`${OPENAI_PATH}/models/`)) {
      if (request.method !== 'GET' && request.method !== 'HEAD') return toOpenAiError(new BadRequestError('Use GET.', 405));
      return json(200, openAiModelOf(deps.chat.models.info(decodeURIComponent(path.slice(`${OPENAI_PATH}/models/`.length)))));
    }
    if (path === `${OPENAI_PATH}/chat/completions`) {
      if (request.method !== 'POST') return toOpenAiError(new BadRequestError('Use POST.', 405));
      return await chatCompletion(request, principal, deps);
    }
    throw new NotFoundError(`No such endpoint: ${request.method} ${request.path}.`);
  } catch (error) {
    if (error instanceof UnsupportedParameterError) return toOpenAiError(error, error.param);
    if (error instanceof ParleyError) return toOpenAiError(error);
    throw error;
  }
}

/** `created` of the listed model: when this server started, in seconds. */
const STARTED = Math.floor(Date.now() / 1000);

/**
 * A model as `/v1/models` lists it: OpenAI's four fields, plus Parley's own (ignored by OpenAI
 * clients): whether it is loaded, its context and where it runs.
 */
function openAiModelOf(model: ModelInfo): OpenAiModel {
  return {
    id: model.id,
    object: 'model',
    created: STARTED,
    owned_by: 'parley',
    parley: { name: model.name, loaded: model.loaded ?? false, context_size: model.contextSize, ...(model.runtime === undefined ? {} : { runtime: model.runtime }) },
  };
}

async function chatCompletion(request: HttpRequest, principal: Principal, deps: OpenAiApiDeps): Promise<HttpResponse | HttpStreamResponse> {
  const body = parseBody(request);
  const model = deps.chat.models.resolve(body.model);
  const { system, history, text } = conversationOf(body.messages);
  const id = `chatcmpl-${randomBytes(12).toString('base64url')}`;
  const created = Math.floor(Date.now() / 1000);
  const stream = body.stream === true;
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  const options: GenerationOptions = {
    ...(system === undefined ? {} : { system }),
    ...(body.temperature == null ? {} : { temperature: body.temperature }),
    ...(body.top_p == null ? {} : { topP: body.top_p }),
    ...(body.seed == null ? {} : { seed: body.seed }),
    ...(body.stop == null ? {} : { stop: (typeof body.stop === 'string' ? [body.stop] : body.stop).filter((value) => value.length > 0) }),
    ...formatOf(body),
  };
  const controller = new AbortController();
  request.signal?.addEventListener('abort', () => controller.abort(), { once: true });
  const log = deps.logger.child({ req: id, user: principal.userId, surface: 'v1' });
  const writer = stream ? new SseReplyWriter({ id, model, created, includeUsage: body.stream_options?.include_usage === true }) : undefined;
  let ended!: (reply: Reply) => void;
  const end = new Promise<Reply>((resolve) => { ended = resolve; });
  const listener: AdmissionListener = writer
    ? {
        accepted: (reply) => writer.accepted(reply),
        queued: () => writer.queued(),
        textPending: (reply) => writer.textPending(reply),
        ended: (reply) => writer.ended(reply),
        released: () => undefined,
      }
    : { accepted: () => undefined, queued: () => undefined, textPending: () => undefined, ended: (reply) => ended(reply), released: () => undefined };
  const submitted = await deps.chat.submit(
    { id, userId: principal.userId, budgetKeys: budgetKeysOf(principal, request.remoteAddress), text, model, history, ...(maxTokens === undefined ? {} : { maxTokens }), options, signal: controller.signal, log, fitHistory: 'refuse' },
    listener,
  );
  if (!submitted.ok) return toOpenAiError(submitted.error);
  const reply = submitted.reply;

  if (writer) {
    return {
      status: 200,
      headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' },
      start(httpStream) {
        // The client left (before or during the reply): stop generating at once.
        httpStream.onClose((peerLeft) => {
          if (peerLeft && !reply.finished) reply.controller.abort(AbortReason.disconnect);
        });
        if (httpStream.closed) reply.controller.abort(AbortReason.disconnect);
        writer.start(httpStream);
      },
    };
  }

  await end;
  const outcome = reply.outcome;
  // A reply the content filter stopped is still a completion: the text shown, finish_reason content_filter.
  if (outcome === undefined || (outcome.kind !== 'finished' && !isFilteredOutcome(outcome))) {
    if (outcome?.kind === 'failed') return toOpenAiError(outcome.error);
    return toOpenAiError(new ParleyError(ErrorCode.badRequest, 'The request was cancelled.', { httpStatus: 499 as number }));
  }
  let content = '';
  for (let taken = reply.takePending(); taken; taken = reply.takePending()) content += taken.text;
  const completion: ChatCompletion = {
    id,
    object: 'chat.completion',
    created,
    model,
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: finishReasonOf(outcome), logprobs: null }],
    usage: usageOf(outcome),
  };
  return json(200, completion);
}

function parseBody(request: HttpRequest): ChatCompletionRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(request.body.toString('utf8'));
  } catch {
    throw new BadRequestError('The body is not valid JSON.');
  }
  const parsed = ChatCompletionRequest.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const param = issue?.path.map(String).join('.') || null;
    throw new UnsupportedParameterError(param ?? 'body', `Invalid request${param ? ` at '${param}'` : ''}: ${issue?.message ?? 'does not match the chat completions schema'}.`);
  }
  const body = parsed.data;
  if (body.n != null && body.n !== 1) throw new UnsupportedParameterError('n', 'Parley returns one choice: n must be 1.');
  for (const name of ['tools', 'tool_choice', 'functions', 'function_call', 'audio', 'modalities', 'prediction', 'top_logprobs'] as const) {
    if (body[name] != null) throw new UnsupportedParameterError(name, `'${name}' is not supported by Parley.`);
  }
  if (body.logprobs === true) throw new UnsupportedParameterError('logprobs', "'logprobs' is not supported by Parley.");
  if (body.messages.length === 0) throw new UnsupportedParameterError('messages', "'messages' must hold at least one message.");
  return body;
}

/** System messages become the system prompt; the last message, the user's, is the text; the rest is history. */
function conversationOf(messages: readonly ChatMessage[]): { system: string | undefined; history: Turn[]; text: string } {
  const systems: string[] = [];
  const turns: Turn[] = [];
  messages.forEach((message, index) => {
    const text = textOf(message, index);
    switch (message.role) {
      case 'system':
      case 'developer':
        systems.push(text);
        return;
      case 'user':
      case 'assistant':
        turns.push({ role: message.role, text });
        return;
      default:
        throw new UnsupportedParameterError(`messages.${index}.role`, `The role '${message.role}' is not supported: use system, user or assistant.`);
    }
  });
  const last = turns.pop();
  if (last?.role !== 'user') throw new UnsupportedParameterError('messages', 'The last message (after any system messages) must be the user\'s.');
  return { system: systems.length > 0 ? systems.join('\n\n') : undefined, history: turns, text: last.text };
}

function textOf(message: ChatMessage, index: number): string {
  const content = message.content;
  if (content == null) return '';
  if (typeof content === 'string') return content;
  return content
    .map((part, partIndex) => {
      if (part.type !== 'text' || part.text === undefined) {
        throw new UnsupportedParameterError(`messages.${index}.content.${partIndex}`, `Content parts of type '${part.type}' are not supported: Parley reads text only.`);
      }
      return part.text;
    })
    .join('');
}

function formatOf(body: ChatCompletionRequest): { format?: ResponseFormat } {
  const format = body.response_format;
  if (!format || format.type === 'text') return {};
  if (format.type === 'json_object') return { format: { type: 'json' } };
  if (format.json_schema.schema === undefined) throw new UnsupportedParameterError('response_format.json_schema.schema', 'A json_schema response format needs a schema.');
  return { format: { type: 'json_schema', schema: format.json_schema.schema } };
}

function json(status: number, value: unknown): HttpResponse {
  return { status, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' }, body: JSON.stringify(value) };
}

import type { ModelInfo, ReadyFrame } from '../../../shared/protocol.js';
import type { Conversation } from './ChatMessage.js';

/**
 * The model a conversation's next message goes to, as the picker shows it: the one picked here,
 * else the conversation's own, else the server's default. A model the server no longer serves
 * falls back to the default, as the server itself does for a stored conversation.
 */
export function chosenModel(conversation: Conversation | undefined, ready: Pick<ReadyFrame, 'model' | 'models'> | undefined): ModelInfo | undefined {
  if (!ready) return undefined;
  const served = (id: string | undefined) => (id === undefined ? undefined : ready.models.find((model) => model.id === id));
  return served(conversation?.pickedModel) ?? served(conversation?.model) ?? ready.model;
}

/**
 * The `model` a send names: the picked one, only when it differs from the conversation's own
 * (or the conversation is new and the pick is not the default). Otherwise the server chooses,
 * from what it stored, so a copy here that is out of date never switches a conversation back.
 */
export function modelToSend(conversation: Conversation, ready: Pick<ReadyFrame, 'model' | 'models'> | undefined): string | undefined {
  const picked = conversation.pickedModel;
  if (picked === undefined || !ready?.models.some((model) => model.id === picked)) return undefined;
  // A new conversation gets the default; one whose model is not known here names the pick.
  const current = conversation.model ?? (conversation.serverId === undefined ? ready.model.id : undefined);
  return picked === current ? undefined : picked;
}

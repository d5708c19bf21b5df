/**
 * A minimal placeholder client: join, chat, stop. The full Lit client replaces it.
 * Text from the model is only ever set through textContent, never parsed as HTML.
 */
import './style.css';
import { BEARER_PREFIX, PROTOCOL_VERSION } from '../../shared/limits.js';
import { ServerFrame, TokenResponse } from '../../shared/protocol.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $('status');
const log = $('log');
const composer = $<HTMLFormElement>('composer');
const text = $<HTMLTextAreaElement>('text');
const stopButton = $<HTMLButtonElement>('stopButton');
const joinForm = $<HTMLFormElement>('join');

let socket: WebSocket | undefined;
let conversationId: string | undefined;
let current: { id: string; body: HTMLElement; meta: HTMLElement } | undefined;
let counter = 0;

function newId(): string {
  // Not crypto.randomUUID: that is missing on plain-http LAN origins.
  return `r${Date.now().toString(36)}${(counter++).toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

function bubble(role: 'user' | 'assistant', content: string) {
  const element = document.createElement('div');
  element.className = `msg ${role}`;
  const body = document.createElement('span');
  body.textContent = content;
  const meta = document.createElement('span');
  meta.className = 'meta';
  element.append(body, meta);
  log.append(element);
  element.scrollIntoView({ block: 'end' });
  return { body, meta };
}

async function join(invite: string, name: string) {
  status.textContent = 'Joining…';
  const response = await fetch('/api/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ invite, name }),
  });
  if (!response.ok) {
    status.textContent = response.status === 401 ? 'Wrong invite code.' : `Join failed (${response.status}).`;
    joinForm.hidden = false;
    return;
  }
  const token = TokenResponse.parse(await response.json());
  sessionStorage.setItem('parley.name', name);
  connect(token.token);
}

function connect(token: string) {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  socket = new WebSocket(url, [PROTOCOL_VERSION, `${BEARER_PREFIX}${token}`]);
  socket.onopen = () => {
    status.textContent = 'Connected';
    joinForm.hidden = true;
    composer.hidden = false;
    text.focus();
  };
  socket.onclose = (event) => {
    status.textContent = `Disconnected (${event.code}). Reload to join again.`;
    composer.hidden = true;
  };
  socket.onmessage = (event) => {
    const parsed = ServerFrame.safeParse(JSON.parse(String(event.data)));
    if (!parsed.success) return;
    const frame = parsed.data;
    switch (frame.type) {
      case 'ready':
        $('model').textContent = frame.model.demo
          ? `Model: ${frame.model.name} — Parley's demo model strings words together; it is not an assistant.`
          : `Model: ${frame.model.name}`;
        break;
      case 'accepted':
        conversationId = frame.conversationId;
        break;
      case 'queued':
        if (current?.id === frame.id) current.meta.textContent = `Waiting for a free slot: position ${frame.position}`;
        break;
      case 'delta':
        if (current?.id === frame.id) {
          current.body.textContent += frame.text;
          current.meta.textContent = '';
        }
        break;
      case 'done':
        if (current?.id === frame.id) {
          current.meta.textContent = `${frame.usage.completionTokens} tokens · ${frame.timing.tokensPerSecond} tok/s · first token ${frame.timing.firstTokenMs} ms`;
          finish();
        }
        break;
      case 'cancelled':
        if (current?.id === frame.id) {
          current.meta.textContent = 'stopped';
          finish();
        }
        break;
      case 'error':
        if (frame.id === undefined || current?.id === frame.id) {
          (current?.meta ?? status).textContent = `Error: ${frame.message}`;
          if (frame.id !== undefined) finish();
        }
        break;
    }
  };
}

function finish() {
  current = undefined;
  stopButton.disabled = true;
}

function send() {
  const message = text.value.trim();
  if (!message || !socket || socket.readyState !== WebSocket.OPEN || current) return;
  bubble('user', message);
  const id = newId();
  current = { id, ...bubble('assistant', '') };
  socket.send(JSON.stringify({ type: 'send', id, text: message, ...(conversationId ? { conversationId } : {}) }));
  text.value = '';
  stopButton.disabled = false;
}

function stop() {
  if (current && socket) socket.send(JSON.stringify({ type: 'cancel', id: current.id }));
}

composer.addEventListener('submit', (event) => {
  event.preventDefault();
  send();
});
text.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey) {
    event.preventDefault();
    send();
  }
});
stopButton.addEventListener('click', stop);
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape') stop();
});
joinForm.addEventListener('submit', (event) => {
  event.preventDefault();
  void join($<HTMLInputElement>('invite').value.trim(), $<HTMLInputElement>('name').value.trim());
});

const invite = new URLSearchParams(location.hash.slice(1)).get('invite');
$<HTMLInputElement>('name').value = sessionStorage.getItem('parley.name') ?? '';
if (invite) $<HTMLInputElement>('invite').value = invite;
history.replaceState(null, '', location.pathname);
joinForm.hidden = false;
status.textContent = 'Pick a name and join.';

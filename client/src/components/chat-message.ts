import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, query, state } from 'lit/decorators.js';
import type { AttachedDocument, DocumentSource } from '../../../shared/protocol.js';
import { loadHighlighter, renderMarkdown } from '../markdown/renderMarkdown.js';
import { MessageStatus, Sender, TRANSIENT_STATUSES, type ReplyStats } from '../state/ChatMessage.js';
import type { ReplyStream } from '../state/ReplyStream.js';
import { copyText } from '../util/copyText.js';
import { formatBytes } from '../util/formatBytes.js';

const stopReasons: Record<ReplyStats['stopReason'], string> = {
  eos: '',
  max_tokens: 'reached the length limit',
  time_limit: 'reached the time limit',
  context_full: 'the context window is full',
};

/** 1st, 2nd, 3rd, 4th … 11th, 12th, 13th … 21st. */
function ordinal(n: number): string {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th');
  return `${n}${suffix}`;
}

/** One line per document: its name and the parts (1-based) a reply drew on, in the order given. */
function sourcesByDocument(sources: readonly DocumentSource[]): { name: string; parts: number[] }[] {
  const byId = new Map<string, { name: string; parts: number[] }>();
  for (const { documentId, name, chunk } of sources) {
    const entry = byId.get(documentId) ?? { name, parts: [] };
    if (!entry.parts.includes(chunk + 1)) entry.parts.push(chunk + 1);
    byId.set(documentId, entry);
  }
  return [...byId.values()];
}

/**
 * One message. A user's text is shown as typed; an assistant's is rendered as sanitised
 * Markdown (see renderMarkdown) every time its text changes. While a reply streams, the
 * element follows its ReplyStream, so each animation frame re-renders this message only.
 *
 * Events: `regenerate` (bubbles, composed) from the regenerate button.
 */
@customElement('chat-message')
export class ChatMessageElement extends LitElement {
  @property({ reflect: true }) from: Sender = Sender.assistant;
  @property() text = '';
  @property({ reflect: true }) status: MessageStatus = MessageStatus.done;
  @property({ type: Number }) queuePosition: number | undefined;
  @property({ attribute: false }) stats: ReplyStats | undefined;
  @property() error: string | undefined;
  @property() notice: string | undefined;
  /** Show the regenerate button (the last reply of a conversation). */
  @property({ type: Boolean }) regenerable = false;
  @property({ attribute: false }) stream: ReplyStream | undefined;
  /** A user's message: the documents sent with it. */
  @property({ attribute: false }) documents: readonly AttachedDocument[] | undefined;
  /** A reply: the document passages it drew on. */
  @property({ attribute: false }) sources: readonly DocumentSource[] | undefined;

  @state() private copied = false;
  /** Bumped when the highlighter arrives, to render code blocks again. */
  @state() private highlighterReady = 0;
  @query('.body.markdown') private body!: HTMLElement | null;
  private following: ReplyStream | undefined;
  private copiedTimer: ReturnType<typeof setTimeout> | undefined;

  static override styles = css`
    :host {
      display: block;
    }
    article {
      padding: 0.6rem 0.85rem;
      border-radius: 0.75rem;
      max-width: 100%;
      box-sizing: border-box;
      overflow-wrap: anywhere;
    }
    :host([from='user']) article {
      background: var(--user-bubble);
      margin-left: auto;
      width: fit-content;
      max-width: min(40rem, 92%);
    }
    :host([from='assistant']) article {
      background: var(--surface);
      border: 1px solid var(--border);
    }
    .who {
      font-size: 0.75rem;
      font-weight: 600;
      color: var(--muted);
      margin: 0 0 0.2rem;
    }
    .body.plain {
      white-space: pre-wrap;
    }
    .body {
      line-height: 1.55;
    }
    .body > :first-child {
      margin-top: 0;
    }
    .body > :last-child {
      margin-bottom: 0;
    }
    .body a {
      color: var(--link);
    }
    .body code {
      font-family: var(--mono);
      font-size: 0.9em;
      background: var(--code-bg);
      border-radius: 0.25rem;
      padding: 0.05rem 0.25rem;
    }
    .body pre {
      margin: 0;
      padding: 0.75rem;
      overflow-x: auto;
      background: var(--code-bg);
      border-radius: 0 0 0.5rem 0.5rem;
    }
    .body pre code {
      padding: 0;
      background: none;
    }
    .code-block {
      margin: 0.75rem 0;
      border: 1px solid var(--border);
      border-radius: 0.5rem;
    }
    .code-bar {
      display: flex;
      justify-content: space-between;
      align-items: center;
      padding: 0.2rem 0.5rem;
      font-size: 0.75rem;
      color: var(--muted);
      border-bottom: 1px solid var(--border);
    }
    .table-scroll {
      overflow-x: auto;
      margin: 0.75rem 0;
    }
    table {
      border-collapse: collapse;
    }
    th,
    td {
      border: 1px solid var(--border);
      padding: 0.3rem 0.6rem;
    }
    th:not([align]) {
      text-align: start;
    }
    blockquote {
      margin: 0.5rem 0;
      padding-left: 0.75rem;
      border-left: 3px solid var(--border);
      color: var(--muted);
    }
    /* Highlighting (highlight.js classes), in the page's light or dark colours. */
    .hljs-keyword,
    .hljs-selector-tag,
    .hljs-built_in,
    .hljs-literal,
    .hljs-type {
      color: var(--code-keyword);
    }
    .hljs-string,
    .hljs-regexp,
    .hljs-addition,
    .hljs-attribute {
      color: var(--code-string);
    }
    .hljs-number,
    .hljs-symbol,
    .hljs-variable,
    .hljs-template-variable,
    .hljs-attr {
      color: var(--code-number);
    }
    .hljs-title,
    .hljs-section,
    .hljs-name,
    .hljs-selector-class,
    .hljs-selector-id {
      color: var(--code-title);
    }
    .hljs-comment,
    .hljs-quote,
    .hljs-meta {
      color: var(--muted);
      font-style: italic;
    }
    .hljs-deletion {
      color: var(--danger);
    }
    .documents {
      list-style: none;
      margin: 0.45rem 0 0;
      padding: 0;
      display: flex;
      flex-wrap: wrap;
      gap: 0.3rem;
    }
    .documents li {
      display: flex;
      align-items: center;
      gap: 0.35rem;
      min-width: 0;
      max-width: 100%;
      box-sizing: border-box;
      padding: 0.2rem 0.55rem;
      border: 1px solid var(--border);
      border-radius: 0.5rem;
      background: var(--surface);
      font-size: 0.8rem;
    }
    .documents svg {
      flex: none;
      width: 0.95rem;
      height: 0.95rem;
      color: var(--muted);
    }
    .doc-name {
      font-weight: 600;
      overflow: hidden;
      text-overflow: ellipsis;
      white-space: nowrap;
    }
    .doc-size {
      flex: none;
      color: var(--muted);
    }
    .sources {
      margin-top: 0.6rem;
      padding-top: 0.4rem;
      border-top: 1px solid var(--border);
      font-size: 0.8rem;
    }
    .sources-title {
      margin: 0 0 0.2rem;
      font-weight: 600;
      color: var(--muted);
    }
    .sources ul {
      margin: 0;
      padding-left: 1.1rem;
    }
    .image-blocked {
      color: var(--muted);
      font-style: italic;
    }
    footer {
      display: flex;
      flex-wrap: wrap;
      align-items: center;
      gap: 0.25rem 0.75rem;
      margin-top: 0.35rem;
      font-size: 0.75rem;
      color: var(--muted);
    }
    footer:empty {
      display: none;
    }
    .state.error {
      color: var(--danger);
    }
    .notice {
      font-size: 0.8rem;
      color: var(--warning);
      margin: 0 0 0.4rem;
    }
    .actions {
      margin-left: auto;
      display: flex;
      gap: 0.25rem;
    }
    button {
      font: inherit;
      font-size: 0.75rem;
      color: var(--muted);
      background: transparent;
      border: 1px solid var(--border);
      border-radius: 0.4rem;
      padding: 0.15rem 0.5rem;
      cursor: pointer;
      min-height: 1.75rem;
    }
    button:hover {
      color: var(--text);
      border-color: var(--muted);
    }
    button:focus-visible,
    pre:focus-visible,
    .table-scroll:focus-visible {
      outline: 2px solid var(--focus);
      outline-offset: 2px;
    }
    .dots::after {
      content: '…';
      animation: pulse 1.2s infinite;
    }
    @keyframes pulse {
      50% {
        opacity: 0.2;
      }
    }
    @media (prefers-reduced-motion: reduce) {
      .dots::after {
        animation: none;
      }
    }
  `;

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.follow(undefined);
    clearTimeout(this.copiedTimer);
  }

  protected override willUpdate(changed: PropertyValues<this>): void {
    if (changed.has('stream')) this.follow(this.stream);
  }

  protected override render() {
    const assistant = this.from === Sender.assistant;
    return html`
      <article aria-label=${assistant ? 'Reply' : 'Your message'}>
        <p class="who" aria-hidden="true">${assistant ? 'Parley' : 'You'}</p>
        ${this.notice ? html`<p class="notice">${this.notice}</p>` : nothing}
        ${assistant
          ? // No Lit part inside: updated() owns this element's children.
            html`<div class="body markdown" @click=${this.onBodyClick}></div>`
          : html`<div class="body plain">${this.text}</div>`}
        ${this.renderDocuments()}${this.renderSources()}
        <footer>${this.renderState()}${this.renderActions()}</footer>
      </article>
    `;
  }

  protected override updated(changed: PropertyValues): void {
    if (this.from === Sender.assistant && (changed.has('text') || changed.has('from') || changed.has('highlighterReady'))) {
      const { fragment, wantsHighlighter } = renderMarkdown(this.text);
      this.body?.replaceChildren(fragment);
      if (wantsHighlighter) void loadHighlighter().then(() => this.highlighterReady++);
    }
  }

  private renderDocuments() {
    if (this.from !== Sender.user || !this.documents?.length) return nothing;
    return html`<ul class="documents" aria-label="Attached documents">
      ${this.documents.map(
        (document) => html`<li title=${document.name}>
          <svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round" aria-hidden="true">
            <path d="M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z" />
            <path d="M14 2v6h6" />
          </svg>
          <span class="doc-name">${document.name}</span>
          <span class="doc-size">${formatBytes(document.size)}</span>
        </li>`,
      )}
    </ul>`;
  }

  private renderSources() {
    if (this.from !== Sender.assistant || !this.sources?.length) return nothing;
    return html`<section class="sources" aria-label="Sources">
      <p class="sources-title">Sources</p>
      <ul>
        ${sourcesByDocument(this.sources).map(
          ({ name, parts }) => html`<li>${name} · ${parts.length === 1 ? `part ${parts[0]}` : `parts ${parts.join(', ')}`}</li>`,
        )}
      </ul>
    </section>`;
  }

  private renderState() {
    switch (this.status) {
      case MessageStatus.sending:
        return html`<span class="state dots">Sending</span>`;
      case MessageStatus.loadingModel:
        return html`<span class="state">Loading the model…${this.queuePosition === undefined ? '' : ` (${ordinal(this.queuePosition)} in line)`}</span>`;
      case MessageStatus.queued:
        return html`<span class="state">Waiting for a free slot: position ${this.queuePosition ?? '?'}</span>`;
      case MessageStatus.starting:
        return html`<span class="state dots">Thinking</span>`;
      case MessageStatus.streaming:
        return html`<span class="state dots">Generating</span>`;
      case MessageStatus.reconnecting:
        return html`<span class="state dots">Reconnecting: the reply picks up where it left off</span>`;
      case MessageStatus.stopped:
        return html`<span class="state">Stopped</span>`;
      case MessageStatus.error:
      case MessageStatus.interrupted:
        return html`<span class="state error">${this.error ?? 'Something went wrong.'}</span>`;
      case MessageStatus.done:
        return this.stats ? this.renderStats(this.stats) : nothing;
    }
  }

  private renderStats(stats: ReplyStats) {
    const reason = stopReasons[stats.stopReason];
    return html`<span class="stats" title="${stats.completionTokens} tokens">
      ${stats.tokensPerSecond.toFixed(1)} tok/s · first token ${Math.round(stats.firstTokenMs)} ms${reason ? ` · ${reason}` : ''}
    </span>`;
  }

  private renderActions() {
    if (this.from !== Sender.assistant) return nothing;
    const finished = !TRANSIENT_STATUSES.has(this.status);
    return html`<span class="actions">
      ${this.text ? html`<button type="button" class="copy" @click=${this.copyReply}>${this.copied ? 'Copied' : 'Copy'}</button>` : nothing}
      ${this.regenerable && finished ? html`<button type="button" class="regenerate" @click=${this.requestRegenerate}>Regenerate</button>` : nothing}
    </span>`;
  }

  private follow(stream: ReplyStream | undefined): void {
    if (this.following === stream) return;
    this.following?.removeEventListener('change', this.onStream);
    this.following = stream;
    stream?.addEventListener('change', this.onStream);
    if (stream) this.text = stream.text;
  }

  private readonly onStream = (): void => {
    if (this.following) this.text = this.following.text;
  };

  private async copyReply(): Promise<void> {
    if (await copyText(this.text)) {
      this.copied = true;
      clearTimeout(this.copiedTimer);
      this.copiedTimer = setTimeout(() => (this.copied = false), 1500);
    }
  }

  /** Copy buttons inside rendered Markdown are plain DOM: one delegated listener serves them. */
  private async onBodyClick(event: Event): Promise<void> {
    const button = event.target instanceof HTMLElement ? event.target.closest('button.copy-code') : null;
    if (!button) return;
    const code = button.closest('.code-block')?.querySelector('pre')?.textContent ?? '';
    if (await copyText(code)) {
      button.textContent = 'Copied';
      setTimeout(() => (button.textContent = 'Copy code'), 1500);
    }
  }

  private requestRegenerate(): void {
    this.dispatchEvent(new CustomEvent('regenerate', { bubbles: true, composed: true }));
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-message': ChatMessageElement;
  }
}

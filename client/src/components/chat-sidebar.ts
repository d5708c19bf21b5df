import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { repeat } from 'lit/directives/repeat.js';
import { ExportFormat } from '../api/ConversationApi.js';
import type { Conversation } from '../state/ChatMessage.js';
import { visuallyHidden } from './sharedStyles.js';

/**
 * The conversation list: new, switch, rename, delete; below it, export (the open conversation or
 * all of them, as Markdown or JSON) and delete all, after a confirmation. A conversation whose
 * reply is running is marked as generating.
 *
 * Events (bubble, composed): `new-conversation`; with `detail.id`: `select-conversation`,
 * `rename-conversation` (+ `detail.title`), `delete-conversation`, `export-conversation`
 * (+ `detail.format`); `export-all` with `detail.format`; `delete-all`.
 */
@customElement('chat-sidebar')
export class ChatSidebar extends LitElement {
  @property({ attribute: false }) conversations: readonly Conversation[] = [];
  @property() currentId: string | undefined;
  @property({ attribute: false }) generating: ReadonlySet<string> = new Set();

  @state() private editing: string | undefined;
  @state() private confirming: string | undefined;
  @state() private confirmingAll = false;

  static override styles = [
    visuallyHidden,
    css`
      :host {
        display: flex;
        flex-direction: column;
        min-height: 0;
      }
      .new {
        margin: 0.75rem;
        font: inherit;
        font-weight: 600;
        padding: 0.55rem 0.75rem;
        border-radius: 0.6rem;
        border: 1px solid var(--border);
        background: var(--surface);
        color: var(--text);
        cursor: pointer;
        text-align: left;
      }
      ul {
        list-style: none;
        margin: 0;
        padding: 0 0.5rem 0.75rem;
        overflow-y: auto;
        flex: 1;
      }
      li {
        display: flex;
        align-items: center;
        gap: 0.15rem;
        border-radius: 0.5rem;
      }
      li.current {
        background: var(--selected);
      }
      .open {
        flex: 1;
        min-width: 0;
        display: flex;
        align-items: center;
        gap: 0.4rem;
        font: inherit;
        text-align: left;
        color: var(--text);
        background: none;
        border: none;
        padding: 0.55rem 0.5rem;
        cursor: pointer;
        min-height: 2.5rem;
      }
      .title {
        overflow: hidden;
        text-overflow: ellipsis;
        white-space: nowrap;
      }
      .busy {
        flex: none;
        width: 0.55rem;
        height: 0.55rem;
        border-radius: 50%;
        background: var(--accent);
        animation: pulse 1.2s infinite;
      }
      @keyframes pulse {
        50% {
          opacity: 0.3;
        }
      }
      @media (prefers-reduced-motion: reduce) {
        .busy {
          animation: none;
        }
      }
      .tool {
        font: inherit;
        font-size: 0.75rem;
        color: var(--muted);
        background: none;
        border: 1px solid transparent;
        border-radius: 0.4rem;
        padding: 0.25rem 0.4rem;
        cursor: pointer;
        min-height: 2rem;
      }
      .tool:hover {
        border-color: var(--border);
        color: var(--text);
      }
      .tool.danger {
        color: var(--danger);
      }
      .tool:disabled {
        opacity: 0.5;
        cursor: default;
        border-color: transparent;
        color: var(--muted);
      }
      .manage {
        flex: none;
        display: flex;
        flex-direction: column;
        gap: 0.1rem;
        padding: 0.4rem 0.75rem 0.6rem;
        border-top: 1px solid var(--border);
        font-size: 0.75rem;
        color: var(--muted);
      }
      .row {
        display: flex;
        flex-wrap: wrap;
        align-items: center;
        gap: 0.15rem;
      }
      .label {
        flex: 1;
        min-width: 0;
      }
      .row.confirm .label {
        flex-basis: 100%;
        color: var(--text);
      }
      .manage .delete-all {
        align-self: flex-start;
      }
      form {
        flex: 1;
        display: flex;
        gap: 0.25rem;
        padding: 0.25rem;
      }
      input {
        flex: 1;
        min-width: 0;
        font: inherit;
        color: var(--text);
        background: var(--surface);
        border: 1px solid var(--border);
        border-radius: 0.4rem;
        padding: 0.3rem 0.4rem;
      }
      button:focus-visible,
      input:focus-visible {
        outline: 2px solid var(--focus);
        outline-offset: 1px;
      }
      .none {
        color: var(--muted);
        padding: 0.5rem 0.75rem;
        font-size: 0.9rem;
      }
    `,
  ];

  static override shadowRootOptions = { ...LitElement.shadowRootOptions, delegatesFocus: true };

  protected override updated(changed: PropertyValues): void {
    if (changed.has('editing') && this.editing) this.renderRoot.querySelector<HTMLInputElement>('input.rename')?.select();
    // The button that was pressed is gone: the focus moves to the safe choice, and back after.
    if (changed.has('confirmingAll') && changed.get('confirmingAll') !== undefined) {
      this.renderRoot.querySelector<HTMLButtonElement>(this.confirmingAll ? 'button.keep-all' : 'button.delete-all')?.focus();
    }
  }

  protected override render() {
    return html`
      <button type="button" class="new" @click=${() => this.emit('new-conversation', {})}>+ New conversation</button>
      <ul aria-label="Conversations">
        ${this.conversations.length === 0 ? html`<li class="none">No conversations yet.</li>` : nothing}
        ${repeat(
          this.conversations,
          (conversation) => conversation.id,
          (conversation) => this.renderItem(conversation),
        )}
      </ul>
      ${this.renderManage()}
    `;
  }

  private renderManage() {
    const current = this.conversations.find((conversation) => conversation.id === this.currentId);
    // Only what the server has can be exported.
    const exportable = current?.serverId !== undefined;
    const none = this.conversations.length === 0;
    return html`<section class="manage" aria-label="Export and delete">
      <div class="row" role="group" aria-labelledby="export-one-label">
        <span class="label" id="export-one-label">Export this chat</span>
        <button
          type="button"
          class="tool export-one"
          data-format=${ExportFormat.markdown}
          aria-label="Export this conversation as Markdown"
          ?disabled=${!exportable}
          @click=${() => this.exportCurrent(ExportFormat.markdown)}
        >
          Markdown
        </button>
        <button
          type="button"
          class="tool export-one"
          data-format=${ExportFormat.json}
          aria-label="Export this conversation as JSON"
          ?disabled=${!exportable}
          @click=${() => this.exportCurrent(ExportFormat.json)}
        >
          JSON
        </button>
      </div>
      <div class="row" role="group" aria-labelledby="export-all-label">
        <span class="label" id="export-all-label">Export all</span>
        <button
          type="button"
          class="tool export-all"
          data-format=${ExportFormat.markdown}
          aria-label="Export all conversations as Markdown"
          ?disabled=${none}
          @click=${() => this.emit('export-all', { format: ExportFormat.markdown })}
        >
          Markdown
        </button>
        <button
          type="button"
          class="tool export-all"
          data-format=${ExportFormat.json}
          aria-label="Export all conversations as JSON"
          ?disabled=${none}
          @click=${() => this.emit('export-all', { format: ExportFormat.json })}
        >
          JSON
        </button>
      </div>
      ${this.confirmingAll
        ? html`<div class="row confirm" role="group" aria-labelledby="delete-all-question" @keydown=${this.onConfirmAllKeydown}>
            <span class="label" id="delete-all-question">Delete all ${this.conversations.length === 1 ? 'your conversation' : `${this.conversations.length} conversations`}? This cannot be undone.</span>
            <button type="button" class="tool danger confirm-delete-all" @click=${this.confirmDeleteAll}>Delete all</button>
            <button type="button" class="tool keep-all" @click=${() => (this.confirmingAll = false)}>Cancel</button>
          </div>`
        : html`<button type="button" class="tool danger delete-all" ?disabled=${none} @click=${() => (this.confirmingAll = true)}>Delete all conversations…</button>`}
    </section>`;
  }

  private exportCurrent(format: ExportFormat): void {
    if (this.currentId !== undefined) this.emit('export-conversation', { id: this.currentId, format });
  }

  private readonly onConfirmAllKeydown = (event: KeyboardEvent): void => {
    if (event.key !== 'Escape') return;
    event.stopPropagation();
    this.confirmingAll = false;
  };

  private readonly confirmDeleteAll = (): void => {
    this.confirmingAll = false;
    this.emit('delete-all', {});
  };

  private renderItem(conversation: Conversation) {
    const current = conversation.id === this.currentId;
    const busy = this.generating.has(conversation.id);
    if (this.editing === conversation.id) {
      return html`<li class=${current ? 'current' : ''}>
        <form @submit=${(event: SubmitEvent) => this.commitRename(event, conversation.id)}>
          <label class="visually-hidden" for="rename-${conversation.id}">New title</label>
          <input
            id="rename-${conversation.id}"
            class="rename"
            maxlength="200"
            .value=${conversation.title}
            @keydown=${(event: KeyboardEvent) => {
              if (event.key === 'Escape') {
                event.stopPropagation();
                this.editing = undefined;
              }
            }}
          />
          <button type="submit" class="tool">Save</button>
        </form>
      </li>`;
    }
    if (this.confirming === conversation.id) {
      return html`<li class=${current ? 'current' : ''}>
        <span class="open"><span class="title">Delete “${conversation.title}”?</span></span>
        <button type="button" class="tool danger confirm-delete" @click=${() => this.confirmDelete(conversation.id)}>Delete</button>
        <button type="button" class="tool" @click=${() => (this.confirming = undefined)}>Keep</button>
      </li>`;
    }
    return html`<li class=${current ? 'current' : ''} data-id=${conversation.id} ?data-generating=${busy} ?data-remote=${conversation.unfetched === true}>
      <button type="button" class="open" aria-current=${current ? 'true' : 'false'} @click=${() => this.emit('select-conversation', { id: conversation.id })}>
        ${busy ? html`<span class="busy" aria-hidden="true"></span>` : nothing}
        <span class="title">${conversation.title}</span>
        ${busy ? html`<span class="visually-hidden">(generating)</span>` : nothing}
      </button>
      <button type="button" class="tool rename-button" aria-label="Rename ${conversation.title}" title="Rename" @click=${() => (this.editing = conversation.id)}>Rename</button>
      <button type="button" class="tool delete" aria-label="Delete ${conversation.title}" title="Delete" @click=${() => (this.confirming = conversation.id)}>Delete</button>
    </li>`;
  }

  private commitRename(event: SubmitEvent, id: string): void {
    event.preventDefault();
    const input = (event.currentTarget as HTMLFormElement).querySelector('input');
    const title = input?.value.trim() ?? '';
    this.editing = undefined;
    if (title) this.emit('rename-conversation', { id, title });
  }

  private confirmDelete(id: string): void {
    this.confirming = undefined;
    this.emit('delete-conversation', { id });
  }

  private emit(type: string, detail: Record<string, string>): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-sidebar': ChatSidebar;
  }
}

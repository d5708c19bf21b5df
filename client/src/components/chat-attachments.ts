import { css, html, LitElement, nothing } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import { repeat } from 'lit/directives/repeat.js';
import { AttachmentPhase, type Attachment } from '../controllers/AttachmentsController.js';
import { formatBytes } from '../util/formatBytes.js';

/** The server's name for a ready file (cleaned of control and bidi characters), else the file's own. */
function nameOf(item: Attachment): string {
  return item.document?.name ?? item.name;
}

/**
 * The files attached to the message being written, one chip each: name (always text, never
 * markup), size, state (uploading with its progress, reading, ready, refused with the server's
 * reason) and a remove button.
 *
 * Events (bubble, composed): `remove-attachment` with `detail.key`.
 */
@customElement('chat-attachments')
export class ChatAttachments extends LitElement {
  @property({ attribute: false }) items: readonly Attachment[] = [];

  static override styles = css`
    :host {
      display: block;
    }
    ul {
      list-style: none;
      margin: 0 0 0.4rem;
      padding: 0;
      display: flex;
      flex-wrap: wrap;
      gap: 0.35rem;
    }
    li {
      display: flex;
      align-items: center;
      gap: 0.4rem;
      max-width: 100%;
      min-width: 0;
      box-sizing: border-box;
      padding: 0.2rem 0.2rem 0.2rem 0.6rem;
      border: 1px solid var(--border);
      border-radius: 0.6rem;
      background: var(--surface);
      font-size: 0.8rem;
    }
    li[data-phase='refused'] {
      border-color: var(--danger);
      background: var(--danger-bg);
    }
    .text {
      display: flex;
      flex-direction: column;
      min-width: 0;
    }
    .name {
      font-weight: 600;
      white-space: nowrap;
      overflow: hidden;
      text-overflow: ellipsis;
      max-width: 16rem;
    }
    .meta {
      color: var(--muted);
      font-size: 0.72rem;
    }
    li[data-phase='ready'] .state {
      color: var(--ok);
    }
    li[data-phase='refused'] .state {
      color: var(--danger);
    }
    .error {
      color: var(--danger);
      font-size: 0.72rem;
      overflow-wrap: anywhere;
    }
    progress {
      width: 4rem;
      height: 0.4rem;
      vertical-align: middle;
      accent-color: var(--accent);
    }
    button {
      flex: none;
      font: inherit;
      font-size: 1rem;
      line-height: 1;
      color: var(--muted);
      background: transparent;
      border: none;
      border-radius: 0.4rem;
      width: 2rem;
      height: 2rem;
      cursor: pointer;
    }
    button:hover {
      color: var(--text);
      background: var(--code-bg);
    }
    button:focus-visible {
      outline: 2px solid var(--focus);
      outline-offset: 1px;
    }
    @media (max-width: 760px) {
      .name {
        max-width: 11rem;
      }
    }
  `;

  protected override render() {
    if (this.items.length === 0) return nothing;
    return html`<ul aria-label="Attached files">
      ${repeat(
        this.items,
        (item) => item.key,
        (item) => html`<li data-phase=${item.phase} title=${nameOf(item)}>
          <span class="text">
            <span class="name">${nameOf(item)}</span>
            <span class="meta">${formatBytes(item.size)} · <span class="state">${this.renderState(item)}</span></span>
            ${item.phase === AttachmentPhase.refused && item.error ? html`<span class="error">${item.error}</span>` : nothing}
          </span>
          <button type="button" class="remove" aria-label=${`Remove ${nameOf(item)}`} @click=${() => this.requestRemove(item.key)}>×</button>
        </li>`,
      )}
    </ul>`;
  }

  private renderState(item: Attachment) {
    switch (item.phase) {
      case AttachmentPhase.uploading: {
        const percent = item.size > 0 ? Math.min(100, Math.round((item.sent / item.size) * 100)) : 0;
        return html`uploading ${percent}% <progress max="100" .value=${percent} aria-hidden="true"></progress>`;
      }
      case AttachmentPhase.reading:
        return 'reading…';
      case AttachmentPhase.ready:
        return 'ready';
      case AttachmentPhase.refused:
        return 'not attached';
    }
  }

  private requestRemove(key: string): void {
    this.dispatchEvent(new CustomEvent('remove-attachment', { detail: { key }, bubbles: true, composed: true }));
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-attachments': ChatAttachments;
  }
}

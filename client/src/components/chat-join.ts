import { css, html, LitElement, nothing } from 'lit';
import { customElement, property } from 'lit/decorators.js';

/**
 * The join form: a display name and the invite code (filled in from the join link).
 *
 * Event (bubbles, composed): `join` with `detail.name` and `detail.invite`.
 */
@customElement('chat-join')
export class ChatJoin extends LitElement {
  @property() name = '';
  @property() invite = '';
  /** Why the form shows (an expired session) or why joining failed. */
  @property() message: string | undefined;
  @property({ type: Boolean }) busy = false;

  static override styles = css`
    :host {
      display: block;
      padding: 1rem;
    }
    form {
      max-width: 24rem;
      margin: 12vh auto 0;
      display: flex;
      flex-direction: column;
      gap: 1rem;
      padding: 1.5rem;
      border: 1px solid var(--border);
      border-radius: 1rem;
      background: var(--surface);
    }
    h2 {
      margin: 0;
      font-size: 1.3rem;
    }
    p {
      margin: 0;
      color: var(--muted);
    }
    label {
      display: flex;
      flex-direction: column;
      gap: 0.3rem;
      font-weight: 600;
      font-size: 0.9rem;
    }
    input {
      font: inherit;
      font-weight: normal;
      color: var(--text);
      background: var(--bg);
      border: 1px solid var(--border);
      border-radius: 0.5rem;
      padding: 0.6rem 0.7rem;
    }
    button {
      font: inherit;
      font-weight: 600;
      padding: 0.7rem;
      border-radius: 0.6rem;
      border: none;
      background: var(--accent);
      color: var(--accent-text);
      cursor: pointer;
    }
    button:disabled {
      opacity: 0.6;
    }
    input:focus-visible,
    button:focus-visible {
      outline: 2px solid var(--focus);
      outline-offset: 2px;
    }
    .message {
      color: var(--danger);
      font-weight: 500;
    }
  `;

  static override shadowRootOptions = { ...LitElement.shadowRootOptions, delegatesFocus: true };

  protected override render() {
    return html`
      <form @submit=${this.onSubmit} aria-labelledby="join-title">
        <h2 id="join-title">Join this Parley</h2>
        <p>Pick the name others on this server see. The invite code comes from the join link.</p>
        ${this.message ? html`<p class="message" role="alert">${this.message}</p>` : nothing}
        <label>Your name <input name="name" autocomplete="nickname" maxlength="64" required .value=${this.name} autofocus /></label>
        <label>Invite code <input name="invite" autocomplete="off" spellcheck="false" required .value=${this.invite} /></label>
        <button type="submit" ?disabled=${this.busy}>${this.busy ? 'Joining…' : 'Join'}</button>
      </form>
    `;
  }

  private onSubmit(event: SubmitEvent): void {
    event.preventDefault();
    const form = event.currentTarget as HTMLFormElement;
    const data = new FormData(form);
    const name = String(data.get('name') ?? '').trim();
    const invite = String(data.get('invite') ?? '').trim();
    if (!name || !invite) return;
    this.dispatchEvent(new CustomEvent('join', { detail: { name, invite }, bubbles: true, composed: true }));
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-join': ChatJoin;
  }
}

import { css, html, LitElement, nothing, type PropertyValues } from 'lit';
import { customElement, property, query } from 'lit/decorators.js';
import type { ModelInfo } from '../../../shared/protocol.js';

/**
 * Which model answers the open conversation's next message: a labelled select over the models
 * the server serves (its default first). Renders nothing when there is only one to choose.
 *
 * Events (bubble, composed): `pick-model` with `detail.model` (a model id).
 */
@customElement('chat-model-picker')
export class ChatModelPicker extends LitElement {
  /** `ready.models`: every model served, the default first. */
  @property({ attribute: false }) models: readonly ModelInfo[] = [];
  /** The id of the model shown as chosen. */
  @property() value: string | undefined;
  @property({ type: Boolean }) disabled = false;

  @query('select') private select!: HTMLSelectElement | null;

  static override styles = css`
    :host {
      display: block;
    }
    .picker {
      display: flex;
      align-items: center;
      gap: 0.5rem;
      font-size: 0.8rem;
      color: var(--muted);
    }
    select {
      font: inherit;
      color: var(--text);
      background: var(--surface);
      border: 1px solid var(--border);
      border-radius: 0.5rem;
      padding: 0.25rem 0.4rem;
      min-height: 2rem;
      max-width: min(24rem, 100%);
      min-width: 0;
      text-overflow: ellipsis;
    }
    select:focus-visible {
      outline: 2px solid var(--focus);
      outline-offset: 1px;
    }
    select:disabled {
      opacity: 0.6;
    }
  `;

  protected override render() {
    if (this.models.length < 2) return nothing;
    const names = new Map<string, number>();
    for (const model of this.models) names.set(model.name, (names.get(model.name) ?? 0) + 1);
    return html`<div class="picker">
      <label for="model">Model</label>
      <select id="model" ?disabled=${this.disabled} @change=${this.onChange}>
        ${this.models.map((model) => html`<option value=${model.id} ?selected=${model.id === this.value}>${label(model, (names.get(model.name) ?? 0) > 1)}</option>`)}
      </select>
    </div>`;
  }

  protected override updated(changed: PropertyValues<this>): void {
    // The select keeps what was picked in it until the page says otherwise: show the page's value.
    if ((changed.has('value') || changed.has('models')) && this.select && this.value !== undefined) this.select.value = this.value;
  }

  private onChange(event: Event): void {
    const model = (event.target as HTMLSelectElement).value;
    this.dispatchEvent(new CustomEvent('pick-model', { detail: { model }, bubbles: true, composed: true }));
  }
}

/** The model's name, "(demo)" for Parley's demo model, and its id when another model has the same name. */
function label(model: ModelInfo, ambiguous: boolean): string {
  return `${model.name}${ambiguous ? ` (${model.id})` : ''}${model.demo ? ' (demo)' : ''}`;
}

declare global {
  interface HTMLElementTagNameMap {
    'chat-model-picker': ChatModelPicker;
  }
}

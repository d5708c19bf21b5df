import DOMPurify, { type Config } from 'dompurify';
import { Marked } from 'marked';

/**
 * Model output is untrusted: a prompt injection can make a model write any HTML. The pipeline:
 *
 * 1. marked turns Markdown into HTML. Raw HTML in the text is escaped and shown as text (an
 *    assistant explaining `<div>` should not produce one), images become a text placeholder
 *    (a remote image is a data-exfiltration channel), task-list checkboxes become characters.
 * 2. DOMPurify sanitises the result into a DocumentFragment of an inert document, with an
 *    allowlist of URL schemes and no style, id or form attributes. Nothing is concatenated
 *    after this: the fragment is inserted as nodes, and extras (copy buttons, table wrappers)
 *    are added with DOM calls.
 *
 * This runs on every streamed update, not only at the end.
 */
const marked = new Marked({ gfm: true, breaks: false, async: false });
marked.use({
  renderer: {
    html({ text }) {
      return escapeHtml(text);
    },
    image({ text }) {
      return `<span class="image-blocked">${escapeHtml(`[image not loaded${text ? `: ${text}` : ''}]`)}</span>`;
    },
    checkbox({ checked }) {
      return checked ? '☑ ' : '☐ ';
    },
  },
});

const purify = DOMPurify(window);
purify.addHook('afterSanitizeAttributes', (node) => {
  if (node.nodeName === 'A') {
    if (node.hasAttribute('href')) {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer');
    } else {
      node.removeAttribute('target');
    }
  }
});

const sanitizeConfig: Config & { RETURN_DOM_FRAGMENT: true } = {
  RETURN_DOM_FRAGMENT: true,
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'img', 'picture', 'source', 'video', 'audio', 'track', 'form', 'input', 'button', 'textarea', 'select', 'option', 'link', 'meta', 'base', 'svg', 'math', 'template', 'dialog', 'details'],
  FORBID_ATTR: ['style', 'id', 'name', 'src', 'srcset', 'action', 'formaction', 'background', 'poster', 'ping', 'target'],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  // Absolute http(s) and mailto only: no javascript:, data:, relative or protocol-relative URLs.
  ALLOWED_URI_REGEXP: /^(?:https?:\/\/|mailto:)/i,
};

// The highlighter's output is HTML too, and is sanitised again: spans with classes, nothing else.
const highlightConfig: Config & { RETURN_DOM_FRAGMENT: true } = { RETURN_DOM_FRAGMENT: true, ALLOWED_TAGS: ['span'], ALLOWED_ATTR: ['class'] };

type Highlight = (code: string, language: string) => string | undefined;
let highlight: Highlight | undefined;
let highlighterLoading: Promise<void> | undefined;

/** Loads the highlighting chunk once; resolves when code blocks can be highlighted. */
export function loadHighlighter(): Promise<void> {
  highlighterLoading ??= import('./highlighter.js').then(
    (module) => {
      highlight = module.highlight;
    },
    () => {
      // Without highlighting, code blocks stay plain.
    },
  );
  return highlighterLoading;
}

export interface RenderedMarkdown {
  readonly fragment: DocumentFragment;
  /** A code block names a language but the highlighter is not loaded yet. */
  readonly wantsHighlighter: boolean;
}

/** Markdown to a sanitised fragment, ready to insert. */
export function renderMarkdown(text: string): RenderedMarkdown {
  const html = marked.parse(text, { async: false });
  const fragment = purify.sanitize(html, sanitizeConfig);
  const wantsHighlighter = decorate(fragment);
  return { fragment, wantsHighlighter };
}

/** Adds a copy button to each code block (highlighted when possible) and a scroll wrapper to each table. */
function decorate(fragment: DocumentFragment): boolean {
  let wantsHighlighter = false;
  for (const pre of Array.from(fragment.querySelectorAll('pre'))) {
    const code = pre.querySelector('code');
    const wrapper = document.createElement('div');
    wrapper.className = 'code-block';
    const language = /(?:^|\s)language-([\w+-]+)/.exec(code?.className ?? '')?.[1];
    if (code && language) {
      if (highlight) {
        const highlighted = highlight(code.textContent ?? '', language.toLowerCase());
        if (highlighted !== undefined) code.replaceChildren(purify.sanitize(highlighted, highlightConfig));
      } else {
        wantsHighlighter = true;
      }
    }
    const bar = document.createElement('div');
    bar.className = 'code-bar';
    const label = document.createElement('span');
    label.textContent = language ?? 'code';
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'copy-code';
    button.textContent = 'Copy code';
    bar.append(label, button);
    pre.tabIndex = 0;
    pre.replaceWith(wrapper);
    wrapper.append(bar, pre);
  }
  for (const table of Array.from(fragment.querySelectorAll('table'))) {
    const wrapper = document.createElement('div');
    wrapper.className = 'table-scroll';
    wrapper.tabIndex = 0;
    table.replaceWith(wrapper);
    wrapper.append(table);
  }
  return wantsHighlighter;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

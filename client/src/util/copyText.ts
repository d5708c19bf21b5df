/**
 * Copies text to the clipboard. `navigator.clipboard` exists only in secure contexts (https or
 * loopback); on a plain-http LAN address the text goes through a hidden textarea and
 * `execCommand('copy')`, which still works inside a click handler. Focus goes back where it was.
 * `container` holds that textarea: inside an open modal dialog pass the dialog, because the rest
 * of the page is inert then and nothing in it can be selected.
 */
export async function copyText(text: string, container: ParentNode = document.body): Promise<boolean> {
  if (window.isSecureContext && navigator.clipboard) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Permission refused or no focus: try the fallback.
    }
  }
  const previous = deepActiveElement();
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.setAttribute('aria-hidden', 'true');
  area.tabIndex = -1;
  // Positioned off screen by the document stylesheet: no inline style (the CSP forbids it).
  area.className = 'parley-copy-buffer';
  container.append(area);
  area.select();
  area.setSelectionRange(0, text.length);
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  area.remove();
  if (previous instanceof HTMLElement) previous.focus({ preventScroll: true });
  return copied;
}

function deepActiveElement(): Element | null {
  let active = document.activeElement;
  while (active?.shadowRoot?.activeElement) active = active.shadowRoot.activeElement;
  return active;
}

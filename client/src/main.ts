/**
 * Parley's web client. Everything renders in Lit elements; styles are the linked style.css and
 * each element's `static styles` (adoptedStyleSheets), so the strict CSP needs no inline style.
 */
import './style.css';
import './components/chat-app.js';

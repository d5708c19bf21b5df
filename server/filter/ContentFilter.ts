import type { Logger } from 'pino';
import type { Turn } from '../engine/Engine.js';
import type { Metrics } from '../metrics/Metrics.js';
import { ContentFilteredError } from '../ParleyError.js';
import { FilterAction, FilterDirection, type FilterRule } from './FilterRule.js';
import { StreamingMatcher, type FilterMatch } from './StreamingMatcher.js';

/** With content logging on, the matched texts an audit event carries at most. */
const MAX_LOGGED_TEXTS = 20;

export interface ContentFilterOptions {
  /** Put the matched text in the audit event (`--log-content`); off, the event names the rule only. */
  readonly logContent: boolean;
  readonly metrics?: Metrics;
}

/** The parts of a chat request the input rules read: the new message, the caller's earlier turns, its system prompt. */
export interface ScreenedRequest {
  readonly text: string;
  readonly history?: readonly Turn[];
  readonly options?: { readonly system?: string };
}

/**
 * The content filter of `--filter-rules`: input rules screen what a user sends before any work is
 * done for it; output rules screen the reply as it streams (OutputFilter). Every match is an audit
 * event in the log (`event: content_filter`, the rule's label, action and direction, the request
 * id; the matched text only with content logging on) and a count in the metrics.
 */
export class ContentFilter {
  private readonly inputRules: readonly FilterRule[];
  private readonly outputRules: readonly FilterRule[];

  constructor(
    readonly rules: readonly FilterRule[],
    private readonly options: ContentFilterOptions,
  ) {
    this.inputRules = rules.filter((rule) => rule.input);
    this.outputRules = rules.filter((rule) => rule.output);
  }

  /** The most characters the output filter holds back from a streaming reply. */
  get holdBack(): number {
    return new StreamingMatcher(this.outputRules).holdBack;
  }

  /**
   * Applies the input rules to every text the caller brings (the message, a stateless caller's
   * history and system prompt): a `refuse` match refuses the request, `redact` returns it with
   * the matches replaced, `flag` only logs.
   */
  screen<T extends ScreenedRequest>(request: T, log: Logger, req: string): { ok: true; request: T } | { ok: false; error: ContentFilteredError } {
    if (this.inputRules.length === 0) return { ok: true, request };
    // Audited once for the whole request, a count per rule: a megabyte of history full of matches is a few log lines.
    const matches: FilterMatch[] = [];
    const screenText = (text: string): string | ContentFilteredError => {
      const step = new StreamingMatcher(this.inputRules).end(text);
      for (const match of step.matches) matches.push(match);
      return step.refusedBy ? new ContentFilteredError(step.refusedBy.label, FilterDirection.input) : step.text;
    };
    const screened = this.screenAll(request, screenText);
    this.audit(matches, FilterDirection.input, log, req);
    return screened;
  }

  private screenAll<T extends ScreenedRequest>(request: T, screenText: (text: string) => string | ContentFilteredError): { ok: true; request: T } | { ok: false; error: ContentFilteredError } {
    const text = screenText(request.text);
    if (typeof text !== 'string') return { ok: false, error: text };
    let history = request.history;
    if (history !== undefined) {
      const screened: Turn[] = [];
      for (const turn of history) {
        const turnText = screenText(turn.text);
        if (typeof turnText !== 'string') return { ok: false, error: turnText };
        screened.push(turnText === turn.text ? turn : { role: turn.role, text: turnText });
      }
      history = screened;
    }
    let options = request.options;
    if (options?.system !== undefined) {
      const system = screenText(options.system);
      if (typeof system !== 'string') return { ok: false, error: system };
      options = { ...options, system };
    }
    return { ok: true, request: { ...request, text, ...(history === undefined ? {} : { history }), ...(options === undefined ? {} : { options }) } };
  }

  /** A filter for one reply's stream; undefined when no rule applies to output (the reply then streams untouched). */
  output(log: Logger, req: string): OutputFilter | undefined {
    if (this.outputRules.length === 0) return undefined;
    return new OutputFilter(new StreamingMatcher(this.outputRules), (matches) => this.audit(matches, FilterDirection.output, log, req));
  }

  /**
   * One audit event per rule among `matches` (in the order each rule first matched), with how many
   * times it matched: never the matched text, unless content logging is on, and then at most
   * MAX_LOGGED_TEXTS of them.
   */
  private audit(matches: readonly FilterMatch[], direction: FilterDirection, log: Logger, req: string): void {
    const byRule = new Map<FilterRule, string[]>();
    for (const { rule, text } of matches) {
      this.options.metrics?.filterMatched(rule.label, rule.action, direction);
      const texts = byRule.get(rule) ?? [];
      texts.push(text);
      byRule.set(rule, texts);
    }
    for (const [rule, texts] of byRule) {
      const content = this.options.logContent ? { content: texts.slice(0, MAX_LOGGED_TEXTS) } : {};
      const event = { event: 'content_filter', rule: rule.label, action: rule.action, direction, req, count: texts.length, ...content };
      const message = `content filter: rule "${rule.label}" matched (${direction}, ${rule.action})`;
      if (rule.action === FilterAction.refuse) log.warn(event, message);
      else log.info(event, message);
    }
  }
}

/**
 * One reply's output filter: `push` each piece of text as the engine makes it and show what it
 * returns; `end` at the reply's end returns the held-back rest. Once a refuse rule matched,
 * `refused` is set and nothing more comes out.
 */
export class OutputFilter {
  refused: ContentFilteredError | undefined;

  constructor(
    private readonly matcher: StreamingMatcher,
    private readonly audit: (matches: readonly FilterMatch[]) => void,
  ) {}

  push(text: string): string {
    return this.take(this.matcher.push(text));
  }

  end(): string {
    return this.take(this.matcher.end());
  }

  private take(step: { text: string; matches: readonly FilterMatch[]; refusedBy?: FilterRule }): string {
    this.audit(step.matches);
    if (step.refusedBy) this.refused ??= new ContentFilteredError(step.refusedBy.label, FilterDirection.output);
    return step.text;
  }
}

/** Most terms a query keeps: a long message still makes a cheap query. */
const MAX_TERMS = 32;

/**
 * A user's message as a safe FTS5 MATCH expression: its words (letters, digits, `_`), lower-cased,
 * each quoted as a string and joined with OR, so BM25 ranks chunks by how many of the rarer words
 * they hold. Nothing of the message's own syntax passes (quotes, `*`, `NEAR`, `:`, parentheses,
 * `AND`/`NOT` as operators): a term is only ever word characters inside double quotes. Words of
 * one character are left out. Undefined when no word is left (then there is nothing to match).
 */
export function toFtsQuery(message: string): string | undefined {
  return matchExpression(ftsTerms(message));
}

/** The message's distinct words of two or more characters, lower-cased, at most MAX_TERMS. */
export function ftsTerms(message: string): string[] {
  const terms = new Set<string>();
  for (const match of message.toLowerCase().matchAll(/[\p{L}\p{N}_]+/gu)) {
    const term = match[0];
    if ([...term].length < 2) continue;
    terms.add(term);
    if (terms.size >= MAX_TERMS) break;
  }
  return [...terms];
}

/** Terms (word characters only, as ftsTerms gives them) quoted and joined with OR; undefined for none. */
export function matchExpression(terms: readonly string[]): string | undefined {
  if (terms.length === 0) return undefined;
  return terms.map((term) => `"${term}"`).join(' OR ');
}

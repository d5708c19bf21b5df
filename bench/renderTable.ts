import { markdownTable } from 'markdown-table';

/** One printed table: a title line and GFM rows, so the output pastes into README.md as is. */
export interface Table {
  readonly title: string;
  /** The first row is the header; the first column is left-aligned, the others right-aligned. */
  readonly rows: ReadonlyArray<ReadonlyArray<string>>;
  /** Lines printed under the table (units, caveats). */
  readonly notes?: readonly string[];
}

export function renderTable(table: Table): string {
  const columns = table.rows[0]?.length ?? 0;
  const body = markdownTable(table.rows, { align: Array.from({ length: columns }, (_, index) => (index === 0 ? 'l' : 'r')) });
  return [`### ${table.title}`, '', body, ...(table.notes?.length ? ['', ...table.notes] : [])].join('\n');
}

/** A figure for a cell: fixed decimals, thousands separated, and `–` for a missing one. */
export function cell(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

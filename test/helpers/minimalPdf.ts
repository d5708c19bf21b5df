/**
 * A tiny valid PDF with one page and one line of text (Helvetica), built by hand: a catalog, a
 * page tree, a page, its content stream and a font, with a correct cross-reference table. `text`
 * must not hold `(`, `)` or `\`.
 */
export function minimalPdf(text: string): Buffer {
  const content = `BT /F1 12 Tf 72 712 Td (${text}) Tj ET`;
  const objects = [
    '<< /Type /Catalog /Pages 2 0 R >>',
    '<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
    '<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
    `<< /Length ${content.length} >>\nstream\n${content}\nendstream`,
    '<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
  ];
  let pdf = '%PDF-1.4\n';
  const offsets: number[] = [];
  objects.forEach((object, index) => {
    offsets.push(pdf.length);
    pdf += `${index + 1} 0 obj\n${object}\nendobj\n`;
  });
  const xref = pdf.length;
  pdf += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${offsets.map((offset) => `${String(offset).padStart(10, '0')} 00000 n \n`).join('')}`;
  pdf += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(pdf, 'latin1');
}

/** The first bytes of a PNG file (signature and the start of its IHDR chunk): what a renamed image starts with. */
export const PNG_BYTES = Buffer.concat([
  Buffer.from('89504e470d0a1a0a0000000d494844520000000100000001080600000000', 'hex'),
  Buffer.alloc(64, 0),
]);

/**
 * A generated corpus of `lines` log-like lines with pseudo-random words (seeded, so the same
 * every run); `plant` puts a word on the given line.
 */
export function generatedLog(lines: number, plant?: { readonly line: number; readonly word: string }): string {
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet', 'kilo', 'lima', 'mike', 'november', 'oscar', 'papa', 'quebec', 'romeo', 'sierra', 'tango', 'uniform', 'victor', 'whiskey', 'xray', 'yankee', 'zulu', 'request', 'served', 'cache', 'miss', 'worker', 'started', 'stopped', 'retry'];
  let seed = 42;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed;
  };
  const out: string[] = [];
  for (let line = 0; line < lines; line += 1) {
    const parts = [`2026-12-06T10:${String(line % 60).padStart(2, '0')}:00Z`, `INFO`, `worker-${next() % 16}`];
    for (let index = 0; index < 10; index += 1) parts.push(words[next() % words.length] ?? 'alpha');
    if (plant?.line === line) parts.push(plant.word);
    out.push(parts.join(' '));
  }
  return `${out.join('\n')}\n`;
}

/**
 * The id the OpenAI-compatible API lists for a model and expects in requests: its name in lower
 * case, runs of anything but letters, digits and dots turned into one dash ("Qwen2.5 0.5B
 * Instruct" → "qwen2.5-0.5b-instruct"), at most 64 characters.
 */
export function modelIdOf(name: string): string {
  const id = name.toLowerCase().replace(/[^a-z0-9.]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 64).replace(/-+$/, '');
  return id.length > 0 ? id : 'parley';
}

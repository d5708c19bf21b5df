/** Short chat messages, the same for every path, so prompts cost the same everywhere. */
export const PROMPTS = [
  'Tell me a story about the sea.',
  'What is a WebSocket?',
  'Write a short poem about lanterns.',
  'Explain how bread is baked.',
] as const;

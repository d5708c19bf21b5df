/**
 * Preloaded into a Parley child process (`node --import tsx --import ./test/helpers/childGate.ts
 * server/main.ts`, with an IPC channel), this puts every LlamaEngine generation behind a Gate that
 * the parent test controls with GateCommand messages. The child is the real `server/main.ts`
 * (signals, exit codes); only the timing of its replies is the test's. The gate starts open.
 */
import { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { Gate } from './Gate.js';

/** Sent by the parent; the child answers each with `{ gate: 'ok' }` once it applies. */
export type GateCommand = { readonly gate: 'hold'; readonly pieces: number } | { readonly gate: 'allow'; readonly pieces: number } | { readonly gate: 'open' };

// Processes this one forks (node-llama-cpp tests its binary in one, over IPC) start without the gate.
const preload = process.execArgv.findIndex((argument, index) => argument.endsWith('childGate.ts') && process.execArgv[index - 1] === '--import');
if (preload > 0) process.execArgv.splice(preload - 1, 2);

const gate = new Gate();
const generate = LlamaEngine.prototype.generate;
LlamaEngine.prototype.generate = function gatedGenerate(this: LlamaEngine, request) {
  return gate.run(request, (gated) => generate.call(this, gated));
};

process.on('message', (command: GateCommand) => {
  if (typeof command !== 'object' || !('gate' in command)) return;
  if (command.gate === 'hold') gate.hold(command.pieces);
  else if (command.gate === 'allow') gate.allow(command.pieces);
  else gate.open();
  process.send?.({ gate: 'ok' });
});
// The channel must not keep the child alive: it exits as the real server would.
process.channel?.unref();

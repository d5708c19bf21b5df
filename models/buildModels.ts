import { stat } from 'node:fs/promises';
import { ensureModel } from './ensureModel.js';
import { GeneratedModelKind } from './GeneratedModel.js';

/**
 * `npm run models`: makes sure every generated model is present and current, and prints one line
 * per model: path, size, and whether this run rebuilt it.
 */
for (const kind of Object.values(GeneratedModelKind)) {
  const model = await ensureModel(kind);
  const { size } = await stat(model.path);
  console.log(`${model.path}  ${(size / 1024).toFixed(1)} KiB  ${model.rebuilt ? 'rebuilt' : 'up to date'}`);
}

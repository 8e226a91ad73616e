// JSON transforms: an example of an Attune action pack in JavaScript.
import { info, warn } from './.attune/sdk/attune.js';

export function echo(message) {
  console.log(message);
  return message;
}

export function pick(document, paths) {
  let value;
  try {
    value = JSON.parse(document);
  } catch (e) {
    throw `document is not JSON: ${e.message}`;
  }
  const picked = {};
  for (const path of paths) {
    const found = path.split('.').reduce((v, key) => (v == null ? undefined : v[key]), value);
    if (found === undefined) {
      warn('path not found', { path });
    } else {
      picked[path] = found;
    }
  }
  info('picked', { paths: paths.length, found: Object.keys(picked).length });
  return JSON.stringify(picked);
}

export function stats(numbers) {
  if (numbers.length === 0) {
    throw 'numbers is empty';
  }
  const sum = numbers.reduce((a, b) => a + b, 0);
  return {
    count: numbers.length,
    min: Math.min(...numbers),
    max: Math.max(...numbers),
    mean: sum / numbers.length,
  };
}

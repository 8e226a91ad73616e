import { info } from './.attune/sdk/attune.js';

export function greet(name, times) {
  times ??= 1;
  if (times > 10) {
    throw `times must be at most 10, got ${times}`;
  }
  info('greeting', { name, times });
  return Array(times).fill(`hello, ${name}`).join(', ');
}

// Attune's JavaScript SDK: logging and execution context for actions.
//
// An action module exports one function per function its WIT world exports
// (kebab-case names become camelCase). This module wraps the `attune:action`
// host interfaces every action may import:
//
//   import { info, context } from './.attune/sdk/attune.js';
//
//   info('resizing', { width: 640, height: 480 });
//   const { id, action, attempt } = context();
//
// `attune action build` writes this file into `.attune/sdk/` of the project.

import { log as hostLog } from 'attune:action/log@0.1.0';
import { current } from 'attune:action/context@0.1.0';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/**
 * Records a log line on the current execution.
 * @param {'trace'|'debug'|'info'|'warn'|'error'} level
 * @param {string} message
 * @param {Record<string, unknown>} [fields] values are turned into text
 */
export function log(level, message, fields = {}) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`unknown log level ${JSON.stringify(level)}; expected one of ${LEVELS.join(', ')}`);
  }
  const list = Object.entries(fields).map(([key, value]) => ({ key, value: String(value) }));
  hostLog(level, String(message), list);
}

/** Records a `trace` line. */
export const trace = (message, fields) => log('trace', message, fields);
/** Records a `debug` line. */
export const debug = (message, fields) => log('debug', message, fields);
/** Records an `info` line. */
export const info = (message, fields) => log('info', message, fields);
/** Records a `warn` line. */
export const warn = (message, fields) => log('warn', message, fields);
/** Records an `error` line. */
export const error = (message, fields) => log('error', message, fields);

/**
 * The execution that is running.
 * @returns {{ id: string, action: string, attempt: number }}
 */
export function context() {
  return current();
}

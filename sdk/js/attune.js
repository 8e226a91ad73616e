// Attune's JavaScript SDK: logging, execution context, secrets and
// key-value state for actions.
//
// An action module exports one function per function its WIT world exports
// (kebab-case names become camelCase). This module wraps the `attune:action`
// host interfaces every action may import:
//
//   import { info, context } from './.attune/sdk/attune.js';
//
//   info('resizing', { width: 640, height: 480 });
//   const { id, action, attempt } = context();
//   const token = secret('slack_token');   // granted to the pack
//   const runs = kv.increment('runs', 1n); // state kept across runs
//
// `attune action build` writes this file into `.attune/sdk/` of the project.

import { log as hostLog } from 'attune:action/log@0.1.0';
import { current } from 'attune:action/context@0.1.0';
import { get as getSecret } from 'attune:action/secrets@0.1.0';
import * as hostKv from 'attune:action/kv@0.1.0';

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

/**
 * The value of the secret `name` the action's pack is granted; throws when
 * it is not granted or not set. Whatever the action prints, logs or returns
 * has the value replaced by `********`.
 * @param {string} name
 * @returns {string}
 */
export function secret(name) {
  return getSecret(name);
}

/**
 * The pack's key-value store: `get(key)` (a string or undefined),
 * `set(key, value, ttlMs?)`, `delete(key)`, `listKeys(prefix)` and
 * `increment(key, delta)` (BigInt in and out). Calls past a cap throw.
 */
export const kv = {
  get: (key) => hostKv.get(key),
  set: (key, value, ttlMs) => hostKv.set(key, value, ttlMs === undefined ? undefined : BigInt(ttlMs)),
  delete: (key) => hostKv['delete'](key),
  listKeys: (prefix = '') => hostKv.listKeys(prefix),
  increment: (key, delta = 1n) => hostKv.increment(key, BigInt(delta)),
};

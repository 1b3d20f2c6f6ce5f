import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BackendChoice } from './config.js';
import type { Engine } from './engine.js';
import { LstmError } from './errors.js';
import { jsEngine } from './js/engine.js';
import { nativeEngine } from './native/engine.js';
import { loadNative, packageRoot } from './native/loader.js';

export interface BackendInfo {
  /** True when the native addon loaded on this machine. */
  native: boolean;
  /** Why native is not available (or not chosen by LSTM_BACKEND), and how to get it. */
  reason?: string;
  /** The instruction set the native kernels dispatch to: 'avx512' | 'avx2' | 'scalar'. */
  isa?: string;
  /** Package version. */
  version: string;
}

let version: string | undefined;
function packageVersion(): string {
  if (version === undefined) {
    try {
      version = String(JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version);
    } catch {
      version = 'unknown';
    }
  }
  return version;
}

export function backendInfo(): BackendInfo {
  const st = loadNative();
  const info: BackendInfo = { native: st.addon !== null, version: packageVersion() };
  if (st.addon) {
    try {
      info.isa = st.addon.isa(process.env.LSTM_ISA ?? '');
    } catch (err) {
      info.reason = (err as Error).message;
    }
    if (process.env.LSTM_BACKEND === 'js') info.reason = "LSTM_BACKEND=js: models with backend 'auto' use the js engine";
  } else {
    info.reason = st.reason;
  }
  return info;
}

/** Resolve a model's backend option (and LSTM_BACKEND for 'auto') to an engine. */
export function selectEngine(choice: BackendChoice): Engine {
  let wanted: string = choice;
  if (choice === 'auto') {
    const env = process.env.LSTM_BACKEND;
    if (env !== undefined && env !== '' && env !== 'auto') {
      if (env !== 'js' && env !== 'native') {
        throw new LstmError('LSTM_OPTION', `LSTM_BACKEND: expected 'js', 'native' or 'auto', got ${JSON.stringify(env)}`);
      }
      wanted = env;
    }
  }
  if (wanted === 'js') return jsEngine;
  const st = loadNative();
  if (st.addon) return nativeEngine(st.addon);
  if (wanted === 'native') throw new LstmError('LSTM_NATIVE', `backend 'native' requested but ${st.reason}`);
  return jsEngine;
}

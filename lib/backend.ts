import type { BackendChoice } from './config.js';
import type { Engine } from './engine.js';
import { LstmError } from './errors.js';
import { jsEngine } from './js/engine.js';
import { nativeEngine } from './native/engine.js';
import { env, loadNative, packageVersion, platformName } from './platform.js';
import { wasmEngine } from './wasm/engine.js';
import { type WasmSimd, requestedSimd, wasmMemoryBytes, wasmSimd, wasmUnavailable } from './wasm/module.js';

export interface BackendInfo {
  /** The engine a model with backend 'auto' gets here: native, else wasm, else js. */
  engine: 'native' | 'wasm' | 'js';
  /** Why 'auto' did not get a faster engine (and how to get it); absent when it got native. */
  reason?: string;
  /** True when the native addon loaded on this machine. */
  native: boolean;
  /** Why native is not available, and how to get it. */
  nativeReason?: string;
  /** The instruction set the native kernels dispatch to: 'avx512' | 'avx2' | 'scalar'. */
  isa?: string;
  /** True when the WebAssembly engine can run here. */
  wasm: boolean;
  /** Why the wasm engine cannot run here. */
  wasmReason?: string;
  /**
   * The wasm build new models get: 'relaxed' (wasm/lstm-relaxed.wasm, fused multiply-adds;
   * Node 22+, current browsers) or 'simd128' (wasm/lstm.wasm). LSTM_WASM_SIMD overrides it.
   */
  wasmSimd?: WasmSimd;
  /** Bytes of WebAssembly memory held by live wasm models (0 once all are disposed). */
  wasmMemory: number;
  /** 'node' or 'browser'. */
  platform: string;
  /** Package version. */
  version: string;
}

const ENGINES = ['js', 'native', 'wasm'];

/** LSTM_BACKEND, checked ('auto' when unset). */
function envChoice(): string {
  const v = env('LSTM_BACKEND');
  if (v === undefined || v === 'auto') return 'auto';
  if (!ENGINES.includes(v)) {
    throw new LstmError('LSTM_OPTION', `LSTM_BACKEND: expected 'native', 'wasm', 'js' or 'auto', got ${JSON.stringify(v)}`);
  }
  return v;
}

export function backendInfo(): BackendInfo {
  const st = loadNative();
  const wasmWhy = wasmUnavailable();
  const info: BackendInfo = {
    engine: 'js',
    native: st.addon !== null,
    wasm: wasmWhy === null,
    wasmMemory: wasmMemoryBytes(),
    platform: platformName,
    version: packageVersion(),
  };
  if (st.addon) {
    try {
      info.isa = st.addon.isa(env('LSTM_ISA') ?? '');
    } catch (err) {
      info.nativeReason = (err as Error).message;
    }
  } else {
    info.nativeReason = st.reason;
  }
  if (wasmWhy !== null) info.wasmReason = wasmWhy;
  else info.wasmSimd = wasmSimd();
  let choice = 'auto';
  try {
    choice = envChoice();
  } catch (err) {
    info.reason = (err as Error).message;
  }
  if (choice !== 'auto') {
    info.engine = choice as BackendInfo['engine'];
    info.reason = `LSTM_BACKEND=${choice}: models with backend 'auto' use the ${choice} engine`;
  } else if (info.native) {
    info.engine = 'native';
  } else if (info.wasm) {
    info.engine = 'wasm';
    info.reason = `native: ${info.nativeReason}`;
  } else {
    info.reason = `native: ${info.nativeReason}; wasm: ${info.wasmReason}`;
  }
  return info;
}

/** Resolve a model's backend option (and LSTM_BACKEND for 'auto') to an engine. */
export function selectEngine(choice: BackendChoice): Engine {
  const wanted = choice === 'auto' ? envChoice() : choice;
  if (wanted === 'js') return jsEngine;
  if (wanted === 'native' || wanted === 'auto') {
    const st = loadNative();
    if (st.addon) return nativeEngine(st.addon);
    if (wanted === 'native') throw new LstmError('LSTM_NATIVE', `backend 'native' requested but ${st.reason}`);
  }
  requestedSimd(); // a bad LSTM_WASM_SIMD is the caller's error (LSTM_OPTION), as LSTM_BACKEND's is
  const why = wasmUnavailable();
  if (why === null) return wasmEngine();
  if (wanted === 'wasm') throw new LstmError('LSTM_WASM', `backend 'wasm' requested but ${why}`);
  return jsEngine;
}

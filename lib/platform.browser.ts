// lib/platform.ts for browsers (and any host without Node): swapped in by the browser
// build (dist/browser). No native addon; the wasm engine's module is fetched by initWasm().
import { LstmError } from './errors.js';
import type { NativeStatus } from './native/loader.js';

export const platformName = 'browser';

/** Browsers have no environment: every LSTM_* setting takes its default. */
export function env(_name: string): string | undefined {
  return undefined;
}

export function cpuCount(): number {
  const n = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency;
  return typeof n === 'number' && n >= 1 ? n : 1;
}

/** The package version, written into the browser build by scripts/build-ts.mjs. */
export function packageVersion(): string {
  return '__LSTM_NATIVE_VERSION__';
}

export function loadNative(): NativeStatus {
  return { addon: null, root: '', reason: 'native addons do not run in a browser' };
}

function wasmPath(file: string): string {
  // Literal URLs: bundlers copy the assets they find referenced this way.
  return file === 'lstm-relaxed.wasm'
    ? new URL('../../wasm/lstm-relaxed.wasm', import.meta.url).href
    : new URL('../../wasm/lstm.wasm', import.meta.url).href;
}

export function wasmBytesSync(_file: string): Uint8Array {
  throw new Error('call `await initWasm()` first: browsers compile WebAssembly asynchronously');
}

export async function wasmBytesFrom(source: string | URL | ArrayBuffer | Uint8Array | undefined, file: string): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  const url = source ?? wasmPath(file);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetching ${String(url)}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

export function loadOnnxProto(): unknown {
  throw new LstmError('LSTM_FORMAT', 'reading or writing ONNX needs Node.js (the onnx-proto package); safetensors works everywhere');
}

export function nextTask(fn: () => void): void {
  setTimeout(fn, 0);
}

export interface FitWorker {
  post(message: unknown): void;
  terminate(): void;
}

/** Browsers train on the calling thread (fit yields between steps). */
export function startFitWorker(_workerData: unknown, _onMessage: (m: unknown) => void, _onError: (e: Error) => void): FitWorker | null {
  return null;
}

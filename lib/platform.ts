// Everything the library needs from its host, for Node.js. lib/platform.browser.ts is
// the same surface without Node: the browser build (dist/browser) swaps it in, so no
// other module imports a Node built-in.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LstmError } from './errors.js';

export { loadNative } from './native/loader.js';
import { packageRoot } from './native/loader.js';

export const platformName = 'node';

/** An environment variable ('' and unset read as undefined). */
export function env(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** Logical cores available to this process. */
export function cpuCount(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : Math.max(1, os.cpus().length);
}

let version: string | undefined;
export function packageVersion(): string {
  if (version === undefined) {
    try {
      version = String(JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version);
    } catch {
      version = 'unknown';
    }
  }
  return version;
}

/** Where the WebAssembly engine's modules ship: `file` under the package's wasm/. */
function wasmPath(file: string): string {
  return path.join(packageRoot(), 'wasm', file);
}

/** A module's bytes, synchronously (Node compiles any size synchronously). */
export function wasmBytesSync(file: string): Uint8Array {
  return fs.readFileSync(wasmPath(file));
}

/** Bytes for initWasm(source): a path or file: URL, or bytes as they are; the package's `file` without one. */
export async function wasmBytesFrom(source: string | URL | ArrayBuffer | Uint8Array | undefined, file: string): Promise<Uint8Array> {
  if (source === undefined) return fs.promises.readFile(wasmPath(file));
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  return fs.promises.readFile(source);
}

/** onnx-proto's `onnx` namespace (loaded on first use: most users never read ONNX). */
export function loadOnnxProto(): unknown {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('onnx-proto') as { onnx: unknown }).onnx;
  } catch (err) {
    throw new LstmError('LSTM_FORMAT', `reading or writing ONNX needs the onnx-proto package: ${(err as Error).message}`);
  }
}

/** Run fn on a later turn of the event loop. */
export function nextTask(fn: () => void): void {
  setImmediate(fn);
}

/** A training run on a worker thread (see SequenceModel.fit). */
export interface FitWorker {
  post(message: unknown): void;
  terminate(): void;
}

/** Start lib/train/fit-worker.ts on a worker thread; null where the host has none. */
export function startFitWorker(workerData: unknown, onMessage: (m: unknown) => void, onError: (e: Error) => void): FitWorker | null {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Worker } = require('node:worker_threads') as typeof import('node:worker_threads');
  const worker = new Worker(path.join(__dirname, 'train', 'fit-worker.js'), { workerData });
  worker.on('message', onMessage);
  worker.on('error', onError);
  worker.on('exit', (code) => {
    if (code !== 0) onError(new Error(`the training worker exited with code ${code}`));
  });
  return { post: (m) => worker.postMessage(m), terminate: () => void worker.terminate() };
}

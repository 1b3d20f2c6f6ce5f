import * as fs from 'node:fs';
import * as path from 'node:path';

/** The N-API surface of native/addon (kept in sync with addon.cc). */
export interface NativeLayerHandle {
  load(dirs: object[]): void;
  dispose(): void;
}

export interface NativeAddon {
  abiVersion: number;
  /** The ISA a model would run for LSTM_ISA = requested ('' or undefined: the best this CPU has). */
  isa(requested?: string): string;
  /** One core's fp32 FMA throughput in GFLOP/s on an ISA (the benchmark's ceiling). */
  measurePeak(isa?: string, seconds?: number): number;
  Layer: new (desc: object, dirs: object[]) => NativeLayerHandle;
  forward(
    layers: NativeLayerHandle[],
    x: Float32Array,
    T: number,
    B: number,
    h0: Float32Array,
    c0: Float32Array,
    lengths: Int32Array | null,
    y: Float32Array,
    hn: Float32Array,
    cn: Float32Array,
    threads: number,
  ): void;
  forwardAsync(
    layers: NativeLayerHandle[],
    x: Float32Array,
    T: number,
    B: number,
    h0: Float32Array,
    c0: Float32Array,
    lengths: Int32Array | null,
    threads: number,
  ): Promise<[Float32Array, Float32Array, Float32Array]>;
  /** W [n, k], or with transposed its transpose [k, n]; both give the same packed matrix. */
  Packed: new (w: Float32Array, n: number, k: number, transposed?: boolean) => object;
  TrainCell: new (spec: object, rows: number, tape: object) => object;
  columnSums(src: Float32Array, rows: number, cols: number, dst: Float32Array): void;
  gemmNT(M: number, a: Float32Array, packed: object, c: Float32Array, accumulate: boolean, isa: string, threads: number): void;
  /** c[M, n] (+)= at^T · W^T with at [k, M]. */
  gemmTN(M: number, at: Float32Array, packed: object, c: Float32Array, accumulate: boolean, isa: string, threads: number): void;
  step(layers: NativeLayerHandle[], x: Float32Array, B: number, h: Float32Array, c: Float32Array, out: Float32Array, threads: number): void;
  /** Layers bound once for streaming: its step is the addon's step on them, minus checking the layers per call. */
  Stepper: new (layers: NativeLayerHandle[]) => NativeStepper;
}

export interface NativeStepper {
  step(x: Float32Array, B: number, h: Float32Array, c: Float32Array, out: Float32Array, threads: number): void;
}

/** Bumped whenever the JS<->C++ calling convention changes; a stale binary is refused. */
export const NATIVE_ABI_VERSION = 8;

export interface NativeStatus {
  addon: NativeAddon | null;
  reason?: string;
  root: string;
}

let status: NativeStatus | undefined;

/** The package root: the nearest folder above this file whose package.json is ours. */
export function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    try {
      if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'lstm-native') return dir;
    } catch {
      // not here; keep walking up
    }
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve(__dirname, '..', '..');
    dir = parent;
  }
}

/** Load the addon once; never throws, records why it could not load instead. */
export function loadNative(): NativeStatus {
  if (status) return status;
  const root = packageRoot();
  const where = `${process.platform}-${process.arch}`;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
    const addon = nodeGypBuild(root) as NativeAddon;
    if (addon.abiVersion !== NATIVE_ABI_VERSION) {
      status = {
        addon: null,
        root,
        reason: `the native addon found under ${root} has ABI ${String(addon.abiVersion)}, this JS expects ${NATIVE_ABI_VERSION}: rebuild it with \`npx lstm-native rebuild\` (or reinstall lstm-native)`,
      };
    } else {
      status = { addon, root };
    }
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    status = {
      addon: null,
      root,
      reason:
        `no native binary for ${where} (Node ABI ${process.versions.modules}, N-API ${process.versions.napi}) could be loaded ` +
        `from ${path.join(root, 'prebuilds', where)} or ${path.join(root, 'build', 'Release')}: ${msg}. ` +
        `The WebAssembly engine (or, where it cannot run, the pure-JS engine) is in use. To build the native engine run \`npx lstm-native rebuild\` ` +
        `(needs python3, make and a C++17 compiler), or allow lstm-native's install script (npm 11: \`npm install-scripts approve lstm-native\`) and reinstall.`,
    };
  }
  return status;
}

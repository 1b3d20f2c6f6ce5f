// Shared test helpers. The suite tests the built package (dist/), loaded with Node's
// own require so the addon and module graph are exactly what users get.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { expect } from 'vitest';
import { enableRelaxedSimd } from '../scripts/relaxed-simd.mjs';

// Node 20 validates relaxed SIMD (wasm/lstm-relaxed.wasm) only behind a flag; Node 22+
// has it on. Set before the package compiles any module, so both wasm builds are tested.
enableRelaxedSimd();

const require = createRequire(import.meta.url);
export const lib = require('../dist/cjs/index.js') as typeof import('../dist/cjs/index.js');
export const { LSTM, LstmError, backendInfo, loadSafetensors, saveSafetensors } = lib;
export type Tensor = import('../dist/cjs/index.js').Tensor;
export type LSTMOptions = import('../dist/cjs/index.js').LSTMOptions;
export type Activation = import('../dist/cjs/index.js').Activation;
export type ActivationName = import('../dist/cjs/index.js').ActivationName;
export type Gradient = import('../dist/cjs/index.js').Gradient;

export const FIXTURES = path.join(__dirname, 'fixtures');

export function fixture(name: string): ReturnType<typeof loadSafetensors> {
  return loadSafetensors(readFileSync(path.join(FIXTURES, `${name}.safetensors`)));
}

/** An engine configuration to run parity tests on: js, native on one ISA, or a wasm build. */
export interface EngineCase {
  label: string;
  backend: 'js' | 'native' | 'wasm';
  /** LSTM_ISA while the model is built. */
  isa?: string;
  /** LSTM_WASM_SIMD while the model is built: which wasm module. */
  wasmSimd?: 'relaxed' | 'simd128';
}

const info = backendInfo();
export const NATIVE_ISAS: string[] = info.native ? ['avx512', 'avx2', 'scalar'].filter((isa) => {
  const prev = process.env.LSTM_ISA;
  process.env.LSTM_ISA = isa;
  try {
    return backendInfo().isa === isa;
  } finally {
    if (prev === undefined) delete process.env.LSTM_ISA;
    else process.env.LSTM_ISA = prev;
  }
}) : [];

/**
 * The wasm engine's builds: relaxed SIMD (fused multiply-adds), SIMD128, and SIMD128's
 * module on its portable kernels (LSTM_ISA=scalar).
 */
export const WASM_CASES: EngineCase[] = [
  { label: 'wasm/relaxed', backend: 'wasm', wasmSimd: 'relaxed' },
  { label: 'wasm/simd128', backend: 'wasm', wasmSimd: 'simd128' },
  { label: 'wasm/scalar', backend: 'wasm', wasmSimd: 'simd128', isa: 'scalar' },
];

export const ENGINES: EngineCase[] = [
  { label: 'js', backend: 'js' },
  ...NATIVE_ISAS.map((isa) => ({ label: `native/${isa}`, backend: 'native' as const, isa })),
  ...(info.wasm ? WASM_CASES : []),
];

/** Set LSTM_ISA and LSTM_WASM_SIMD for an engine case (models read them when they are built); returns the undo. */
export function setEngineEnv(engine: EngineCase): () => void {
  const prev = { LSTM_ISA: process.env.LSTM_ISA, LSTM_WASM_SIMD: process.env.LSTM_WASM_SIMD };
  if (engine.isa) process.env.LSTM_ISA = engine.isa;
  if (engine.wasmSimd) process.env.LSTM_WASM_SIMD = engine.wasmSimd;
  return () => {
    for (const [k, v] of Object.entries(prev)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

/** Run fn with the engine case's LSTM_ISA and LSTM_WASM_SIMD set. */
export function withEngine<T>(engine: EngineCase, fn: () => T): T {
  const restore = setEngineEnv(engine);
  try {
    return fn();
  } finally {
    restore();
  }
}

/** fn throws an LstmError with code LSTM_FORMAT and a message matching `message`. */
export function expectFormat(fn: () => unknown, message: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LstmError);
    expect((err as InstanceType<typeof LstmError>).code).toBe('LSTM_FORMAT');
    expect((err as Error).message).toMatch(message);
    return;
  }
  expect.fail('expected LSTM_FORMAT');
}

/**
 * |a - b| <= atol + rtol*|b| everywhere, with the worst element named on failure. Equal
 * values (infinities included) and NaN against NaN match: a model that overflows does so
 * in every engine and every way of running it.
 */
export function expectClose(actual: Tensor, expected: Tensor, what: string, atol = 1e-5, rtol = 1e-4): void {
  expect(actual.shape, `${what} shape`).toEqual(expected.shape);
  expect(actual.data.length, `${what} length`).toBe(expected.data.length);
  let worst = -1;
  let worstRatio = 0;
  for (let i = 0; i < expected.data.length; i++) {
    const a = actual.data[i];
    const b = expected.data[i];
    const ratio = a === b || (Number.isNaN(a) && Number.isNaN(b)) ? 0 : Math.abs(a - b) / (atol + rtol * Math.abs(b));
    if (!(ratio <= worstRatio)) {
      worstRatio = Number.isNaN(ratio) ? Infinity : ratio;
      worst = i;
    }
  }
  if (worstRatio > 1) {
    expect.fail(`${what}: element ${worst} is ${actual.data[worst]}, expected ${expected.data[worst]} (error ${worstRatio.toFixed(2)}x the tolerance)`);
  }
}

/** PyTorch fixture config (snake_case) to LSTM options. */
export function torchOptions(metadata: Record<string, string>): LSTMOptions {
  const c = JSON.parse(metadata.config);
  return {
    inputSize: c.input_size,
    hiddenSize: c.hidden_size,
    numLayers: c.num_layers,
    bias: c.bias,
    batchFirst: c.batch_first,
    bidirectional: c.bidirectional,
    projSize: c.proj_size,
    peephole: c.peephole ?? 'none',
  };
}

/** ONNX Y [T, D, B, H] as our output layout [T, B, D*H]. */
export function onnxYToOutput(y: Tensor): Tensor {
  const [T, D, B, H] = y.shape;
  const out = new Float32Array(y.data.length);
  for (let t = 0; t < T; t++)
    for (let d = 0; d < D; d++)
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++) out[((t * B + b) * D + d) * H + h] = y.data[((t * D + d) * B + b) * H + h];
  return { data: out, shape: [T, B, D * H] };
}

/**
 * a and b hold the same bits, element for element (the sign of zero too), or are both NaN:
 * which NaN comes out (its sign) depends on the instructions that made it, e.g. a - b against
 * a + (-b), and those may differ between ways of splitting the same sums.
 */
export function expectSameBits(a: Float32Array, b: Float32Array, what: string): void {
  expect(a.length, `${what}: length`).toBe(b.length);
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) {
    // expect(...).toEqual would do, but takes ~2 us an element on the weight gradients here
    if (x[i] !== y[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) {
      expect.fail(`${what}: element ${i} is ${a[i]}, expected ${b[i]} (the same bits)`);
    }
  }
}

export function randomTensor(shape: number[], rand: () => number, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (rand() * 2 - 1) * scale;
  return { data, shape };
}

/** N sine waves of T steps (random frequency and phase), samples first: x [N, T, 1] and the next sample y. */
export function sineWaves(N: number, T: number, seed: number): { x: Tensor; y: Tensor } {
  const xs = new Float32Array(N * T);
  const ys = new Float32Array(N * T);
  const rand = mulberry32(seed);
  for (let n = 0; n < N; n++) {
    const f = 0.2 + 0.3 * rand();
    const ph = 6 * rand();
    for (let t = 0; t < T; t++) {
      xs[n * T + t] = Math.sin(f * t + ph);
      ys[n * T + t] = Math.sin(f * (t + 1) + ph);
    }
  }
  return { x: { data: xs, shape: [N, T, 1] }, y: { data: ys, shape: [N, T, 1] } };
}

/**
 * The seeds of a random sweep: `cases` of them from seed 1, or for a longer local sweep
 * NAME_CASES of them from NAME_SEED (environment), then the regression seeds, which run
 * every time.
 */
export function sweepSeeds(name: string, cases: number, regressions: number[] = []): number[] {
  const from = Number(process.env[`${name}_SEED`] ?? 1);
  const count = Number(process.env[`${name}_CASES`] ?? cases);
  return [...Array.from({ length: count }, (_, i) => from + i), ...regressions];
}

/** Deterministic PRNG for tests (mulberry32). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A random model of the options a trained or streamed stack takes, with a batch size and a
 * sequence length, for the random-configuration tests of training and streaming: every
 * peephole kind, projection, clip, coupled gates, no bias, 1 to 3 layers, 1 or 2 threads,
 * sizes past the vector widths (H up to 40, B up to 9) and, three times in ten, other
 * activations (from `acts`; a bidirectional model's reverse direction three times in ten has
 * its own). `bidirectional`: the direction is drawn from all three (else
 * forward); `batchFirst`: batch-first three times in ten; `large`: how often the model is
 * large enough for two threads to split it (H 64-223, B 1 or 16-32).
 */
export function randomModel(
  rand: () => number,
  how: { bidirectional: boolean; batchFirst: boolean; large: number; acts: readonly ActivationName[]; maxT: number },
): { options: LSTMOptions & { threads: number }; B: number; T: number; large: boolean } {
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const large = rand() < how.large;
  const hiddenSize = large ? 64 + Math.floor(rand() * 160) : 1 + Math.floor(rand() * 40);
  const options: LSTMOptions & { threads: number } = {
    inputSize: 1 + Math.floor(rand() * 9),
    hiddenSize,
    numLayers: 1 + Math.floor(rand() * 3),
    direction: how.bidirectional ? pick(['forward', 'reverse', 'bidirectional'] as const) : 'forward',
    peephole: pick(['none', 'diagonal', 'full'] as const),
    clip: rand() < 0.3 ? 0.5 + rand() : undefined,
    projSize: hiddenSize > 1 && rand() < 0.3 ? 1 + Math.floor(rand() * (hiddenSize - 1)) : undefined,
    coupledInputForget: rand() < 0.2,
    batchFirst: how.batchFirst && rand() < 0.3,
    bias: rand() < 0.9,
    threads: 1 + Math.floor(rand() * 2),
  };
  if (rand() < 0.3) {
    options.gateActivation = pick(how.acts);
    options.cellActivation = pick(how.acts);
    options.hiddenActivation = pick(how.acts);
  }
  const B = large ? (rand() < 0.3 ? 1 : 16 + Math.floor(rand() * 17)) : 1 + Math.floor(rand() * 9);
  const T = 1 + Math.floor(rand() * how.maxT);
  if (options.direction === 'bidirectional' && rand() < 0.3) {
    // the reverse direction with activations of its own (ONNX's six)
    const fwd = (v: LSTMOptions['gateActivation'], dflt: ActivationName) => (v ?? dflt) as Activation;
    options.gateActivation = [fwd(options.gateActivation, 'sigmoid'), pick(how.acts)];
    options.cellActivation = [fwd(options.cellActivation, 'tanh'), pick(how.acts)];
    options.hiddenActivation = [fwd(options.hiddenActivation, 'tanh'), pick(how.acts)];
  }
  return { options, B, T, large };
}

// A TensorFlow.js layers model as model.json + weights: tfjs-layers saves it in-process.
export async function tfjsArtifacts(build: (tfl: typeof import('@tensorflow/tfjs-layers')) => import('@tensorflow/tfjs-layers').Sequential) {
  const tf = require('@tensorflow/tfjs-core') as typeof import('@tensorflow/tfjs-core');
  require('@tensorflow/tfjs-backend-cpu');
  const tfl = require('@tensorflow/tfjs-layers') as typeof import('@tensorflow/tfjs-layers');
  await tf.setBackend('cpu');
  const model = build(tfl);
  let artifacts: import('@tensorflow/tfjs-core').io.ModelArtifacts | undefined;
  await model.save(tf.io.withSaveHandler(async (a) => {
    artifacts = a;
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
  const json = { modelTopology: artifacts!.modelTopology, format: 'layers-model', generatedBy: 'TensorFlow.js tfjs-layers', weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: artifacts!.weightSpecs }] };
  const data = new Uint8Array(artifacts!.weightData as ArrayBuffer);
  return { tf, tfl, model, json, data };
}

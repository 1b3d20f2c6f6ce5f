#!/usr/bin/env node
// The main benchmark: shapes S1-S4 on every engine available here, side by side in one
// run (engines interleaved per repetition so machine noise hits them alike).
// Prints median ms, GFLOP/s, % of the measured FMA peak and ratios; --json prints JSON.
// Writes bench/results/latest.json and latest.svg.
//   node bench/run.mjs [--json] [--quick] [--reps N] [--shapes S1,S2] [--engines native,wasm,js,ort,tfjs,tfjs-cpu] [--help]
// The wasm engine runs twice: 'wasm' is wasm/lstm.wasm (SIMD128, which every host runs),
// 'wasm-relaxed' is wasm/lstm-relaxed.wasm (relaxed SIMD's fused multiply-add: what Node 22+
// and current browsers get by default). Node 20 runs relaxed SIMD only behind
// --experimental-wasm-relaxed-simd, which this script turns on for itself.
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { enableRelaxedSimd } from '../scripts/relaxed-simd.mjs';
import { markdownTable } from './table.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
// Before the package compiles any module (it checks for relaxed SIMD once).
const relaxedByDefault = enableRelaxedSimd();
const lib = require('../dist/cjs/index.js');
const { loadNative } = require('../dist/cjs/native/loader.js');

const USAGE = `Usage: npm run bench -- [options]   (or: node bench/run.mjs [options])
Times shapes S1-S4 and T2 on every engine available here, side by side, and writes
bench/results/latest.json and latest.svg.
  --shapes S1,S2,S3,S4,T2   which shapes (default: all)
  --engines native,wasm,js,ort,tfjs,tfjs-cpu
                            which engines (default: all; ort = onnxruntime-node,
                            tfjs = @tensorflow/tfjs-backend-wasm, tfjs-cpu = its cpu
                            backend, each where installed)
  --reps N                  samples per engine and shape (default 7, --quick 3)
  --quick                   fewer samples
  --json                    print the report as JSON instead of a table
  --help                    this text`;
const ENGINE_NAMES = ['native', 'wasm', 'js', 'ort', 'tfjs', 'tfjs-cpu'];

function usageError(message) {
  process.stderr.write(`bench: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      json: { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      shapes: { type: 'string', default: 'S1,S2,S3,S4,T2' },
      engines: { type: 'string', default: ENGINE_NAMES.join(',') },
      reps: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  }));
} catch (err) {
  usageError(err.message);
}
if (args.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

const SHAPES = {
  S1: { label: 'S1 stream', B: 1, T: 128, I: 256, H: 256, L: 1 },
  S2: { label: 'S2 batch', B: 32, T: 128, I: 256, H: 256, L: 2 },
  S3: { label: 'S3 wide', B: 64, T: 64, I: 512, H: 512, L: 1 },
  S4: { label: 'S4 step', B: 1, T: 1, I: 256, H: 256, L: 1, step: true },
  // A training step on S2: forwardTrain + backward (about 3x the forward's FLOPs).
  T2: { label: 'T2 train (S2)', B: 32, T: 128, I: 256, H: 256, L: 2, train: true },
};
for (const key of args.shapes.split(',')) if (!SHAPES[key]) usageError(`unknown shape '${key}' (shapes: ${Object.keys(SHAPES).join(', ')})`);
for (const name of args.engines.split(',')) if (!ENGINE_NAMES.includes(name)) usageError(`unknown engine '${name}' (engines: ${ENGINE_NAMES.join(', ')})`);
if (args.reps !== undefined && !(/^[1-9][0-9]*$/.test(args.reps) && Number(args.reps) <= 1000)) usageError(`--reps takes a whole number from 1 to 1000, got '${args.reps}'`);

const flopsOf = (s) => {
  let f = 0;
  for (let l = 0; l < s.L; l++) f += 2 * 4 * s.H * ((l === 0 ? s.I : s.H) + s.H) * s.B * s.T;
  return s.train ? 3 * f : f;
};

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function randomData(n, seed) {
  const out = new Float32Array(n);
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (a * 1664525 + 1013904223) >>> 0;
    out[i] = a / 2 ** 31 - 1;
  }
  return out;
}

async function loadOrt() {
  try {
    return require('onnxruntime-node');
  } catch {
    return null;
  }
}

/** @tensorflow/tfjs-core with its cpu backend (plain JavaScript); null if not installed. */
async function loadTfjsCpu() {
  try {
    const tf = require('@tensorflow/tfjs-core');
    require('@tensorflow/tfjs-backend-cpu');
    const before = tf.getBackend();
    if (!(await tf.setBackend('cpu'))) return null;
    if (before) await tf.setBackend(before);
    return tf;
  } catch {
    return null;
  }
}

/** @tensorflow/tfjs-core on its WebAssembly backend (XNNPACK, SIMD), one thread; null if not installed. */
async function loadTfjsWasm() {
  try {
    const tf = require('@tensorflow/tfjs-core');
    require('@tensorflow/tfjs-backend-wasm');
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    if (!(await tf.setBackend('wasm'))) return null;
    await tf.ready();
    return tf;
  } catch {
    return null;
  }
}

/**
 * The same stacked LSTM in tfjs ops, written the fast way (PyTorch's algorithm): one
 * matMul for every step's input projection, then per step one matMul and the cell.
 */
async function tfjsRunner(tf, backend, shape, x, h0, c0) {
  const { B, T, I, H, L } = shape;
  // tfjs has one current backend: this runner's tensors live in its own, and the runner
  // switches back to it (prepare, before each sample's warm-up and timed calls) when
  // another runner switched away.
  await tf.setBackend(backend);
  const layers = [];
  for (let l = 0; l < L; l++) {
    const inSize = l === 0 ? I : H;
    const scale = 1 / Math.sqrt(H);
    layers.push({
      wIh: tf.tensor2d(randomData(inSize * 4 * H, 20 + l).map((v) => v * scale), [inSize, 4 * H]),
      wHh: tf.tensor2d(randomData(H * 4 * H, 40 + l).map((v) => v * scale), [H, 4 * H]),
      b: tf.tensor1d(randomData(4 * H, 60 + l).map((v) => v * scale)),
    });
  }
  // Per-step inputs as separate tensors: slicing one [T*B, 4H] projection costs tfjs-wasm
  // ~16 ms per slice on S2 (and split/unstack ~7 ms per piece), so each step projects its
  // own input: two [B, *] matMuls per step, the same FLOPs.
  const xs = Array.from({ length: T }, (_, t) => tf.tensor2d(x.data.subarray(t * B * I, (t + 1) * B * I), [B, I]));
  const hs = layers.map((_, l) => tf.tensor2d(h0.data.subarray(l * B * H, (l + 1) * B * H), [B, H]));
  const cs = layers.map((_, l) => tf.tensor2d(c0.data.subarray(l * B * H, (l + 1) * B * H), [B, H]));
  // The fastest cell formulation measured with tfjs-backend-wasm 4.22 in Node (B=32, H=256):
  // slices rather than split, and tanh(x) = 2*sigmoid(2x) - 1 because its tanh kernel is
  // ~4x slower than its sigmoid: 0.87 ms per step against 1.40 ms for split + tanh.
  const tanh = (v) => tf.sub(tf.mul(tf.sigmoid(tf.mul(v, 2)), 2), 1);
  const cell = (gates, c) => {
    const rows = gates.shape[0];
    const gate = (k) => tf.slice(gates, [0, k * H], [rows, H]);
    const cNew = tf.add(tf.mul(tf.sigmoid(gate(1)), c), tf.mul(tf.sigmoid(gate(0)), tanh(gate(2))));
    return [tf.mul(tf.sigmoid(gate(3)), tanh(cNew)), cNew];
  };
  const forward = () => {
    let inputs = xs;
    const finals = [];
    for (let l = 0; l < L; l++) {
      const { wIh, wHh, b } = layers[l];
      let h = hs[l];
      let c = cs[l];
      const ys = [];
      for (let t = 0; t < T; t++) {
        const [hNew, cNew] = tf.tidy(() => cell(tf.add(tf.add(tf.matMul(inputs[t], wIh), b), tf.matMul(h, wHh)), c));
        if (t > 0) c.dispose();
        h = hNew;
        c = cNew;
        ys.push(h);
      }
      if (inputs !== xs) for (const v of inputs) v.dispose();
      inputs = ys;
      finals.push(c);
    }
    return [...inputs, ...finals];
  };
  const stepState = { h: hs.map((h) => tf.clone(h)), c: cs.map((c) => tf.clone(c)) };
  const step = () => {
    let input = tf.clone(xs[0]);
    for (let l = 0; l < L; l++) {
      const { wIh, wHh, b } = layers[l];
      const [h, c] = tf.tidy(() => cell(tf.add(tf.add(tf.matMul(input, wIh), b), tf.matMul(stepState.h[l], wHh)), stepState.c[l]));
      stepState.h[l].dispose();
      stepState.c[l].dispose();
      stepState.h[l] = h;
      stepState.c[l] = c;
      input.dispose();
      input = tf.clone(h);
    }
    return [input];
  };
  const prepare = async () => {
    if (tf.getBackend() !== backend) await tf.setBackend(backend);
  };
  return {
    name: `tfjs-backend-${backend}`,
    threads: 1,
    prepare,
    run: async () => {
      await prepare();
      const outs = shape.step ? step() : forward();
      await outs[0].data();
      for (const o of outs) o.dispose();
    },
    dispose: () => tf.disposeVariables(),
  };
}

/** Runners: each returns { name, threads, run: async () => void, dispose, prepare? } (prepare: before a sample, untimed). */
async function makeRunners(shape, engines, ort, tfw, tfc) {
  const { B, T, I, H, L } = shape;
  const x = { data: randomData(T * B * I, 7), shape: [T, B, I] };
  const h0 = { data: randomData(L * B * H, 8).map((v) => v * 0.5), shape: [L, B, H] };
  const c0 = { data: randomData(L * B * H, 9).map((v) => v * 0.5), shape: [L, B, H] };
  const runners = [];
  const info = lib.backendInfo();
  // S4 is a streaming step: step() with state kept between calls (and a reused output).
  const lstmRunner = (backend, threads, wasmSimd) => {
    const prev = process.env.LSTM_WASM_SIMD;
    if (wasmSimd) process.env.LSTM_WASM_SIMD = wasmSimd; // read when the model is built
    let m;
    try {
      m = new lib.LSTM({ inputSize: I, hiddenSize: H, numLayers: L, seed: 1, backend, threads });
    } finally {
      if (prev === undefined) delete process.env.LSTM_WASM_SIMD;
      else process.env.LSTM_WASM_SIMD = prev;
    }
    const name = wasmSimd === 'relaxed' ? 'wasm-relaxed' : backend;
    if (shape.train) {
      const dy = { data: randomData(T * B * H, 10).map((v) => v * 0.01), shape: [T, B, H] };
      return { name, threads, run: () => m.forwardTrain(x).backward({ output: dy }), dispose: () => m.dispose() };
    }
    if (shape.step) {
      const state = m.initialState(B);
      const xt = { data: x.data.subarray(0, B * I), shape: [B, I] };
      const out = { data: new Float32Array(B * H), shape: [B, H] };
      return { name, threads, run: () => m.step(xt, state, out), dispose: () => m.dispose() };
    }
    return { name, threads, run: () => m.forward(x, { h0, c0 }), dispose: () => m.dispose() };
  };
  if (engines.includes('native') && info.native) {
    for (const threads of [1, 2]) runners.push(lstmRunner('native', threads));
  }
  if (engines.includes('wasm') && info.wasm) {
    runners.push(lstmRunner('wasm', 1, 'simd128'));
    runners.push(lstmRunner('wasm', 1, 'relaxed'));
  }
  if (engines.includes('js')) runners.push(lstmRunner('js', 1));
  if (tfw && !shape.train) runners.push(await tfjsRunner(tfw, 'wasm', shape, x, h0, c0));
  if (tfc && !shape.train) runners.push(await tfjsRunner(tfc, 'cpu', shape, x, h0, c0));
  if (engines.includes('ort') && ort && !shape.train) {
    // onnxruntime-node runs this library's own ONNX export of the same model (seed 1, the
    // weights every runner here has): inputs input, h0, c0; outputs output, hn, cn. A
    // forward feeds the same h0 and c0 as ours and fetches all three. A streaming step
    // feeds the state back and fetches hn and cn (for one layer the output is hn), as an
    // onnxruntime-node user streaming with state would.
    const ref = new lib.LSTM({ inputSize: I, hiddenSize: H, numLayers: L, seed: 1, backend: 'js' });
    const bytes = lib.exportOnnx(ref);
    const want = ref.forward(x, { h0, c0 });
    ref.dispose();
    const tensor = (t) => new ort.Tensor('float32', t.data, t.shape);
    for (const threads of [1, 2]) {
      const session = await ort.InferenceSession.create(bytes, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        graphOptimizationLevel: 'all',
      });
      const feeds = { input: tensor(x), h0: tensor(h0), c0: tensor(c0) };
      // The same numbers as the library's, or the comparison is of different work.
      const got = (await session.run(feeds)).output.data;
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want.output.data[i]));
      if (!(worst <= 1e-4)) throw new Error(`${shape.label}: onnxruntime-node's output differs from the library's by ${worst}`);
      let run = () => session.run(feeds);
      if (shape.step) {
        const zeros = () => tensor({ data: new Float32Array(L * B * H), shape: [L, B, H] });
        const state = { input: tensor(x), h0: zeros(), c0: zeros() };
        run = async () => {
          const r = await session.run(state, ['hn', 'cn']);
          state.h0 = r.hn;
          state.c0 = r.cn;
        };
      }
      runners.push({ name: 'onnxruntime-node', threads, run, dispose: () => session.release?.() });
    }
  }
  return runners;
}

// Between runners: onnxruntime's intra-op threads (and ours) spin for a while after a
// run; without a pause they would steal a core from whichever runner comes next. Ours stop
// after 200 us; onnxruntime-node's 2-thread session kept one spinning for 50-75 ms here:
// native 2-thread steps (S4) that began 30 ms after 200 of its runs took 93-103 us per
// step (medians of 7), 68 us after 50 ms, and 42-61 us after 75-300 ms (the machine's
// noise). 200 ms is clear of it.
const settle = () => new Promise((resolve) => setTimeout(resolve, 200));

// Milliseconds per call of n calls in a row, timed as one interval. A call is awaited only
// when it returns a promise (onnxruntime-node's run; our forward and step return their
// results), as a caller would. Timing every call on its own, awaited, added two clock reads,
// a BigInt and a microtask turn to each: S4 steps, medians of 7 side by side, ours at 2
// threads 18.8 against 17.5 us, at 1 28.4 against 27.1; onnxruntime-node's 79.9 against
// 79.3 and 100.7 against 93.7 us.
async function timeCalls(fn, n) {
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < n; k++) {
    const p = fn();
    if (typeof p?.then === 'function') await p;
  }
  return Number(process.hrtime.bigint() - t0) / 1e6 / n;
}

async function main() {
  const engines = args.engines.split(',');
  const ort = engines.includes('ort') ? await loadOrt() : null;
  const tfw = engines.includes('tfjs') ? await loadTfjsWasm() : null;
  const tfc = engines.includes('tfjs-cpu') ? await loadTfjsCpu() : null;
  const addon = loadNative().addon;
  const info = lib.backendInfo();
  const peak = addon ? addon.measurePeak('', 1.0) : null;
  const results = [];
  for (const key of args.shapes.split(',')) {
    const shape = SHAPES[key];
    const flops = flopsOf(shape);
    const runners = await makeRunners(shape, engines, ort, tfw, tfc);
    const times = runners.map(() => []);
    // Fewer repetitions for the slow pure-JS engine on big shapes; many for tiny ones.
    const reps = Number(args.reps ?? (args.quick ? 3 : 7));
    // Warm-up (JIT, caches, packing), timed: its time sizes the first sample.
    const warm = [];
    for (const r of runners) warm.push(await timeCalls(r.run, 1));
    // Calls per sample: about 20 ms of them, from 1 to 200, sized by the last sample (the
    // warm-up before the first), so every recorded sample is a mean over enough calls that
    // timer resolution and a single slow first call do not decide it.
    const inner = (i) => Math.max(1, Math.min(200, Math.round(20 / Math.max(0.01, times[i].at(-1) ?? warm[i]))));
    for (let rep = 0; rep < reps; rep++) {
      for (let i = 0; i < runners.length; i++) {
        const r = runners[i];
        if (r.name === 'js' && rep >= (args.quick || shape.train ? 1 : 5) && flops > 1e9) continue;
        // A call of seconds (tfjs' cpu backend on S2 and S3: 10-20 s) is its own warm-up and
        // sample: one sample of one call.
        const slow = warm[i] > 1000;
        if (slow && rep >= 1) continue;
        // Short runs are repeated inside one sample so timer resolution does not matter.
        const n = inner(i);
        await settle();
        // Wake threads, refill caches, and let the cores come back up to speed: as many
        // calls as the sample has and at least 100 ms of them. After the pause, 2-thread
        // native S4 steps timed after 3 warm-up calls took 50-95 us, after 200 calls (8 ms)
        // 38-43 us, after 100 ms of calls 28-32 us (medians of 9 samples of 200, three
        // runs each, alternating; 1 thread: 48-53 and 46 us).
        const warmUntil = performance.now() + 100;
        await r.prepare?.();
        if (!slow) for (let k = 0; k < n || performance.now() < warmUntil; k++) await r.run();
        times[i].push(await timeCalls(r.run, n));
      }
    }
    for (const r of runners) r.dispose();
    const rows = runners.map((r, i) => {
      const ms = median(times[i]);
      const gflops = flops / ms / 1e6;
      return { shape: key, label: shape.label, engine: r.name, threads: r.threads, ms, gflops, pctPeak: peak ? (100 * gflops) / (peak * r.threads) : null, samples: times[i].length };
    });
    for (const row of rows) {
      const ortSame = rows.find((o) => o.engine === 'onnxruntime-node' && o.threads === row.threads);
      const js = rows.find((o) => o.engine === 'js');
      const native1 = rows.find((o) => o.engine === 'native' && o.threads === 1);
      row.vsNative1 = native1 && row.engine === 'native' && row.threads > 1 ? native1.ms / row.ms : null;
      row.vsOrt = ortSame && row.engine !== 'onnxruntime-node' ? ortSame.ms / row.ms : null;
      row.vsJs = js && row.engine !== 'js' ? js.ms / row.ms : null;
      const tfjs = rows.find((o) => o.engine === 'tfjs-backend-wasm');
      row.vsTfjsWasm = tfjs && row.engine.startsWith('wasm') ? tfjs.ms / row.ms : null;
    }
    results.push(...rows);
  }
  const report = {
    date: new Date().toISOString(),
    machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, node: process.version, isa: info.isa ?? null, peakGflopsPerCore: peak, wasmRelaxedByDefault: relaxedByDefault },
    version: info.version,
    results,
  };
  mkdirSync(path.join(here, 'results'), { recursive: true });
  writeFileSync(path.join(here, 'results', 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileSync(path.join(here, 'results', 'latest.svg'), svgChart(report));
  if (args.json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    console.log(markdownTable(report));
  }
}

function svgChart(report) {
  const rows = report.results;
  const max = Math.max(...rows.map((r) => r.gflops), 1);
  const barH = 16;
  const width = 760;
  const left = 260;
  const colors = { native: '#2b6cb0', wasm: '#38a169', 'wasm-relaxed': '#276749', js: '#dd6b20', 'onnxruntime-node': '#718096', 'tfjs-backend-wasm': '#805ad5', 'tfjs-backend-cpu': '#b794f4' };
  let y = 40;
  const parts = [`<text x="10" y="22" font-size="14" font-weight="bold">lstm-native: GFLOP/s by shape and engine (${report.machine.cpu}, ${report.date.slice(0, 10)})</text>`];
  let last = '';
  for (const r of rows) {
    if (r.shape !== last) {
      y += 8;
      last = r.shape;
    }
    const w = ((width - left - 80) * r.gflops) / max;
    parts.push(`<text x="10" y="${y + 12}" font-size="12">${r.label} · ${r.engine} ×${r.threads}</text>`);
    parts.push(`<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH - 3}" fill="${colors[r.engine] ?? '#999'}"/>`);
    parts.push(`<text x="${(left + w + 6).toFixed(1)}" y="${y + 12}" font-size="12">${r.gflops.toFixed(1)}</text>`);
    y += barH;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 20}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>${parts.join('')}</svg>\n`;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

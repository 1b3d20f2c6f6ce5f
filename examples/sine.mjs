#!/usr/bin/env node
// npm run demo: train a small LSTM from scratch to predict the next sample of sine
// waves, in-process, then stream predictions from it one step at a time with step().
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { SequenceModel, Adam, backendInfo } = require('../dist/cjs/index.js');

const N = 256; // training sequences
const T = 48; // steps per sequence
const SEED = 7;

// Sines of random frequency and phase; the target is the next sample.
function makeData(count, seed) {
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const x = new Float32Array(count * T);
  const y = new Float32Array(count * T);
  for (let n = 0; n < count; n++) {
    const freq = 0.15 + 0.25 * rand();
    const phase = 2 * Math.PI * rand();
    for (let t = 0; t < T; t++) {
      x[n * T + t] = Math.sin(freq * t + phase);
      y[n * T + t] = Math.sin(freq * (t + 1) + phase);
    }
  }
  return { x: { data: x, shape: [count, T, 1] }, y: { data: y, shape: [count, T, 1] } };
}

function bar(fraction, width = 28) {
  const full = Math.round(fraction * width);
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}

const info = backendInfo();
console.log(`lstm-native ${info.version} — engine: ${info.engine}${info.isa && info.engine === 'native' ? ` (${info.isa})` : ''}${info.reason ? ` (${info.reason.split('.')[0]})` : ''}`);
const model = new SequenceModel({ inputSize: 1, hiddenSize: 32, numLayers: 2, outputSize: 1, batchFirst: true, seed: SEED });
const optimizer = new Adam(model.parameters(), { lr: 5e-3 });
const train = makeData(N, 1);
const validation = makeData(64, 2);
const before = model.evaluate(validation);

const budget = Number(process.env.DEMO_SECONDS ?? 40) * 1000;
const controller = new AbortController();
const timer = setTimeout(() => controller.abort(), budget);
const t0 = performance.now();
let last = 0;
const result = await model.fit(train, {
  optimizer,
  epochs: 60,
  batchSize: 32,
  seed: SEED,
  validation,
  clipGradNorm: 1,
  signal: controller.signal,
  onProgress: (p) => {
    const now = performance.now();
    if (p.valLoss === undefined && now - last < 100) return;
    last = now;
    const line = `epoch ${String(p.epoch).padStart(2)}/${p.epochs} ${bar(p.step / p.stepsPerEpoch)} loss ${p.loss.toFixed(5)}${p.valLoss !== undefined ? `  val ${p.valLoss.toFixed(5)}` : ''}  ${Math.round(p.samplesPerSecond)} seq/s`;
    if (process.stdout.isTTY) process.stdout.write(`\r${line}${p.valLoss !== undefined ? '\n' : ''}`);
    else if (p.valLoss !== undefined) console.log(line);
  },
});
clearTimeout(timer);
const seconds = (performance.now() - t0) / 1000;
const after = model.evaluate(validation);
console.log(`\ntrained ${result.history.length} epochs in ${seconds.toFixed(1)} s${result.aborted ? ' (stopped by the time budget)' : ''}: validation MSE ${before.toFixed(4)} -> ${after.toFixed(5)}`);

// Stream a wave it has not seen, one sample at a time, predicting the next one each step.
const state = model.lstm.initialState(1);
const freq = 0.3;
const phase = 1.1;
const rows = [];
let absErr = 0;
const steps = 60;
const stepStart = performance.now();
for (let t = 0; t < steps; t++) {
  const predicted = model.step({ data: new Float32Array([Math.sin(freq * t + phase)]), shape: [1, 1] }, state).data[0];
  const truth = Math.sin(freq * (t + 1) + phase);
  absErr += Math.abs(predicted - truth);
  if (t % 8 === 7) rows.push(`  t=${String(t + 1).padStart(2)}  next sample ${truth.toFixed(3).padStart(6)}  predicted ${predicted.toFixed(3).padStart(6)}`);
}
const usPerStep = ((performance.now() - stepStart) * 1000) / steps;
console.log('streamed with step() on a new wave (frequency 0.3):');
console.log(rows.join('\n'));
console.log(`mean absolute error of the next-sample prediction: ${(absErr / steps).toFixed(4)}`);
console.log(`step(): ${usPerStep.toFixed(1)} us per call (2 layers, H = 32, including the Linear head)`);
if (!(after < before / 10)) {
  console.error('the model did not learn (validation MSE should drop by 10x)');
  process.exitCode = 1;
}

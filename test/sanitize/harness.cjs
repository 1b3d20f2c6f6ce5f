// Drives every native entry point of a (sanitizer-built) addon through the real package:
//   node test/sanitize/harness.cjs <package dir whose build/Release holds the addon>
// Run by scripts/sanitize.mjs with LD_PRELOAD=libasan/libubsan; exits non-zero on any failure.
'use strict';
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');

const pkg = path.resolve(process.argv[2]);
const lib = require(path.join(pkg, 'dist/cjs/index.js'));
const { loadNative } = require(path.join(pkg, 'dist/cjs/native/loader.js'));
const fixtures = path.resolve(__dirname, '../fixtures');
const info = lib.backendInfo();
assert.ok(info.native, `native addon did not load: ${info.reason}`);
// The binary under test must be the sanitizer build in this package copy.
const loaded = fs.readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => l.includes('lstm_native.node'));
assert.ok(loaded && loaded.includes(pkg), `expected the addon from ${pkg}, loaded: ${loaded}`);
assert.ok(fs.readFileSync(loaded.slice(loaded.indexOf('/'))).includes('__asan_report'), 'the loaded addon is not ASan-instrumented');

function rand(seed) {
  let a = seed >>> 0;
  return () => ((a = (Math.imul(a, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
}
const tensor = (shape, r) => ({ data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, r), shape });

async function main() {
  let calls = 0;
  // 1. Every fixture through forward, forwardAsync, step and forwardTrain/backward, on each ISA and thread count.
  for (const isa of ['avx2', 'scalar']) {
    process.env.LSTM_ISA = isa;
    for (const f of fs.readdirSync(fixtures).filter((n) => /^[tp]\d.*safetensors$/.test(n))) {
      const { tensors: t, metadata } = lib.loadSafetensors(fs.readFileSync(path.join(fixtures, f)));
      const c = JSON.parse(metadata.config);
      for (const threads of [1, 2]) {
        const m = new lib.LSTM({ inputSize: c.input_size, hiddenSize: c.hidden_size, numLayers: c.num_layers, bias: c.bias, batchFirst: c.batch_first, bidirectional: c.bidirectional, projSize: c.proj_size, peephole: c.peephole ?? 'none', backend: 'native', threads });
        m.loadStateDict(t, { strict: false });
        const opts = { h0: t.h0, c0: t.c0, lengths: t.lengths };
        const a = m.forward(t.input, opts);
        const b = await m.forwardAsync(t.input, opts);
        assert.deepStrictEqual(a.output.data, b.output.data);
        for (let i = 0; i < a.output.data.length; i++) assert.ok(Math.abs(a.output.data[i] - t.output.data[i]) < 1e-4, `${f} output`);
        const run = m.forwardTrain(t.input, opts);
        run.backward({ output: t.grad_output, hn: t.grad_hn, cn: t.grad_cn });
        if (m.config.numDirections === 1) {
          const st = m.initialState(t.input.shape.length === 2 ? 1 : t.input.shape[m.config.batchFirst ? 0 : 1]);
          m.step({ data: new Float32Array(st.h.shape[1] * c.input_size), shape: [st.h.shape[1], c.input_size] }, st);
        }
        m.dispose();
        calls += 5;
      }
    }
  }
  delete process.env.LSTM_ISA;
  // 2. Random configurations, odd sizes, lengths, many threads.
  for (let seed = 1; seed <= 60; seed++) {
    const r = rand(seed);
    const H = 1 + Math.floor((r() + 1) * 20);
    const o = { inputSize: 1 + Math.floor((r() + 1) * 4), hiddenSize: H, numLayers: 1 + Math.floor((r() + 1) * 1.5), direction: ['forward', 'reverse', 'bidirectional'][seed % 3], projSize: H > 2 && seed % 4 === 0 ? 1 : 0, peephole: ['none', 'diagonal', 'full'][seed % 3], clip: seed % 5 === 0 ? 0.7 : undefined, backend: 'native', threads: 1 + (seed % 3), seed };
    const m = new lib.LSTM(o);
    const T = 1 + (seed % 7);
    const B = 1 + (seed % 4);
    const x = tensor([T, B, o.inputSize], r);
    const lengths = Array.from({ length: B }, (_, b) => 1 + ((seed + b) % T));
    m.forward(x, { lengths });
    await Promise.all([m.forwardAsync(x), m.forwardAsync(x, { lengths })]);
    // a longer sequence: forwardAsync on a libuv thread (small ones run on the caller)
    const long = tensor([T * 64, B, o.inputSize], r);
    const ref = m.forward(long);
    const got = await m.forwardAsync(long);
    assert.deepStrictEqual(got.output.data, ref.output.data);
    m.forwardTrain(x, { lengths }).backward({ output: tensor([T, B, m.config.numDirections * m.config.outSize], r) });
    calls += 6;
    if (m.config.numDirections === 1) {
      // streaming through the model's Stepper (a reverse model from the last step back),
      // weights reloaded after the first
      const st = m.initialState(B);
      const rev = o.direction === 'reverse';
      const rowsOf = (t) => ({ data: x.data.subarray(t * B * o.inputSize, (t + 1) * B * o.inputSize), shape: [B, o.inputSize] });
      const full = m.forward(x);
      const out = { data: new Float32Array(B * m.config.outSize), shape: [B, m.config.outSize] };
      for (let s = 0; s < T; s++) {
        m.step(rowsOf(rev ? T - 1 - s : s), st, out);
        if (s === 0) m.loadStateDict(m.stateDict());
      }
      const last = rev ? 0 : T - 1;
      for (let i = 0; i < out.data.length; i++) assert.ok(Math.abs(out.data[i] - full.output.data[last * out.data.length + i]) < 1e-5, `seed ${seed} step`);
      calls += T;
    }
    m.dispose();
  }
  // 2b. forwardAsync's input snapshot from 4 MiB up (shared among threads, parts at odd
  // offsets), two calls at once, h0 and c0 given.
  {
    const r = rand(99);
    const m = new lib.LSTM({ inputSize: 31, hiddenSize: 5, numLayers: 2, backend: 'native', threads: 2, seed: 99 });
    const [T, B] = [1031, 33];
    const x = tensor([T, B, 31], r);
    const opts = { h0: tensor([2, B, 5], r), c0: tensor([2, B, 5], r) };
    const want = m.forward(x, opts);
    const got = await Promise.all([m.forwardAsync(x, opts), m.forwardAsync(x, opts)]);
    for (const g of got) assert.deepStrictEqual([g.output.data, g.hn.data, g.cn.data], [want.output.data, want.hn.data, want.cn.data]);
    m.dispose();
    calls += 3;
  }
  // 3. The addon's own argument checks, called directly with hostile values: each call
  // returns or throws one of the library's errors.
  const probe = (what, fn) => {
    try {
      fn();
    } catch (err) {
      assert.ok(String(err.code).startsWith('LSTM_'), `${what}: ${err.message}`);
    }
    calls++;
  };
  const addon = loadNative().addon;
  const act = { kind: 0, alpha: 0, beta: 0 };
  const desc = { inputSize: 2, hiddenSize: 3, projSize: 0, numDirections: 1, reverse: false, bias: false, peephole: 0, gate: act, cell: { ...act, kind: 1 }, hidden: { ...act, kind: 1 }, clip: 0, coupled: false, isa: '' };
  const layer = new addon.Layer(desc, [{ wIh: new Float32Array(24), wHh: new Float32Array(36) }]);
  const hostile = [undefined, null, -1, 2 ** 31, NaN, 1.5, 'x', {}, [], new Float64Array(8), new Float32Array(0), new Int32Array([0]), new Int32Array([99])];
  const base = () => [[layer], new Float32Array(8), 4, 1, new Float32Array(3), new Float32Array(3), null, new Float32Array(12), new Float32Array(3), new Float32Array(3), 1];
  for (let i = 0; i < 11; i++) {
    for (const v of hostile) {
      const args = base();
      args[i] = v;
      probe(`forward arg ${i}`, () => addon.forward(...args));
    }
  }
  const packed = new addon.Packed(new Float32Array(12), 3, 4);
  for (const v of hostile) {
    probe('gemmNT a', () => addon.gemmNT(2, v, packed, new Float32Array(6), true, '', 1));
  }
  const out = new Float32Array(6);
  addon.gemmNT(2, new Float32Array(8).fill(1), packed, out, false, '', 2);
  // The transposed forms: W packed from Wt [4, 3], and C from At [4, 2].
  const packedT = new addon.Packed(new Float32Array(12).fill(0.5), 3, 4, true);
  for (const v of hostile) {
    for (const i of [0, 1, 3, 4]) {
      const args = [2, new Float32Array(8), packedT, new Float32Array(6), true, '', 2];
      args[i] = v;
      probe(`gemmTN arg ${i}`, () => addon.gemmTN(...args));
    }
    probe('Packed.set transposed', () => packedT.set(new Float32Array(12), 3, 4, v));
  }
  packedT.set(new Float32Array(12).fill(0.5), 3, 4, true);
  const outT = new Float32Array(6);
  addon.gemmTN(2, new Float32Array(8).fill(1), packedT, outT, false, '', 2);
  assert.deepStrictEqual(Array.from(outT), [2, 2, 2, 2, 2, 2]);
  // A Stepper: hostile arguments, views of one buffer that overlap, its layer reloaded
  // and disposed under it.
  const stepLayer = new addon.Layer(desc, [{ wIh: new Float32Array(24).fill(0.1), wHh: new Float32Array(36).fill(0.1) }]);
  const stepper = new addon.Stepper([stepLayer]);
  const stepBase = () => [new Float32Array(2), 1, new Float32Array(3), new Float32Array(3), new Float32Array(3), 2];
  for (let i = 0; i < 6; i++) {
    for (const v of hostile) {
      const args = stepBase();
      args[i] = v;
      probe(`Stepper.step arg ${i}`, () => stepper.step(...args));
    }
  }
  for (const v of hostile) probe('Stepper(layers)', () => new addon.Stepper(v));
  const mem = new Float32Array(12).fill(0.5);
  probe('Stepper.step overlapping', () => stepper.step(mem.subarray(0, 2), 1, mem.subarray(2, 5), mem.subarray(5, 8), mem.subarray(4, 7), 1));
  stepper.step(mem.subarray(0, 2), 1, mem.subarray(2, 5), mem.subarray(5, 8), mem.subarray(8, 11), 2);
  stepLayer.load([{ wIh: new Float32Array(24), wHh: new Float32Array(36) }]);
  stepper.step(...stepBase());
  stepLayer.dispose();
  probe('Stepper.step disposed', () => stepper.step(...stepBase()));
  calls += 2;
  // A Stepper whose layer object was collected (it holds it weakly): LSTM_DISPOSED, and no
  // use of the freed wrapper.
  const orphan = new addon.Stepper([new addon.Layer(desc, [{ wIh: new Float32Array(24), wHh: new Float32Array(36) }])]);
  orphan.step(...stepBase());
  for (let i = 0; i < 6; i++) {
    global.gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.throws(() => orphan.step(...stepBase()), (err) => err.code === 'LSTM_DISPOSED');
  calls += 2;
  layer.dispose();
  try {
    addon.forward(...base());
  } catch (err) {
    assert.strictEqual(err.code, 'LSTM_DISPOSED');
  }
  console.log(`sanitizer harness: ${calls} native calls, all clean`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

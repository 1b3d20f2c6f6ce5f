import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENGINES, LSTM, backendInfo, expectClose, lib, mulberry32, randomTensor, withEngine, type Tensor } from './helpers';

const root = path.resolve(__dirname, '..');

/** Rows [lo, hi) of the second axis of an [A, B, F] tensor. */
function slice3(t: Tensor, lo: number, hi: number): Tensor {
  const [A, B, F] = t.shape;
  const n = hi - lo;
  const out = new Float32Array(A * n * F);
  for (let a = 0; a < A; a++) out.set(t.data.subarray((a * B + lo) * F, (a * B + hi) * F), a * n * F);
  return { data: out, shape: [A, n, F] };
}

function reverseTime(t: Tensor): Tensor {
  const [T, ...rest] = t.shape;
  const row = rest.reduce((a, b) => a * b, 1);
  const out = new Float32Array(t.data.length);
  for (let i = 0; i < T; i++) out.set(t.data.subarray(i * row, (i + 1) * row), (T - 1 - i) * row);
  return { data: out, shape: t.shape.slice() };
}

describe('construction and parameters', () => {
  it('a seed reproduces the initialisation; weights lie in U(-1/sqrt(H), 1/sqrt(H))', () => {
    const a = new LSTM({ inputSize: 3, hiddenSize: 16, numLayers: 2, seed: 42 }).stateDict();
    const b = new LSTM({ inputSize: 3, hiddenSize: 16, numLayers: 2, seed: 42, backend: 'js' }).stateDict();
    const c = new LSTM({ inputSize: 3, hiddenSize: 16, numLayers: 2, seed: 43 }).stateDict();
    expect(a).toEqual(b);
    expect(a.weight_ih_l0.data).not.toEqual(c.weight_ih_l0.data);
    const all = Object.values(a).flatMap((t) => Array.from(t.data));
    expect(Math.max(...all.map(Math.abs))).toBeLessThanOrEqual(0.25);
    const mean = all.reduce((s, v) => s + v, 0) / all.length;
    const variance = all.reduce((s, v) => s + (v - mean) ** 2, 0) / all.length;
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(variance).toBeGreaterThan(0.0625 / 3 * 0.9);
    expect(variance).toBeLessThan(0.0625 / 3 * 1.1);
    // The same weights from one version to the next (values drawn by 0.1.0's generator,
    // before fillUniform kept its state in locals), seeds above 2^32 included.
    expect([a.weight_hh_l1.data[0], a.weight_hh_l1.data[1], a.weight_hh_l1.data[1023], a.bias_ih_l0.data[63]]).toEqual(
      [-0.17677751183509827, 0.11477471143007278, -0.014268191531300545, -0.22976425290107727],
    );
    const big = new LSTM({ inputSize: 3, hiddenSize: 16, seed: 2 ** 40 + 5 }).stateDict().weight_ih_l0.data;
    expect([big[0], big[191]]).toEqual([0.21859590709209442, 0.23887747526168823]);
  });

  it('Rng.fillUniform gives what next() would, call after call', () => {
    const { Rng } = require('../dist/cjs/rng.js') as typeof import('../dist/cjs/rng.js');
    const [a, b] = [new Rng(2 ** 33 + 7), new Rng(2 ** 33 + 7)];
    for (const n of [0, 1, 5, 1000, 4097]) {
      const filled = new Float32Array(n);
      a.fillUniform(filled, -0.5, 2);
      expect(filled).toEqual(Float32Array.from({ length: n }, () => -0.5 + 2.5 * b.next()));
      expect(a.nextU32()).toBe(b.nextU32());
    }
  });

  it("state-dict names and shapes are PyTorch's (plus the peephole names)", () => {
    const m = new LSTM({ inputSize: 5, hiddenSize: 7, numLayers: 2, bidirectional: true, projSize: 3, peephole: 'diagonal' });
    const sd = m.stateDict();
    const shapes = Object.fromEntries(Object.entries(sd).map(([k, v]) => [k, v.shape]));
    expect(Object.keys(sd).slice(0, 14)).toEqual([
      'weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0', 'weight_hr_l0', 'weight_ci_l0', 'weight_cf_l0', 'weight_co_l0',
      'weight_ih_l0_reverse', 'weight_hh_l0_reverse', 'bias_ih_l0_reverse', 'bias_hh_l0_reverse', 'weight_hr_l0_reverse', 'weight_ci_l0_reverse',
    ]);
    expect(shapes.weight_ih_l0).toEqual([28, 5]);
    expect(shapes.weight_hh_l0).toEqual([28, 3]);
    expect(shapes.weight_hr_l0).toEqual([3, 7]);
    expect(shapes.weight_ih_l1).toEqual([28, 6]);
    expect(shapes.weight_ci_l1_reverse).toEqual([7]);
    const full = new LSTM({ inputSize: 2, hiddenSize: 3, peephole: 'full', bias: false, direction: 'reverse' }).stateDict();
    expect(Object.keys(full)).toEqual(['weight_ih_l0', 'weight_hh_l0', 'weight_ch_l0']);
    expect(full.weight_ch_l0.shape).toEqual([12, 3]);
  });

  it('stateDict returns copies; loadStateDict copies in', () => {
    const m = new LSTM({ inputSize: 2, hiddenSize: 3, seed: 1 });
    const sd = m.stateDict();
    sd.weight_ih_l0.data.fill(9);
    expect(m.stateDict().weight_ih_l0.data[0]).not.toBe(9);
    m.loadStateDict(sd);
    sd.weight_ih_l0.data.fill(1);
    expect(m.stateDict().weight_ih_l0.data[0]).toBe(9);
  });

  it('LSTM_BACKEND overrides auto, not an explicit backend', () => {
    process.env.LSTM_BACKEND = 'js';
    try {
      expect(new LSTM({ inputSize: 2, hiddenSize: 2 }).backend).toBe('js');
      if (backendInfo().native) expect(new LSTM({ inputSize: 2, hiddenSize: 2, backend: 'native' }).backend).toBe('native');
      expect(backendInfo().reason).toMatch(/LSTM_BACKEND=js/);
    } finally {
      delete process.env.LSTM_BACKEND;
    }
  });

  it('the native engine loads on this machine (set LSTM_EXPECT_NATIVE=0 where no compiler exists)', () => {
    const info = backendInfo();
    expect(info.version).toMatch(/^\d+\.\d+\.\d+/);
    if (process.env.LSTM_EXPECT_NATIVE === '0') return;
    expect(info.native, info.reason).toBe(true);
    expect(['avx512', 'avx2', 'scalar']).toContain(info.isa);
    expect(new LSTM({ inputSize: 2, hiddenSize: 2 }).backend).toBe('native');
  });

  it('LSTM_ISA steps down within its family: a request for an ISA this CPU lacks never runs another', () => {
    if (process.env.LSTM_EXPECT_NATIVE === '0') return;
    const isaFor = (want: string): string | undefined => {
      const prev = process.env.LSTM_ISA;
      process.env.LSTM_ISA = want;
      try {
        return backendInfo().isa;
      } finally {
        if (prev === undefined) delete process.env.LSTM_ISA;
        else process.env.LSTM_ISA = prev;
      }
    };
    const arm = process.arch === 'arm64';
    expect(isaFor('scalar')).toBe('scalar');
    expect(isaFor('simd128')).toBe('scalar'); // WebAssembly's: never a native build's
    expect(isaFor(arm ? 'avx512' : 'neon')).toBe('scalar'); // the other architecture's
    if (!arm) {
      expect(['avx2', 'scalar']).toContain(isaFor('avx2'));
      expect(['avx512', 'avx2', 'scalar']).toContain(isaFor('avx512'));
      expect(isaFor('avx512')).toBe(isaFor('')); // the best this CPU has
    }
  });

  it('ESM and CommonJS entry points load side by side and share one implementation', () => {
    const script = `
      const cjs = require('lstm-native');
      import('lstm-native').then((esm) => {
        const m = new esm.LSTM({ inputSize: 2, hiddenSize: 3, seed: 4 });
        const r = m.forward({ data: new Float32Array([1, 2, 3, 4]), shape: [2, 2] });
        console.log(JSON.stringify({ same: esm.LSTM === cjs.LSTM, native: esm.backendInfo().native, backend: m.backend, shape: r.output.shape, isError: new cjs.LstmError('LSTM_SHAPE', 'x') instanceof esm.LstmError }));
      });`;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8' }));
    expect(out.same).toBe(true);
    expect(out.isError).toBe(true);
    expect(out.shape).toEqual([2, 3]);
    expect(out.backend).toBe(out.native ? 'native' : 'js');
  });
});

describe.each(ENGINES)('semantics on $label', (engine) => {
  const build = (o: object) => withEngine(engine, () => new LSTM({ inputSize: 4, hiddenSize: 5, seed: 3, backend: engine.backend, ...o }));
  const rand = mulberry32(11);

  it('never mutates its inputs', () => {
    const m = build({ numLayers: 2, batchFirst: true });
    const x = randomTensor([3, 6, 4], rand);
    const h0 = randomTensor([2, 3, 5], rand);
    const c0 = randomTensor([2, 3, 5], rand);
    const copies = [x, h0, c0].map((t) => t.data.slice());
    m.forward(x, { h0, c0, lengths: [6, 2, 4] });
    [x, h0, c0].forEach((t, i) => expect(t.data).toEqual(copies[i]));
  });

  it('a call gives the same bits whatever ran before it (scratch and zero states are kept between calls)', () => {
    // Small calls reuse the engine's scratch buffers and the model's zero initial state.
    // Calls of other shapes, options and sizes in between (one past the native engine's
    // 1 MiB of kept scratch), outputs overwritten by the caller, and a step in between
    // must leave the next call's result unchanged.
    const m = build({ numLayers: 2, projSize: 3 });
    const x = randomTensor([7, 3, 4], rand);
    const lengths = [7, 2, 5];
    const first = m.forward(x, { lengths });
    const zeros = m.forward(x, { lengths, h0: { data: new Float32Array(2 * 3 * 3), shape: [2, 3, 3] }, c0: { data: new Float32Array(2 * 3 * 5), shape: [2, 3, 5] } });
    expect(zeros.output.data).toEqual(first.output.data);
    first.hn.data.fill(7);
    first.cn.data.fill(7);
    const others = [
      build({ hiddenSize: 40, bidirectional: true, peephole: 'full' as const }),
      build({ hiddenSize: 300, numLayers: 3 }),
      build({ numLayers: 2, projSize: 3 }),
    ];
    others[0].forward(randomTensor([9, 5, 4], rand), { lengths: [9, 1, 3, 9, 4] });
    others[1].forward(randomTensor([40, 8, 4], rand));
    const st = others[2].initialState(3);
    others[2].step(randomTensor([3, 4], rand), st);
    m.forward(randomTensor([2, 1, 4], rand), { h0: randomTensor([2, 1, 3], rand), c0: randomTensor([2, 1, 5], rand) });
    const again = m.forward(x, { lengths });
    expect(again.output.data).toEqual(zeros.output.data);
    expect(again.hn.data).toEqual(zeros.hn.data);
    expect(again.cn.data).toEqual(zeros.cn.data);
    for (const o of others) o.dispose();
  });

  it('batchFirst and unbatched are layouts of the same computation', () => {
    const tm = build({ numLayers: 2 });
    const bf = build({ numLayers: 2, batchFirst: true });
    bf.loadStateDict(tm.stateDict());
    const x = randomTensor([6, 3, 4], rand);
    const xb: Tensor = { data: new Float32Array(x.data.length), shape: [3, 6, 4] };
    for (let t = 0; t < 6; t++) for (let b = 0; b < 3; b++) xb.data.set(x.data.subarray((t * 3 + b) * 4, (t * 3 + b + 1) * 4), (b * 6 + t) * 4);
    const a = tm.forward(x);
    const b = bf.forward(xb);
    for (let t = 0; t < 6; t++)
      for (let bb = 0; bb < 3; bb++)
        for (let j = 0; j < 5; j++) expect(b.output.data[(bb * 6 + t) * 5 + j]).toBe(a.output.data[(t * 3 + bb) * 5 + j]);
    expect(b.hn).toEqual(a.hn);
  });

  it('unbatched [T, I] equals a batch of one', () => {
    const m = build({ numLayers: 2, bidirectional: true });
    const x = randomTensor([7, 4], rand);
    const a = m.forward(x);
    const b = m.forward({ data: x.data, shape: [7, 1, 4] });
    expect(a.output.shape).toEqual([7, 10]);
    expect(a.hn.shape).toEqual([4, 5]);
    expect(a.output.data).toEqual(b.output.data);
    expect(a.cn.data).toEqual(b.cn.data);
  });

  it("direction 'reverse' runs the reversed sequence", () => {
    const fwd = build({});
    const rev = build({ direction: 'reverse' });
    rev.loadStateDict(fwd.stateDict());
    const x = randomTensor([6, 2, 4], rand);
    const a = rev.forward(x);
    const b = fwd.forward(reverseTime(x));
    expectClose(a.output, reverseTime(b.output), 'reverse output', 1e-6, 1e-6);
    expectClose(a.hn, b.hn, 'reverse hn', 1e-6, 1e-6);
  });

  it('a pair of activations [forward, reverse]: each half of a bidirectional layer runs as one direction with its own', () => {
    const acts = { gateActivation: ['sigmoid', 'hardSigmoid'], cellActivation: ['tanh', { name: 'elu', alpha: 0.7 }], hiddenActivation: [{ name: 'scaledTanh', alpha: 1.2, beta: 0.7 }, 'softsign'] } as const;
    const bi = build({ bidirectional: true, ...acts });
    expect(bi.config.gateActivation.name).toBe('sigmoid');
    expect(bi.config.reverseActivations).toMatchObject({ gate: { name: 'hardSigmoid' }, cell: { name: 'elu', alpha: 0.7 }, hidden: { name: 'softsign' } });
    const fwd = build({ gateActivation: 'sigmoid', cellActivation: 'tanh', hiddenActivation: acts.hiddenActivation[0] });
    const rev = build({ direction: 'reverse', gateActivation: 'hardSigmoid', cellActivation: acts.cellActivation[1], hiddenActivation: 'softsign' });
    const sd = bi.stateDict();
    const half = (suffix: string) => Object.fromEntries(Object.entries(sd).filter(([k]) => k.endsWith(suffix)).map(([k, t]) => [k.slice(0, k.length - suffix.length) + '_l0', t]));
    fwd.loadStateDict(half('_l0'));
    rev.loadStateDict(half('_l0_reverse'));
    const x = randomTensor([6, 2, 4], rand);
    const lengths = [6, 3];
    const both = bi.forward(x, { lengths });
    const H = bi.hiddenSize;
    const a = fwd.forward(x, { lengths });
    const b = rev.forward(x, { lengths });
    expectClose({ data: both.output.data.filter((_, i) => i % (2 * H) < H), shape: a.output.shape }, a.output, 'forward half', 1e-6, 1e-6);
    expectClose({ data: both.output.data.filter((_, i) => i % (2 * H) >= H), shape: b.output.shape }, b.output, 'reverse half', 1e-6, 1e-6);
    expectClose(both.cn, { data: new Float32Array([...a.cn.data, ...b.cn.data]), shape: both.cn.shape }, 'cn', 1e-6, 1e-6);
    // a pair that is one function twice is that function; a pair needs two directions
    expect(build({ bidirectional: true, gateActivation: ['sigmoid', { name: 'sigmoid' }] }).config.reverseActivations).toBeNull();
    expect(() => build({ gateActivation: ['sigmoid', 'hardSigmoid'] })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(/a pair \[forward, reverse\] is for a bidirectional LSTM/) }));
    expect(() => build({ bidirectional: true, gateActivation: ['sigmoid', 'tanh', 'relu'] as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(/an array of 3/) }));
    expect(() => build({ bidirectional: true, cellActivation: ['tanh', 'swish'] as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(/cellActivation\[1\]/) }));
    // optionsOf keeps the pair, so a model rebuilt from its options (as fit's worker does) is the same
    expect(new LSTM({ ...lib.optionsOf(bi), backend: 'js' }).config.reverseActivations).toEqual(bi.config.reverseActivations);
  });

  it('lengths give packed semantics: each sequence as if run alone at its own length', () => {
    const m = build({ numLayers: 2, bidirectional: true, projSize: 2, peephole: 'diagonal' });
    const T = 6;
    const lengths = [6, 1, 3, 4];
    const x = randomTensor([T, 4, 4], rand);
    const h0 = randomTensor([4, 4, 2], rand);
    const c0 = randomTensor([4, 4, 5], rand);
    const all = m.forward(x, { h0, c0, lengths });
    for (let b = 0; b < 4; b++) {
      const L = lengths[b];
      const xs = slice3(x, b, b + 1);
      const alone = m.forward({ data: xs.data.slice(0, L * 4), shape: [L, 1, 4] }, { h0: slice3(h0, b, b + 1), c0: slice3(c0, b, b + 1) });
      const got = slice3(all.output, b, b + 1);
      expectClose({ data: got.data.slice(0, L * 4), shape: [L, 1, 4] }, alone.output, `sequence ${b} output`, 1e-6, 1e-5);
      expect(Array.from(got.data.slice(L * 4)).every((v) => v === 0), `padding of ${b} is zero`).toBe(true);
      expectClose(slice3(all.hn, b, b + 1), alone.hn, `sequence ${b} hn`, 1e-6, 1e-5);
      expectClose(slice3(all.cn, b, b + 1), alone.cn, `sequence ${b} cn`, 1e-6, 1e-5);
    }
    // lengths all equal to T are the same as none; bigint and tensor forms are accepted
    expect(m.forward(x, { h0, c0, lengths: [6, 6, 6, 6] })).toEqual(m.forward(x, { h0, c0 }));
    expect(m.forward(x, { h0, c0, lengths: new BigInt64Array([6n, 1n, 3n, 4n]) })).toEqual(all);
    expect(m.forward(x, { h0, c0, lengths: { data: new Float32Array(lengths) } })).toEqual(all);
  });

  it('stacking: layer k+1 reads layer k output', () => {
    const two = build({ numLayers: 2, hiddenSize: 5 });
    const sd = two.stateDict();
    const l0 = build({});
    const l1 = withEngine(engine, () => new LSTM({ inputSize: 5, hiddenSize: 5, backend: engine.backend }));
    // loadStateDict runs outside withEngine on purpose: a model keeps the ISA it was built with.
    const pick = (k: number) => Object.fromEntries(Object.entries(sd).filter(([n]) => n.endsWith(`_l${k}`)).map(([n, v]) => [n.replace(`_l${k}`, '_l0'), v]));
    l0.loadStateDict(pick(0));
    l1.loadStateDict(pick(1));
    const x = randomTensor([5, 2, 4], rand);
    const both = two.forward(x);
    const a = l0.forward(x);
    const b = l1.forward(a.output);
    expect(both.output.data).toEqual(b.output.data);
    expect(Array.from(both.hn.data)).toEqual([...a.hn.data, ...b.hn.data]);
  });
});

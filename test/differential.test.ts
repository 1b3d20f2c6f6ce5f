// Native vs js on random configurations covering every option and odd sizes.
import { describe, expect, it } from 'vitest';
import { LSTM, NATIVE_ISAS, WASM_CASES, backendInfo, expectClose, mulberry32, randomTensor, sweepSeeds, withEngine, type Activation, type LSTMOptions } from './helpers';

const ACTS = ['sigmoid', 'tanh', 'relu', 'hardSigmoid', 'leakyRelu', 'scaledTanh', 'affine', 'elu', 'softsign', 'softplus'] as const;

function pick<T>(rand: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rand() * xs.length)];
}

function randomCase(seed: number) {
  const rand = mulberry32(seed);
  const hiddenSize = pick(rand, [1, 3, 17, 33, 2 + Math.floor(rand() * 20)]);
  const options: LSTMOptions = {
    inputSize: pick(rand, [1, 2, 5, 8, 13]),
    hiddenSize,
    numLayers: 1 + Math.floor(rand() * 3),
    bias: rand() < 0.8,
    batchFirst: rand() < 0.3,
    direction: pick(rand, ['forward', 'reverse', 'bidirectional'] as const),
    projSize: hiddenSize > 1 && rand() < 0.3 ? 1 + Math.floor(rand() * (hiddenSize - 1)) : 0,
    peephole: pick(rand, ['none', 'none', 'diagonal', 'full'] as const),
    clip: rand() < 0.25 ? 0.2 + rand() * 2 : undefined,
    coupledInputForget: rand() < 0.2,
    seed: seed * 7 + 1,
  };
  if (rand() < 0.3) {
    // Bounded activations keep states finite so relative tolerances stay meaningful.
    options.gateActivation = pick(rand, ['sigmoid', 'hardSigmoid'] as const);
    options.cellActivation = pick(rand, ACTS);
    options.hiddenActivation = pick(rand, ['tanh', 'softsign', 'sigmoid', 'scaledTanh'] as const);
  }
  const T = pick(rand, [1, 1 + Math.floor(rand() * 9)]);
  const B = pick(rand, [1, 1 + Math.floor(rand() * 5)]);
  const unbatched = B === 1 && rand() < 0.3;
  const D = options.direction === 'bidirectional' ? 2 : 1;
  const L = options.numLayers!;
  const Hout = options.projSize || hiddenSize;
  const xShape = unbatched ? [T, options.inputSize] : options.batchFirst ? [B, T, options.inputSize] : [T, B, options.inputSize];
  const withState = rand() < 0.5;
  const lengths = !unbatched && rand() < 0.4 ? Array.from({ length: B }, () => pick(rand, [1, T, 1 + Math.floor(rand() * T)])) : undefined;
  if (D === 2 && rand() < 0.3) {
    // the reverse direction with activations of its own (ONNX's six)
    options.gateActivation = [(options.gateActivation as Activation | undefined) ?? 'sigmoid', pick(rand, ['sigmoid', 'hardSigmoid'] as const)];
    options.cellActivation = [(options.cellActivation as Activation | undefined) ?? 'tanh', pick(rand, ACTS)];
    options.hiddenActivation = [(options.hiddenActivation as Activation | undefined) ?? 'tanh', pick(rand, ['tanh', 'softsign', 'sigmoid', 'scaledTanh'] as const)];
  }
  const stateShape = (w: number) => (unbatched ? [L * D, w] : [L * D, B, w]);
  return {
    options,
    x: randomTensor(xShape, rand),
    h0: withState ? randomTensor(stateShape(Hout), rand, 0.5) : undefined,
    c0: withState ? randomTensor(stateShape(hiddenSize), rand, 0.5) : undefined,
    lengths,
  };
}

// 240 configurations from seed 1, or more from elsewhere for a longer local sweep
// (DIFF_SEED, DIFF_CASES).
const SEEDS = sweepSeeds('DIFF', 240);

const OTHERS = [
  ...NATIVE_ISAS.map((isa) => ({ label: `native/${isa}`, backend: 'native' as const, isa })),
  ...WASM_CASES,
];

describe('native and wasm match js on random configurations', () => {
  it('the wasm engine loads here (it ships in the package)', () => {
    expect(backendInfo().wasm, backendInfo().wasmReason).toBe(true);
  });

  it.each(OTHERS)(`$label: ${SEEDS.length} configurations`, (engine) => {
    const covered = new Set<string>();
    for (const seed of SEEDS) {
      const c = randomCase(seed);
      const js = new LSTM({ ...c.options, backend: 'js' });
      const native = withEngine(engine, () => new LSTM({ ...c.options, backend: engine.backend }));
      expect(native.backend).toBe(engine.backend);
      native.loadStateDict(js.stateDict());
      const a = native.forward(c.x, { h0: c.h0, c0: c.c0, lengths: c.lengths });
      const b = js.forward(c.x, { h0: c.h0, c0: c.c0, lengths: c.lengths });
      const what = `seed ${seed} ${JSON.stringify(c.options)}`;
      expectClose(a.output, b.output, `${what} output`, 2e-5, 2e-4);
      expectClose(a.hn, b.hn, `${what} hn`, 2e-5, 2e-4);
      expectClose(a.cn, b.cn, `${what} cn`, 2e-5, 2e-4);
      native.dispose();
      const o = native.config;
      covered.add(`dir:${o.direction}`).add(`peep:${o.peephole}`).add(`proj:${o.projSize > 0}`).add(`clip:${o.clip > 0}`);
      covered.add(`coupled:${o.coupledInputForget}`).add(`bias:${o.bias}`).add(`bf:${o.batchFirst}`).add(`lens:${c.lengths !== undefined}`);
      covered.add(`H:${o.hiddenSize}`).add(`T1:${c.x.shape[o.batchFirst ? 1 : 0] === 1}`).add(`unbatched:${c.x.shape.length === 2}`);
      covered.add(`cell:${o.cellActivation.name}`).add(`revActs:${o.reverseActivations !== null}`);
    }
    // The generator really reaches every option and the odd sizes the issue names.
    for (const must of ['dir:forward', 'dir:reverse', 'dir:bidirectional', 'peep:none', 'peep:diagonal', 'peep:full', 'proj:true', 'clip:true', 'coupled:true', 'bias:false', 'bf:true', 'lens:true', 'H:1', 'H:3', 'H:17', 'H:33', 'T1:true', 'unbatched:true', 'cell:relu', 'cell:hardSigmoid', 'cell:elu', 'revActs:true']) {
      expect(covered.has(must), must).toBe(true);
    }
  });
});

describe('a NaN in the input comes out NaN wherever it flows, as in PyTorch', () => {
  // The vectorised activations clamp their argument; the clamp must keep a NaN (x86's
  // min/max would return the bound) or sigmoid(NaN) comes out 1 and tanh(NaN) ±1.
  const cases: Array<[string, LSTMOptions]> = [
    ['standard cell', { inputSize: 5, hiddenSize: 37, seed: 2 }],
    ['clip and diagonal peepholes', { inputSize: 5, hiddenSize: 37, clip: 0.5, peephole: 'diagonal', seed: 3 }],
    ['two layers, bidirectional', { inputSize: 5, hiddenSize: 20, numLayers: 2, direction: 'bidirectional', seed: 4 }],
  ];
  const engines = [{ label: 'js', backend: 'js' as const, isa: undefined as string | undefined }, ...OTHERS];
  it.each(cases)('%s', (_label, options) => {
    const x = randomTensor([4, 3, 5], mulberry32(8));
    x.data[(1 * 3 + 1) * 5 + 2] = NaN; // step 1, sequence 1
    const nanRows = (data: Float32Array, width: number): string =>
      Array.from({ length: data.length / width }, (_, r) => (data.subarray(r * width, (r + 1) * width).some(Number.isNaN) ? 'N' : '.')).join('');
    const results = engines.map((engine) =>
      withEngine(engine, () => {
        const m = new LSTM({ ...options, backend: engine.backend });
        const f = m.forward(x);
        const t = m.forwardTrain(x);
        m.dispose();
        return { label: engine.label, f, t };
      }),
    );
    const width = results[0].f.output.shape[2];
    const ref = results[0];
    // js: sequence 1 is NaN from step 1 on (everywhere, with a backward direction), the others never.
    const bidir = options.direction === 'bidirectional';
    expect(nanRows(ref.f.output.data, width)).toBe(bidir ? '.N..N..N..N.' : '....N..N..N.');
    for (const r of results) {
      for (const [what, out] of [['forward', r.f.output], ['forwardTrain', r.t.output]] as const) {
        expect(nanRows(out.data, width), `${r.label} ${what}`).toBe(nanRows(ref.f.output.data, width));
      }
      expect(nanRows(r.f.hn.data, r.f.hn.shape[2]), `${r.label} hn`).toBe(nanRows(ref.f.hn.data, ref.f.hn.shape[2]));
      expect(nanRows(r.f.cn.data, r.f.cn.shape[2]), `${r.label} cn`).toBe(nanRows(ref.f.cn.data, ref.f.cn.shape[2]));
    }
  });
});

describe('native matches js on larger shapes, 1 and 2 threads, through forward, forwardAsync and step', () => {
  // The shapes above are small; these reach the native paths that only larger ones take
  // (the thresholds are in native/kernels/layer.cc and gemm.cc): a batch split by rows,
  // weights of 1 MiB and more (blocks of A packed, panels in alternating order), inputs
  // deeper than one 512-deep pass, several projection chunks, per-participant copies of the
  // state, and forwardAsync's threaded copy of an input over 4 MiB.
  const cases: Array<{ what: string; options: LSTMOptions; T: number; B: number; state?: boolean; lengths?: boolean }> = [
    { what: 'B=32, two layers of H=256 (split by rows at 2 threads)', options: { inputSize: 256, hiddenSize: 256, numLayers: 2 }, T: 12, B: 32 },
    { what: 'one row, I=600 (two passes), projection, full peepholes', options: { inputSize: 600, hiddenSize: 300, projSize: 100, peephole: 'full' }, T: 20, B: 1, state: true },
    { what: 'bidirectional, several projection chunks, lengths', options: { inputSize: 64, hiddenSize: 128, direction: 'bidirectional' }, T: 70, B: 13, lengths: true },
    { what: 'three layers by rows with lengths, diagonal peepholes, clip', options: { inputSize: 40, hiddenSize: 200, numLayers: 3, peephole: 'diagonal', clip: 1.5 }, T: 8, B: 40, state: true, lengths: true },
    { what: 'reverse, coupled gates, 1 MiB of recurrent weights', options: { inputSize: 130, hiddenSize: 256, direction: 'reverse', coupledInputForget: true }, T: 17, B: 3 },
    { what: 'an input of 6.7 MB', options: { inputSize: 600, hiddenSize: 48 }, T: 70, B: 40, state: true },
  ];
  const runs = NATIVE_ISAS.flatMap((isa) => cases.map((c) => ({ ...c, isa, label: `native/${isa}: ${c.what}` })));
  it.each(runs)('$label', async ({ options, T, B, state, lengths, isa }) => {
    const rand = mulberry32(T * 1000 + B);
    const seeded = { ...options, seed: 3 };
    const D = options.direction === 'bidirectional' ? 2 : 1;
    const L = options.numLayers ?? 1;
    const Hout = options.projSize || options.hiddenSize;
    const x = randomTensor([T, B, options.inputSize], rand, 0.5);
    const h0 = state ? randomTensor([L * D, B, Hout], rand, 0.5) : undefined;
    const c0 = state ? randomTensor([L * D, B, options.hiddenSize], rand, 0.5) : undefined;
    const lens = lengths ? Array.from({ length: B }, (_, b) => (b === 0 ? T : 1 + Math.floor(rand() * T))) : undefined;
    const ref = new LSTM({ ...seeded, backend: 'js' }).forward(x, { h0, c0, lengths: lens });
    for (const threads of [1, 2]) {
      const m = withEngine({ label: isa, backend: 'native', isa }, () => new LSTM({ ...seeded, backend: 'native', threads }));
      const what = `${threads} thread(s)`;
      for (const [how, got] of [['forward', m.forward(x, { h0, c0, lengths: lens })], ['forwardAsync', await m.forwardAsync(x, { h0, c0, lengths: lens })]] as const) {
        expectClose(got.output, ref.output, `${what} ${how} output`, 2e-5, 2e-4);
        expectClose(got.hn, ref.hn, `${what} ${how} hn`, 2e-5, 2e-4);
        expectClose(got.cn, ref.cn, `${what} ${how} cn`, 2e-5, 2e-4);
      }
      if (D === 1 && options.direction !== 'reverse' && !lengths) {
        const st = state ? { h: { data: h0!.data.slice(), shape: h0!.shape }, c: { data: c0!.data.slice(), shape: c0!.shape } } : m.initialState(B);
        const out = new Float32Array(T * B * Hout);
        for (let t = 0; t < T; t++) out.set(m.step({ data: x.data.subarray(t * B * options.inputSize, (t + 1) * B * options.inputSize), shape: [B, options.inputSize] }, st).data, t * B * Hout);
        expectClose({ data: out, shape: ref.output.shape }, ref.output, `${what} steps output`, 2e-5, 2e-4);
        expectClose(st.h, ref.hn, `${what} steps h`, 2e-5, 2e-4);
        expectClose(st.c, ref.cn, `${what} steps c`, 2e-5, 2e-4);
      }
      m.dispose();
    }
  });
});

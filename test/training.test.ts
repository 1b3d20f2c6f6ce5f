// Training: gradients against PyTorch on every engine, optimizer trajectories, finite
// differences for what no fixture covers, the model API, checkpoints and fit.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENGINES, FIXTURES, LSTM, expectClose, expectSameBits, fixture, lib, mulberry32, randomModel, randomTensor, sineWaves, sweepSeeds, torchOptions, withEngine, type Gradient, type LSTMOptions, type Tensor } from './helpers';

const require = createRequire(import.meta.url);

const { SequenceModel, SGD, Adam, AdamW, RMSprop, Adagrad, clipGradNorm, mse, crossEntropy } = lib;

// The random training configurations: 60 from seed 1, or more from elsewhere for a longer
// local sweep (TRAIN_SEED, TRAIN_CASES).
// Seeds where longer sweeps failed, run every time: 62603 is compared within its rounding
// sensitivity (wasm), 67494's states blow up and it is left out (below).
const TRAIN_SEEDS = sweepSeeds('TRAIN', 60, [62603, 67494]);

const GRAD_CASES = ['t01_single', 't02_stack2_batchfirst', 't03_bidir2', 't04_proj', 't05_nobias', 't06_packed_bidir', 't07_unbatched', 't08_larger', 't09_proj_bidir_packed_bf', 't10_one_step', 'p01_seed_full_peephole', 'p02_diagonal_peephole'];

describe.each(ENGINES)('gradients on $label', (engine) => {
  it.each(GRAD_CASES)('%s matches PyTorch autograd', (name) => {
    const { tensors: t, metadata } = fixture(name);
    const m = withEngine(engine, () => new LSTM({ ...torchOptions(metadata), backend: engine.backend }));
    m.loadStateDict(t, { strict: false });
    const run = m.forwardTrain(t.input, { h0: t.h0, c0: t.c0, lengths: t.lengths });
    expectClose(run.output, t.output, `${name} output`, name === 't08_larger' ? 2e-5 : 1e-5);
    const g = run.backward({ output: t.grad_output, hn: t.grad_hn, cn: t.grad_cn });
    expectClose(g.input, t.grad_input, `${name} grad_input`, 1e-4, 1e-3);
    expectClose(g.h0, t.grad_h0, `${name} grad_h0`, 1e-4, 1e-3);
    expectClose(g.c0, t.grad_c0, `${name} grad_c0`, 1e-4, 1e-3);
    expect(Object.keys(g.params).sort()).toEqual(Object.keys(m.stateDict()).sort());
    for (const [k, v] of Object.entries(g.params)) expectClose(v, t[`grad.${k}`], `${name} grad.${k}`, 1e-4, 1e-3);
  });

  // r01 / r02, and torch-optim/*: weight decay, AdamW, amsgrad, nesterov, dampening, and
  // learning-rate schedules stepped after every step, RMSprop, Adagrad (PyTorch 1.13, make.py there)
  const TRAJECTORIES = ['r01_train_adam', 'r02_train_sgd_momentum_clip', ...['adamw_amsgrad', 'adam_decay_amsgrad', 'adamw_clip', 'sgd_nesterov_decay', 'sgd_dampening', 'adam_cosine', 'sgd_steplr', 'rmsprop_centered_momentum', 'rmsprop_plain', 'adagrad_decay', 'adam_onecycle', 'sgd_warmup_cosine'].map((n) => `torch-optim/${n}`)];
  it.each(TRAJECTORIES)('%s reproduces the PyTorch trajectory', (name) => {
    const { tensors: t, metadata } = fixture(name);
    const model = withEngine(engine, () => new SequenceModel({ inputSize: 3, hiddenSize: 8, numLayers: 2, outputSize: 2, backend: engine.backend }));
    const init: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(t)) if (k.startsWith('init.')) init[k.slice(5)] = v;
    model.loadStateDict(init);
    const o = JSON.parse(metadata.optimizer);
    const params = model.parameters();
    const adam = { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay, amsgrad: o.amsgrad };
    const optimizer =
      o.name === 'adam' ? new Adam(params, adam)
      : o.name === 'adamw' ? new AdamW(params, adam)
      : o.name === 'rmsprop' ? new lib.RMSprop(params, { lr: o.lr, alpha: o.alpha, eps: o.eps, weightDecay: o.weight_decay, momentum: o.momentum, centered: o.centered })
      : o.name === 'adagrad' ? new lib.Adagrad(params, { lr: o.lr, lrDecay: o.lr_decay, weightDecay: o.weight_decay, initialAccumulatorValue: o.initial_accumulator_value, eps: o.eps })
      : new SGD(params, { lr: o.lr, momentum: o.momentum, dampening: o.dampening, nesterov: o.nesterov, weightDecay: o.weight_decay });
    expect(optimizer.config.name).toBe(o.name);
    const losses: number[] = JSON.parse(metadata.losses);
    // PyTorch's scheduler options (a SequentialLR's schedulers too) as ours
    const camel = (o: Record<string, unknown>): Record<string, unknown> =>
      Object.fromEntries(Object.entries(o).map(([k, v]) => [k.replace(/_(\w)/g, (_m, c: string) => c.toUpperCase()).replace(/^T(Max|0)$/, (_m, r: string) => `t${r}`), k === 'schedulers' ? (v as Record<string, unknown>[]).map(camel) : v]));
    const scheduler = metadata.scheduler ? lib.schedulerFromConfig(optimizer, camel(JSON.parse(metadata.scheduler)) as never) : null;
    const clip = JSON.parse(metadata.clip_grad_norm);
    const norms: number[] = JSON.parse(metadata.grad_norms_before_clip);
    losses.forEach((want, step) => {
      if (clip === null) {
        const loss = model.trainStep(t.input, t.target, { optimizer, loss: 'mse' });
        expect(Math.abs(loss - want) / want, `step ${step}`).toBeLessThan(1e-4);
        scheduler?.step();
      } else {
        // the same step by hand, to see the norm clip_grad_norm_ saw
        const run = model.lstm.forwardTrain(t.input);
        const pred = model.head.forward(run.output);
        const { loss, grad } = mse(pred, t.target);
        expect(Math.abs(loss - want) / want, `step ${step}`).toBeLessThan(1e-4);
        for (const p of params) p.grad.fill(0);
        const dOut = model.head.backward(run.output.data, grad, params.find((p) => p.name === 'head.weight')!.grad, params.find((p) => p.name === 'head.bias')!.grad);
        const g = run.backward({ output: { data: dOut, shape: run.output.shape } });
        for (const [k, v] of Object.entries(g.params)) params.find((p) => p.name === `lstm.${k}`)!.grad.set(v.data);
        const norm = clipGradNorm(params, clip);
        expect(Math.abs(norm - norms[step]) / norms[step], `norm ${step}`).toBeLessThan(1e-4);
        optimizer.step();
      }
    });
    const sd = model.stateDict();
    for (const [k, v] of Object.entries(sd)) expectClose(v, t[`final.${k}`], `final ${k}`, 1e-5, 1e-4);
  });
});

/** Central finite differences of L = sum(output * w) for one parameter element, in float64 via small steps. */
function finiteDifference(options: LSTMOptions, x: Tensor, weights: Float32Array, lengths: number[] | undefined, name: string, index: number, eps = 1e-2): number {
  const m = new LSTM({ ...options, backend: 'js' });
  const sd = m.stateDict();
  const loss = (delta: number): number => {
    const p = sd[name].data.slice();
    p[index] += delta;
    m.loadStateDict({ ...sd, [name]: { data: p, shape: sd[name].shape } });
    const out = m.forward(x, { lengths }).output.data;
    let s = 0;
    for (let i = 0; i < out.length; i++) s += out[i] * weights[i];
    return s;
  };
  return (loss(eps) - loss(-eps)) / (2 * eps);
}

describe('gradients where no fixture reaches: finite differences', () => {
  const cases: [string, LSTMOptions][] = [
    ['clip', { inputSize: 3, hiddenSize: 4, clip: 0.6, seed: 1 }],
    ['coupled gates', { inputSize: 3, hiddenSize: 4, coupledInputForget: true, peephole: 'diagonal', seed: 2 }],
    ['hardSigmoid / elu / softsign', { inputSize: 3, hiddenSize: 4, gateActivation: 'hardSigmoid', cellActivation: 'elu', hiddenActivation: 'softsign', seed: 3 }],
    ['leakyRelu / softplus / scaledTanh', { inputSize: 2, hiddenSize: 3, gateActivation: 'sigmoid', cellActivation: { name: 'leakyRelu', alpha: 0.2 }, hiddenActivation: { name: 'scaledTanh', alpha: 1.3, beta: 0.8 }, seed: 4 }],
    ['reverse direction with lengths', { inputSize: 3, hiddenSize: 4, direction: 'reverse', seed: 5 }],
    ['full peephole, projection, 2 layers', { inputSize: 2, hiddenSize: 5, projSize: 2, peephole: 'full', numLayers: 2, seed: 6 }],
    [
      'bidirectional, the reverse direction with activations of its own (ONNX\'s six)',
      { inputSize: 2, hiddenSize: 3, numLayers: 2, bidirectional: true, gateActivation: ['sigmoid', 'hardSigmoid'], cellActivation: ['tanh', 'softsign'], hiddenActivation: [{ name: 'scaledTanh', alpha: 1.2, beta: 0.7 }, 'tanh'], seed: 7 },
    ],
  ];
  it.each(cases)('%s', (_label, options) => {
    const rand = mulberry32(9);
    const x = randomTensor([5, 2, options.inputSize], rand);
    const lengths = options.direction === 'reverse' ? [5, 3] : undefined;
    const m = new LSTM({ ...options, backend: 'js' });
    const run = m.forwardTrain(x, { lengths });
    const w = randomTensor(run.output.shape, rand);
    const g = run.backward({ output: w });
    let checked = 0;
    for (const [name, grad] of Object.entries(g.params)) {
      for (const index of [0, Math.floor(grad.data.length / 2), grad.data.length - 1]) {
        const fd = finiteDifference(options, x, w.data, lengths, name, index);
        // float32 forward differences: generous but far below any real bug
        expect(Math.abs(fd - grad.data[index]), `${name}[${index}] fd ${fd} vs ${grad.data[index]}`).toBeLessThan(5e-3 + 2e-2 * Math.abs(fd));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(5);
  });

  it.each(ENGINES.filter((e) => e.backend !== 'js'))('$label gradients equal js on random configurations of every option', (engine) => {
    // Every option forwardTrain takes, sizes past the vector widths (H up to 40, B up to 9),
    // one model in ten large enough for two threads to split (H 64-223, B 1 or 16-32), and
    // 1 or 2 threads; native must give the same bits on the other thread count. Each element
    // may differ by 1e-4 of itself plus 1e-5 of its tensor's largest entry plus 1e-6 (for
    // tensors of near-zeros that cancellation left):
    // unbounded activations (softplus gates, relu cells) amplify rounding differences in
    // small entries of otherwise large gradients. A model whose output or final states
    // (hn and cn of every layer) left [-1e4, 1e4] is not compared (unbounded activations
    // again: seed 67494's first layer reached c = 1e13 and its second gates of 1e22 while
    // its output stayed under 4; products of such values overflow float32 in the engines'
    // cell backward, where js's doubles do not), and at most a tenth of the seeds may be such.
    // Some models are so ill-conditioned that rounding alone moves their gradients past
    // that (seed 62603: three bidirectional layers of softplus gates and full peepholes,
    // gradients up to 212; x changed by 1e-7 of itself moved js's own input gradient by
    // 2-6e-3, and the wasm engines differed from js by up to 1.4e-2). Where a tensor fails,
    // js runs again on x changed by 1e-6 of itself, twice, and the largest change each
    // tensor shows (its sensitivity to rounding) is allowed twice over. Few seeds may need
    // that, and a wrong gradient still fails: its error does not shrink with the allowance.
    const acts = ['sigmoid', 'tanh', 'relu', 'hardSigmoid', 'elu', 'softsign', 'softplus'] as const;
    const misfit = (actual: Tensor, expected: Tensor, what: string, slack = 0): string | null => {
      expect(actual.shape, `${what} shape`).toEqual(expected.shape);
      let big = 0;
      for (const v of expected.data) if (Number.isFinite(v)) big = Math.max(big, Math.abs(v));
      for (let i = 0; i < expected.data.length; i++) {
        const a = actual.data[i];
        const b = expected.data[i];
        if (a === b || (Number.isNaN(a) && Number.isNaN(b))) continue;
        if (!(Math.abs(a - b) <= 1e-6 + 1e-5 * big + 1e-4 * Math.abs(b) + slack)) return `${what}: element ${i} is ${a}, expected ${b}`;
      }
      return null;
    };
    const close = (actual: Tensor, expected: Tensor, what: string): void => {
      const bad = misfit(actual, expected, what);
      if (bad !== null) expect.fail(bad);
    };
    // The results a seed compares, by name: the output, the three input gradients, the parameters.
    const named = (output: Tensor, g: Gradient): Record<string, Tensor> => ({ output, input: g.input, h0: g.h0, c0: g.c0, ...g.params });
    const covered = new Set<string>();
    let tame = 0;
    let widened = 0;
    for (const seed of TRAIN_SEEDS) {
      const rand = mulberry32(seed);
      const drawn = randomModel(rand, { bidirectional: true, batchFirst: true, large: 0.1, acts, maxT: 7 });
      const { B, T } = drawn;
      const options: LSTMOptions = { ...drawn.options, seed };
      const x = randomTensor(options.batchFirst ? [B, T, options.inputSize] : [T, B, options.inputSize], rand);
      const lengths = rand() < 0.5 ? Array.from({ length: B }, () => 1 + Math.floor(rand() * T)) : undefined;
      const a = new LSTM({ ...options, backend: 'js' });
      const b = withEngine(engine, () => new LSTM({ ...options, backend: engine.backend }));
      const what = `seed ${seed} B=${B} T=${T} ${JSON.stringify(options)}`;
      const ra = a.forwardTrain(x, { lengths });
      const rb = b.forwardTrain(x, { lengths });
      const w = randomTensor(ra.output.shape, rand);
      const gb = rb.backward({ output: w });
      if ([ra.output, ra.hn, ra.cn].every((r) => r.data.every((v) => Math.abs(v) < 1e4))) {
        tame++;
        // The inference forward and the training forward of one engine agree.
        close(b.forward(x, { lengths }).output, rb.output, `${what} forward vs forwardTrain`);
        const ga = ra.backward({ output: w });
        expect(Object.keys(gb.params).sort()).toEqual(Object.keys(ga.params).sort());
        const want = named(ra.output, ga);
        const got = named(rb.output, gb);
        const compare = (slack: (name: string) => number): string | null => {
          for (const k of Object.keys(want)) {
            const bad = misfit(got[k], want[k], `${what} ${k}`, slack(k));
            if (bad !== null) return bad;
          }
          return null;
        };
        if (compare(() => 0) !== null) {
          const sensitivity = new Map<string, number>();
          const note = (name: string, moved: Tensor, base: Tensor): void => {
            let d = 0;
            for (let i = 0; i < base.data.length; i++) {
              const v = Math.abs(moved.data[i] - base.data[i]);
              if (Number.isFinite(v)) d = Math.max(d, v);
            }
            sensitivity.set(name, Math.max(sensitivity.get(name) ?? 0, d));
          };
          for (const trial of [1, 2]) {
            const jitter = mulberry32(seed * 7 + trial);
            const xj = { data: x.data.map((v) => v * (1 + 1e-6 * (jitter() * 2 - 1))), shape: x.shape };
            const rj = new LSTM({ ...options, backend: 'js' }).forwardTrain(xj, { lengths }); // a's results stay untouched
            const moved = named(rj.output, rj.backward({ output: w }));
            for (const k of Object.keys(want)) note(k, moved[k], want[k]);
          }
          const bad = compare((name) => 2 * (sensitivity.get(name) ?? 0));
          if (bad !== null) expect.fail(`${bad} (beyond twice the rounding sensitivity too)`);
          widened++;
        }
      }
      if (engine.backend === 'native') {
        // The other thread count gives the same bits, output and every gradient.
        const other = withEngine(engine, () => new LSTM({ ...options, threads: 3 - drawn.options.threads, backend: 'native' }));
        const ro = other.forwardTrain(x, { lengths });
        const go = ro.backward({ output: w });
        expectSameBits(ro.output.data, rb.output.data, `${what} threads: output`);
        for (const k of ['input', 'h0', 'c0'] as const) expectSameBits(go[k].data, gb[k].data, `${what} threads: ${k}`);
        for (const k of Object.keys(gb.params)) expectSameBits(go.params[k].data, gb.params[k].data, `${what} threads: ${k}`);
        other.dispose();
      }
      b.dispose();
      const o = b.config;
      covered.add(`dir:${o.direction}`).add(`peep:${o.peephole}`).add(`proj:${o.projSize > 0}`).add(`clip:${o.clip > 0}`);
      covered.add(`coupled:${o.coupledInputForget}`).add(`bias:${o.bias}`).add(`bf:${o.batchFirst}`).add(`lens:${lengths !== undefined}`);
      covered.add(`threads:${o.threads}`).add(`layers:${o.numLayers}`).add(`cell:${o.cellActivation.name}`).add(`H>16:${o.hiddenSize > 16}`).add(`large:${drawn.large}`);
    }
    expect(tame).toBeGreaterThanOrEqual(0.9 * TRAIN_SEEDS.length);
    expect(widened, 'seeds compared within their rounding sensitivity').toBeLessThanOrEqual(1 + 0.01 * TRAIN_SEEDS.length);
    // The generator really reaches every option.
    for (const must of ['dir:forward', 'dir:reverse', 'dir:bidirectional', 'peep:none', 'peep:diagonal', 'peep:full', 'proj:true', 'clip:true', 'coupled:true', 'bias:false', 'bf:true', 'lens:true', 'lens:false', 'threads:2', 'layers:3', 'cell:relu', 'H>16:true', 'large:true']) {
      expect(covered.has(must), must).toBe(true);
    }
  });
});

describe.each(ENGINES)('training tapes reused on $label', (engine) => {
  // A model hands its last finished tape's buffers to its next forwardTrain. Nothing of
  // one run may leak into another: every result must equal a fresh model's, bit for bit.
  const options: LSTMOptions = { inputSize: 3, hiddenSize: 5, numLayers: 2, direction: 'bidirectional', clip: 0.8, peephole: 'diagonal', seed: 3, backend: engine.backend };
  const make = (): InstanceType<typeof LSTM> => withEngine(engine, () => new LSTM(options));
  const rand = mulberry32(21);
  const x1 = randomTensor([6, 3, 3], rand);
  const x2 = randomTensor([6, 3, 3], rand).data.map((v) => v * 3);
  const x2t = { data: x2, shape: [6, 3, 3] };
  const w = randomTensor([6, 3, 10], rand);
  const same = (a: Gradient, b: Gradient, what: string): void => {
    expect(a.input.data, `${what} input`).toEqual(b.input.data);
    expect(a.h0.data, `${what} h0`).toEqual(b.h0.data);
    for (const k of Object.keys(b.params)) expect(a.params[k].data, `${what} ${k}`).toEqual(b.params[k].data);
  };
  const reference = (x: Tensor, lengths?: number[]) => {
    const m = make();
    const g = m.forwardTrain(x, { lengths }).backward({ output: w });
    m.dispose();
    return g;
  };

  it('gives every run the gradients a fresh model gives, whatever ran before', () => {
    const m = make();
    const r1 = m.forwardTrain(x1, { lengths: [6, 2, 4] });
    const g1 = r1.backward({ output: w });
    same(g1, reference(x1, [6, 2, 4]), 'first run');
    same(r1.backward({ output: w }), g1, 'backward again');
    // The second run takes the first one's buffers: different data, other lengths.
    const r2 = m.forwardTrain(x2t, { lengths: [3, 6, 1] });
    const fresh = make();
    expect(r2.output.data).toEqual(fresh.forwardTrain(x2t, { lengths: [3, 6, 1] }).output.data);
    fresh.dispose();
    same(r2.backward({ output: w }), reference(x2t, [3, 6, 1]), 'second run');
    // The first run's buffers now hold the second's tape: its backward records it again.
    same(r1.backward({ output: w }), g1, 'first run after the second');
    // Two runs open at once, finished in the other order.
    const r3 = m.forwardTrain(x1);
    const r4 = m.forwardTrain(x2t);
    same(r4.backward({ output: w }), reference(x2t), 'later run first');
    same(r3.backward({ output: w }), reference(x1), 'earlier run second');
    m.dispose();
  });
});

describe('optimizers, losses and the model API', () => {
  const param = (values: number[], grads: number[]) => ({ name: 'p', value: new Float32Array(values), grad: new Float32Array(grads), shape: [values.length] });

  it('AdamW (decoupled decay, amsgrad) and SGD with nesterov follow torch.optim step by step', () => {
    const p = param([1, -2], [0.5, 0.25]);
    const opt = new AdamW([p], { lr: 0.1, weightDecay: 0.1, amsgrad: true });
    opt.step();
    // step 1: m = 0.1 g, v = 0.001 g^2, m^ = g, v^ = g^2 -> update lr * g / (|g| + eps) = lr * sign(g)
    expect(p.value[0]).toBeCloseTo(1 * (1 - 0.01) - 0.1, 6);
    expect(p.value[1]).toBeCloseTo(-2 * (1 - 0.01) - 0.1, 6);
    const s = param([1], [1]);
    const sgd = new SGD([s], { lr: 0.1, momentum: 0.9, nesterov: true });
    sgd.step(); // buf = 1, d = 1 + 0.9 = 1.9
    expect(s.value[0]).toBeCloseTo(1 - 0.19, 6);
    sgd.step(); // buf = 0.9 + 1 = 1.9, d = 1 + 0.9 * 1.9 = 2.71
    expect(s.value[0]).toBeCloseTo(1 - 0.19 - 0.271, 6);
    expect(() => new SGD([s], { lr: 0.1, nesterov: true })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    const big = param([0, 0], [3, 4]);
    expect(clipGradNorm([big], 1)).toBeCloseTo(5, 6);
    expect(Math.hypot(big.grad[0], big.grad[1])).toBeCloseTo(1, 5);
  });

  it('crossEntropy and mse respect lengths masks', () => {
    const logits = { data: new Float32Array([2, 0, 0, 1, 5, 5, 1, 1]), shape: [2, 2, 2] }; // [T=2, B=2, C=2]
    const classes = [0, 1, 1, 0];
    const full = crossEntropy(logits, classes);
    const want = (Math.log(1 + Math.exp(-2)) + Math.log(1 + Math.exp(-1)) + Math.log(2) + Math.log(2)) / 4;
    expect(full.loss).toBeCloseTo(want, 6);
    const masked = crossEntropy(logits, classes, { lengths: [2, 1] }); // drops t=1, b=1
    expect(masked.loss).toBeCloseTo((Math.log(1 + Math.exp(-2)) + Math.log(1 + Math.exp(-1)) + Math.log(2)) / 3, 6);
    expect(Array.from(masked.grad.slice(6))).toEqual([0, 0]);
    const m = mse({ data: new Float32Array([1, 2, 3, 4]), shape: [2, 2, 1] }, { data: new Float32Array([0, 0, 0, 0]), shape: [2, 2, 1] }, { lengths: [2, 1] });
    expect(m.loss).toBeCloseTo((1 + 4 + 9) / 3, 6);
  });

  it("SequenceModel: names, a checkpoint resumes exactly where it left off", () => {
    const make = () => new SequenceModel({ inputSize: 2, hiddenSize: 6, numLayers: 2, outputSize: 3, seed: 11 });
    const rand = mulberry32(4);
    const x = randomTensor([7, 4, 2], rand);
    const y = randomTensor([7, 4, 3], rand);
    const a = make();
    expect(Object.keys(a.stateDict())).toEqual([...Object.keys(new LSTM({ inputSize: 2, hiddenSize: 6, numLayers: 2 }).stateDict()).map((k) => `lstm.${k}`), 'head.weight', 'head.bias']);
    const optA = new Adam(a.parameters(), { lr: 0.01 });
    for (let i = 0; i < 3; i++) a.trainStep(x, y, { optimizer: optA });
    const bytes = a.saveCheckpoint(optA);
    const b = make();
    const optB = new Adam(b.parameters(), { lr: 0.5 });
    b.loadCheckpoint(bytes, optB);
    expect(optB.lr).toBe(0.01); // the learning rate comes back with the state, as in torch
    for (let i = 0; i < 3; i++) expect(b.trainStep(x, y, { optimizer: optB })).toBe(a.trainStep(x, y, { optimizer: optA }));
    expect(() => b.loadCheckpoint(bytes, new SGD(b.parameters(), { lr: 1 }))).toThrow(expect.objectContaining({ code: 'LSTM_FORMAT' }));
  });

  it('fit learns, reports progress, validates, runs truncated BPTT and stops on an AbortSignal', async () => {
    const data = sineWaves(48, 12, 3);
    const model = new SequenceModel({ inputSize: 1, hiddenSize: 16, outputSize: 1, seed: 1 });
    const before = model.evaluate(data);
    const progress: number[] = [];
    const result = await model.fit(data, { optimizer: new Adam(model.parameters(), { lr: 0.02 }), epochs: 15, batchSize: 16, seed: 2, validation: data, tbptt: 6, onProgress: (p) => progress.push(p.loss) });
    expect(result.aborted).toBe(false);
    expect(result.history).toHaveLength(15);
    expect(result.history[14].valLoss!).toBeLessThan(before / 4);
    expect(progress.length).toBeGreaterThan(15 * 3);
    const controller = new AbortController();
    let calls = 0;
    const stopped = await model.fit(data, {
      optimizer: new Adam(model.parameters()),
      epochs: 100,
      batchSize: 8,
      signal: controller.signal,
      onProgress: () => {
        if (++calls === 3) controller.abort();
      },
    });
    expect(stopped.aborted).toBe(true);
    expect(calls).toBe(3);
  });

  it('fit steps a schedule after every epoch: ReduceLROnPlateau on the validation loss, the rate in history and progress', async () => {
    const data = sineWaves(24, 10, 5);
    const model = new SequenceModel({ inputSize: 1, hiddenSize: 8, outputSize: 1, seed: 2, backend: 'js' });
    const optimizer = new SGD(model.parameters(), { lr: 4 }); // large enough to overshoot now and then
    const scheduler = new lib.ReduceLROnPlateau(optimizer, { patience: 0, factor: 0.5, threshold: 0 });
    const rates: number[] = [];
    const { history } = await model.fit(data, { optimizer, scheduler, epochs: 8, batchSize: 12, seed: 1, validation: data, onProgress: (p) => rates.push(p.lr) });
    // each epoch trained at the rate the schedule left after the one before
    const valLosses = history.map((h) => h.valLoss!);
    let lr = 4;
    let best = Infinity;
    history.forEach((h, i) => {
      expect(h.lr, `epoch ${i + 1}`).toBe(lr);
      if (valLosses[i] < best) best = valLosses[i];
      else lr *= 0.5;
    });
    expect(optimizer.lr).toBe(lr);
    expect(lr, 'the schedule reduced the rate at least once').toBeLessThan(4);
    expect(scheduler.best).toBe(Math.min(...valLosses));
    expect(new Set(rates)).toEqual(new Set(history.map((h) => h.lr)));
    // without validation it watches the training loss; a scheduler of another optimizer is refused
    await expect(model.fit(data, { optimizer, scheduler: new lib.StepLR(new SGD(model.parameters(), { lr: 1 }), { stepSize: 1 }) })).rejects.toMatchObject({ code: 'LSTM_OPTION' });
  });

  it("fit steps OneCycleLR every mini-batch (schedulerStep 'batch'), on a worker with the same bits and momentum", async () => {
    const data = sineWaves(20, 8, 3);
    const make = () => new SequenceModel({ inputSize: 1, hiddenSize: 6, outputSize: 1, seed: 4, backend: 'native', threads: 1 });
    const epochs = 3;
    const steps = Math.ceil(20 / 6); // 4 mini-batches an epoch
    const run = async (worker: boolean) => {
      const model = make();
      const optimizer = new SGD(model.parameters(), { lr: 0.5, momentum: 0.9 });
      const scheduler = new lib.OneCycleLR(optimizer, { maxLr: 0.5, epochs, stepsPerEpoch: steps });
      const rates: number[] = [];
      const result = await model.fit(data, { optimizer, scheduler, schedulerStep: 'batch', epochs, batchSize: 6, seed: 3, worker, onProgress: (p) => rates.push(p.lr) });
      return { model, optimizer, scheduler, rates, result };
    };
    const a = await run(false);
    // the same schedule stepped by hand, one step per mini-batch
    const ref = new lib.OneCycleLR(new SGD(make().parameters(), { lr: 0.5, momentum: 0.9 }), { maxLr: 0.5, epochs, stepsPerEpoch: steps });
    const want = Array.from({ length: epochs * steps }, () => {
      const lr = ref.lr;
      ref.step();
      return lr;
    });
    expect(a.rates).toEqual(want);
    expect(a.result.history.map((h) => h.lr)).toEqual([0, 1, 2].map((e) => want[e * steps]));
    expect(a.optimizer.lr).toBe(ref.lr);
    expect(a.optimizer.momentum).toBe((ref.optimizer as InstanceType<typeof SGD>).momentum);
    expect(a.optimizer.momentum).not.toBe(0.9);
    const b = await run(true);
    expect(b.rates).toEqual(a.rates);
    expect(b.model.stateDict()).toEqual(a.model.stateDict());
    expect(b.optimizer.lr).toBe(a.optimizer.lr);
    expect(b.optimizer.momentum).toBe(a.optimizer.momentum);
    expect(b.scheduler.lastEpoch).toBe(epochs * steps);
    // per batch, ReduceLROnPlateau has no metric: refused, as is another value
    const m = make();
    const o = new SGD(m.parameters(), { lr: 0.1 });
    await expect(m.fit(data, { optimizer: o, scheduler: new lib.ReduceLROnPlateau(o), schedulerStep: 'batch' })).rejects.toMatchObject({ code: 'LSTM_OPTION', message: expect.stringMatching(/steps per epoch only/) });
    await expect(m.fit(data, { optimizer: o, schedulerStep: 'step' as never, worker: false })).rejects.toMatchObject({ code: 'LSTM_OPTION', message: expect.stringMatching(/schedulerStep/) });
  });

  it('fit stops early when the validation loss stalls and puts back the best epoch\'s weights, on a worker too', async () => {
    const data = sineWaves(32, 10, 8);
    const validation = sineWaves(16, 10, 9);
    const make = () => new SequenceModel({ inputSize: 1, hiddenSize: 8, outputSize: 1, seed: 5, backend: 'native', threads: 1 });
    // a rate large enough that the validation loss stops improving within 30 epochs
    const run = (m: InstanceType<typeof SequenceModel>, extra: object) => m.fit(data, { optimizer: new SGD(m.parameters(), { lr: 3 }), epochs: 30, batchSize: 8, seed: 2, validation, ...extra });
    const a = make();
    const ra = await run(a, { earlyStopping: { patience: 3 }, worker: false });
    expect(ra.stoppedEarly).toBe(true);
    const val = ra.history.map((h) => h.valLoss!);
    // the rule: stop after `patience` epochs without a new best; the best is the first minimum
    expect(ra.bestEpoch).toBe(val.indexOf(Math.min(...val)) + 1);
    expect(ra.history).toHaveLength(ra.bestEpoch! + 3);
    // restored: the weights are those after the best epoch, as a run of that many epochs leaves them
    const c = make();
    await run(c, { epochs: ra.bestEpoch, worker: false });
    expect(a.stateDict()).toEqual(c.stateDict());
    // the worker runs the same rule and hands back the same weights
    const b = make();
    expect(await run(b, { earlyStopping: { patience: 3 } })).toEqual(ra);
    expect(b.stateDict()).toEqual(a.stateDict());
    // restoreBest: false keeps the last epoch's weights; bad options are LSTM_OPTION
    const d = make();
    const rd = await run(d, { earlyStopping: { patience: 3, restoreBest: false }, worker: false });
    expect(rd).toEqual(ra);
    expect(d.stateDict()).not.toEqual(a.stateDict());
    for (const bad of [{}, { patience: 0 }, { patience: 2, minDelta: -1 }, { patience: 2, restoreBest: 'yes' }, 3]) {
      await expect(run(make(), { earlyStopping: bad })).rejects.toMatchObject({ code: 'LSTM_OPTION' });
    }
  });

  it('fit on the native engine runs on a worker thread: same result as in-thread, main thread free', async () => {
    const N = 64;
    const T = 40;
    const rand = mulberry32(9);
    const xs = new Float32Array(N * T * 2).map(() => rand() * 2 - 1);
    const ys = new Float32Array(N * T).map((_, i) => Math.tanh(xs[2 * i] + 0.5 * xs[2 * i + 1]));
    const data = { x: { data: xs, shape: [N, T, 2] }, y: { data: ys, shape: [N, T, 1] } };
    const validation = { x: { data: xs.slice(0, 16 * T * 2), shape: [16, T, 2] }, y: { data: ys.slice(0, 16 * T), shape: [16, T, 1] } };
    // With dropout: the worker must continue the masks' random stream and hand it back.
    const make = () => new SequenceModel({ inputSize: 2, hiddenSize: 48, numLayers: 2, outputSize: 1, seed: 4, backend: 'native', threads: 1, dropout: 0.25 });
    const fitOptions = { epochs: 3, batchSize: 8, seed: 5, validation, clipGradNorm: 1 };

    const inThread = make();
    const optA = new Adam(inThread.parameters(), { lr: 0.01 });
    const progressA: number[] = [];
    const schedA = new lib.CosineAnnealingLR(optA, { tMax: 2, etaMin: 0.002 });
    const ra = await inThread.fit(data, { ...fitOptions, optimizer: optA, scheduler: schedA, worker: false, onProgress: (p) => progressA.push(p.loss) });

    const onWorker = make();
    const optB = new Adam(onWorker.parameters(), { lr: 0.01 });
    const progressB: number[] = [];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const t0 = performance.now();
    const schedB = new lib.CosineAnnealingLR(optB, { tMax: 2, etaMin: 0.002 });
    const rb = await onWorker.fit(data, { ...fitOptions, optimizer: optB, scheduler: schedB, onProgress: (p) => progressB.push(p.loss) });
    const ms = performance.now() - t0;
    clearInterval(timer);

    // The same computation: bitwise the same losses, history, parameters and optimizer state.
    expect(progressB).toEqual(progressA);
    expect(rb).toEqual(ra);
    expect(onWorker.stateDict()).toEqual(inThread.stateDict());
    expect(optB.stepCount).toBe(optA.stepCount);
    // and the same schedule: the worker's scheduler state and learning rate come back
    ra.history.forEach((h, i) => expect(h.lr).toBeCloseTo([0.01, 0.006, 0.002][i], 15));
    expect(optB.lr).toBe(optA.lr);
    expect(schedB.state()).toEqual(schedA.state());
    // The main thread kept running timers while the worker trained.
    expect(ticks).toBeGreaterThan(ms / 20);
    // The optimizer carries on from the worker's state exactly as from the in-thread one.
    const x = { data: xs.slice(0, 4 * T * 2), shape: [T, 4, 2] };
    const y = { data: ys.slice(0, 4 * T), shape: [T, 4, 1] };
    expect(onWorker.trainStep(x, y, { optimizer: optB })).toBe(inThread.trainStep(x, y, { optimizer: optA }));
    // Errors come back as LstmErrors, checked before any thread starts.
    await expect(onWorker.fit({ x: data.x, y: { data: ys, shape: [N, T] } }, { optimizer: optB })).rejects.toMatchObject({ code: 'LSTM_SHAPE' });
    // RMSprop and Adagrad move to the worker too, with their state
    for (const Opt of [lib.RMSprop, lib.Adagrad]) {
      const [m1, m2] = [make(), make()];
      const [o1, o2] = [new Opt(m1.parameters(), { lr: 0.01 }), new Opt(m2.parameters(), { lr: 0.01 })];
      const small = { epochs: 1, batchSize: 16, seed: 6 };
      expect(await m2.fit(data, { ...small, optimizer: o2 })).toEqual(await m1.fit(data, { ...small, optimizer: o1, worker: false }));
      expect(m2.stateDict()).toEqual(m1.stateDict());
      expect([...o2.state.keys()].sort()).toEqual([...o1.state.keys()].sort());
      for (const [k, v] of o1.state) expect(o2.state.get(k), `${Opt.name} ${k}`).toEqual(v);
    }
  });
});

describe.each(ENGINES)('SequenceModel for serving on $label', (engine) => {
  it('forecast feeds each prediction back in: the same as forward over the context and the predictions so far', () => {
    for (const batchFirst of [false, true]) {
      const model = withEngine(engine, () => new SequenceModel({ inputSize: 2, hiddenSize: 6, numLayers: 2, outputSize: 2, batchFirst, seed: 8, backend: engine.backend }));
      const T = 5, B = 3, H = 4;
      const ctx = randomTensor(batchFirst ? [B, T, 2] : [T, B, 2], mulberry32(3));
      const h0 = randomTensor([2, B, 6], mulberry32(4), 0.5);
      const pred = model.forecast(ctx, H, { h0 });
      expect(pred.shape).toEqual(batchFirst ? [B, H, 2] : [H, B, 2]);
      // at(t, b) of a [T, B, F] / [B, T, F] tensor
      const at = (t: Tensor, len: number, k: number, b: number) => { const i = batchFirst ? b * len + k : k * B + b; return Array.from(t.data.subarray(i * 2, i * 2 + 2)); };
      for (let k = 0; k < H; k++) {
        // the context with the first k predictions appended, run in one forward
        const len = T + k;
        const seq = new Float32Array(len * B * 2);
        for (let t = 0; t < len; t++) for (let b = 0; b < B; b++) {
          const v = t < T ? at(ctx, T, t, b) : at(pred, H, t - T, b);
          seq.set(v, (batchFirst ? b * len + t : t * B + b) * 2);
        }
        const full = model.forward({ data: seq, shape: batchFirst ? [B, len, 2] : [len, B, 2] }, { h0 }).output;
        for (let b = 0; b < B; b++) {
          const want = at(full, len, len - 1, b);
          at(pred, H, k, b).forEach((v, j) => expect(Math.abs(v - want[j]), `k ${k} b ${b}`).toBeLessThan(1e-5));
        }
      }
      // an unbatched context gives [horizon, O]; what cannot forecast is LSTM_OPTION
      const one = model.forecast({ data: ctx.data.slice(0, T * 2), shape: [T, 2] }, 3);
      expect(one.shape).toEqual([3, 2]);
      const code = (fn: () => unknown, re: RegExp) => expect(fn).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(re) }));
      code(() => model.forecast(ctx, 0), /horizon: expected a positive integer/);
      expect(() => model.forecast(ctx, 2 ** 30)).toThrow(expect.objectContaining({ code: 'LSTM_SHAPE', message: expect.stringMatching(/forecast output: shape .* has more than/) }));
      const wide = withEngine(engine, () => new SequenceModel({ inputSize: 2, hiddenSize: 3, outputSize: 1, backend: engine.backend }));
      code(() => wide.forecast(ctx, 2), /must be the next inputs/);
      const bi = withEngine(engine, () => new SequenceModel({ inputSize: 2, hiddenSize: 3, outputSize: 2, bidirectional: true, backend: engine.backend }));
      code(() => bi.forecast(ctx, 2), /a bidirectional model cannot run on past its input/);
    }
  });

  it('forwardAsync gives forward\'s numbers; dispose frees it and later calls are LSTM_DISPOSED', async () => {
    const model = withEngine(engine, () => new SequenceModel({ inputSize: 3, hiddenSize: 8, numLayers: 2, outputSize: 2, batchFirst: true, seed: 3, backend: engine.backend }));
    const x = randomTensor([4, 7, 3], mulberry32(2));
    const lengths = [7, 3, 5, 1];
    const sync = model.forward(x, { lengths });
    const viaAsync = await model.forwardAsync(x, { lengths });
    expect(viaAsync.output.data).toEqual(sync.output.data);
    expect(viaAsync.output.shape).toEqual([4, 7, 2]);
    expect(viaAsync.hn.data).toEqual(sync.hn.data);
    await expect(model.forwardAsync(x, { out: {} } as never)).rejects.toMatchObject({ code: 'LSTM_OPTION' });
    // streaming: initialState and step give forward's predictions, step by step
    const state = model.initialState(4);
    for (let t = 0; t < 7; t++) {
      const xt = { data: new Float32Array(4 * 3), shape: [4, 3] };
      for (let b = 0; b < 4; b++) xt.data.set(x.data.subarray((b * 7 + t) * 3, (b * 7 + t + 1) * 3), b * 3);
      const y = model.step(xt, state);
      for (let b = 0; b < 4; b++) {
        const want = model.forward(x).output.data.subarray((b * 7 + t) * 2, (b * 7 + t + 1) * 2);
        expectClose({ data: y.data.subarray(b * 2, b * 2 + 2), shape: [2] }, { data: Float32Array.from(want), shape: [2] }, `step ${t} row ${b}`);
      }
    }
    model.dispose();
    expect(() => model.forward(x)).toThrow(expect.objectContaining({ code: 'LSTM_DISPOSED' }));
    await expect(model.forwardAsync(x)).rejects.toMatchObject({ code: 'LSTM_DISPOSED' });
  });
});

describe('losses: torch.nn.functional\'s values and gradients', () => {
  // test/fixtures/torch-losses/make.py: [T=5, B=3, C=4] predictions (ties, |p - y| on both
  // sides of 1, logits of +-30) against targets, whole and masked by lengths [5, 2, 4].
  const L = JSON.parse(readFileSync(path.join(FIXTURES, 'torch-losses', 'losses.json'), 'utf8')) as {
    T: number; B: number; C: number; lengths: number[]; pred: number[];
    cases: Record<string, { target: number[]; full: { loss: number; grad: number[] }; masked: { loss: number; grad: number[] } }>;
  };
  const FNS = { mse, l1: lib.l1Loss, huber: lib.huberLoss, bceWithLogits: lib.bceWithLogits } as const;
  it.each(Object.keys(FNS) as (keyof typeof FNS)[])('%s', (name) => {
    const c = L.cases[name];
    const shape = [L.T, L.B, L.C];
    const pred = { data: Float32Array.from(L.pred), shape };
    const target = { data: Float32Array.from(c.target), shape };
    for (const [which, lengths] of [['full', undefined], ['masked', L.lengths]] as const) {
      const r = FNS[name](pred, target, { lengths });
      const want = c[which];
      expect(Math.abs(r.loss - want.loss), `${name} ${which} loss ${r.loss} vs ${want.loss}`).toBeLessThan(1e-12 * Math.abs(want.loss) + 1e-15);
      r.grad.forEach((g, i) => expect(Math.abs(g - want.grad[i]), `${name} ${which} grad[${i}]`).toBeLessThanOrEqual(1e-7 * Math.abs(want.grad[i]) + 1e-12));
    }
  });

  it('crossEntropy with class weights, label smoothing and ignore_index, whole and masked', () => {
    const ce = JSON.parse(readFileSync(path.join(FIXTURES, 'torch-losses', 'cross_entropy.json'), 'utf8')) as {
      logits: number[]; classes: number[]; weight: number[];
      cases: { weight: boolean; labelSmoothing: number; ignoreIndex: boolean; masked: boolean; dropped: boolean[]; loss: number; grad: number[] }[];
    };
    const logits = { data: Float32Array.from(ce.logits), shape: [L.T, L.B, L.C] };
    // float32 logits as PyTorch's float64 ones were made from: the losses agree to float64
    for (const c of ce.cases) {
      const what = JSON.stringify({ ...c, dropped: undefined, grad: undefined });
      const r = lib.crossEntropy(logits, ce.classes, { lengths: c.masked ? L.lengths : undefined, classWeights: c.weight ? ce.weight : undefined, labelSmoothing: c.labelSmoothing, ignoreIndex: -100 });
      expect(Math.abs(r.loss - c.loss), `${what}: loss ${r.loss} vs ${c.loss}`).toBeLessThan(1e-12 * Math.abs(c.loss) + 1e-15);
      r.grad.forEach((g, i) => expect(Math.abs(g - c.grad[i]), `${what}: grad[${i}]`).toBeLessThanOrEqual(1e-7 * Math.abs(c.grad[i]) + 1e-12));
      expect(c.dropped.every((d, i) => !d || [0, 1, 2, 3].every((k) => r.grad[i * L.C + k] === 0)), what).toBe(true);
    }
    const opt = (o: object, re: RegExp) => expect(() => lib.crossEntropy(logits, ce.classes, { ignoreIndex: -100, ...o })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(re) }));
    opt({ classWeights: [1, 2] }, /classWeights: expected 4 numbers/);
    opt({ classWeights: [1, 2, -1, 1] }, /classWeights\[2\]: expected a finite number >= 0/);
    opt({ labelSmoothing: 1.5 }, /labelSmoothing: expected a number in \[0, 1\]/);
    opt({ ignoreIndex: 0.5 }, /ignoreIndex: expected an integer/);
    // without ignoreIndex, the -100 target is not a class
    expect(() => lib.crossEntropy(logits, ce.classes)).toThrow(expect.objectContaining({ code: 'LSTM_SHAPE', message: expect.stringMatching(/expected an integer in 0..3, got -100/) }));
  });

  it('fit checks every option first: typos, non-callbacks and values a worker could not receive are LstmErrors', async () => {
    const m = new SequenceModel({ inputSize: 1, hiddenSize: 4, outputSize: 2, outputMode: 'last', batchFirst: true, seed: 1, backend: 'native', threads: 1 });
    const x = { data: new Float32Array(12).fill(0.5), shape: [4, 3, 1] };
    const y = { data: new Float32Array([0, 1, 0, 1]), shape: [4] };
    const fit = (extra: object, data: object = { x, y }) => m.fit(data as never, { optimizer: new Adam(m.parameters()), loss: 'crossEntropy', epochs: 1, ...extra } as never);
    for (const worker of [true, false]) {
      const bad: [object, string, RegExp, object?][] = [
        [{ onProgress: 5 }, 'LSTM_OPTION', /onProgress: expected a function/],
        [{ epoch: 3 }, 'LSTM_OPTION', /fit: unknown option 'epoch'/],
        [{ signal: {} }, 'LSTM_OPTION', /signal: expected an AbortSignal/],
        [{ epochs: new Proxy({}, {}) }, 'LSTM_OPTION', /epochs: expected a positive integer/],
        [{ seed: -1 }, 'LSTM_OPTION', /seed: expected a non-negative integer/],
        [{ clipGradNorm: 'x' }, 'LSTM_OPTION', /clipGradNorm/],
        [{ lossOptions: { classWeights: [1, () => 2] } }, 'LSTM_OPTION', /classWeights\[1\]/],
        [{ optimizer: {} }, 'LSTM_OPTION', /optimizer: expected an optimizer/],
        [{}, 'LSTM_SHAPE', /lengths\[\d\]/, { x, y, lengths: [3, 3, { valueOf: () => 2 }, 3] }],
      ];
      for (const [o, code, re, data] of bad) await expect(fit({ ...o, worker }, data), `${JSON.stringify(o)} worker ${worker}`).rejects.toMatchObject({ code, message: expect.stringMatching(re) });
      // what a worker cannot clone but is fine is copied: a Proxy of class weights, Proxy tensors, extra keys ignored in lossOptions
      const ok = await fit({ worker, lossOptions: { classWeights: new Proxy([1, 2], {}), note: () => 1 } }, { x: new Proxy(x, {}), y: { data: y.data, shape: new Proxy([4], {}) } });
      expect(ok.history).toHaveLength(1);
    }
    expect(() => m.trainStep(x, y, { optimizer: { step: 1 } as never, loss: 'crossEntropy' })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(/optimizer: expected an optimizer/) }));
    m.dispose();
  });

  it('trainStep, evaluate and fit pass lossOptions to crossEntropy; the worker gives the same bits', async () => {
    const rand = mulberry32(5);
    const N = 24, T = 5;
    const x = { data: Float32Array.from({ length: N * T }, () => rand() * 2 - 1), shape: [N, T, 1] };
    const y = { data: Float32Array.from({ length: N }, (_, n) => (n % 6 === 0 ? 1 : 0)), shape: [N] }; // imbalanced
    const make = () => new SequenceModel({ inputSize: 1, hiddenSize: 6, outputSize: 2, batchFirst: true, outputMode: 'last', seed: 2, backend: 'native', threads: 1 });
    const lossOptions = { classWeights: [1, 5], labelSmoothing: 0.05 };
    const m = make();
    const want = lib.crossEntropy(m.forward(x).output, y.data, lossOptions).loss;
    expect(m.evaluate({ x, y }, { loss: 'crossEntropy', lossOptions, batchSize: N })).toBeCloseTo(want, 6);
    expect(m.trainStep(x, y, { optimizer: new SGD(m.parameters(), { lr: 0 }), loss: 'crossEntropy', lossOptions })).toBeCloseTo(want, 6);
    expect(m.evaluate({ x, y }, { loss: 'crossEntropy', batchSize: N })).not.toBeCloseTo(want, 3);
    // the set's mean whatever the batches: class-weighted, and (per step) over valid steps
    expect(m.evaluate({ x, y }, { loss: 'crossEntropy', lossOptions, batchSize: 5 })).toBeCloseTo(want, 6);
    const perStep = new SequenceModel({ inputSize: 1, hiddenSize: 6, outputSize: 1, batchFirst: true, seed: 2, backend: 'js' });
    const steps = { x, y: { data: x.data.map((v) => v * 0.5), shape: [N, T, 1] }, lengths: Array.from({ length: N }, (_, n) => 1 + (n % T)) };
    expect(perStep.evaluate(steps, { batchSize: 7 })).toBeCloseTo(perStep.evaluate(steps, { batchSize: N }), 6);
    const fit = async (worker: boolean) => {
      const model = make();
      const r = await model.fit({ x, y }, { optimizer: new Adam(model.parameters(), { lr: 0.02 }), loss: 'crossEntropy', lossOptions, epochs: 3, batchSize: 8, seed: 1, worker, validation: { x, y } });
      return { r, sd: model.stateDict() };
    };
    const [a, b] = [await fit(false), await fit(true)];
    expect(b.r.history).toEqual(a.r.history);
    expect(b.sd).toEqual(a.sd);
    expect(() => m.trainStep(x, y, { optimizer: new SGD(m.parameters(), { lr: 0 }), loss: 'crossEntropy', lossOptions: 3 as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(/lossOptions: expected/) }));
  });

  it('trainStep, evaluate and fit take them by name; an unknown name is LSTM_OPTION', async () => {
    const data = sineWaves(16, 8, 7);
    const model = new SequenceModel({ inputSize: 1, hiddenSize: 6, outputSize: 1, batchFirst: true, seed: 3, backend: 'js' });
    const optimizer = new Adam(model.parameters(), { lr: 0.01 });
    for (const loss of ['l1', 'huber'] as const) {
      const before = model.evaluate(data, { loss });
      expect(before).toBeCloseTo(FNS[loss](model.forward(data.x).output, data.y).loss, 6);
      await model.fit(data, { optimizer, loss, epochs: 3, batchSize: 8, seed: 1 });
      expect(model.evaluate(data, { loss })).toBeLessThan(before);
    }
    const probs = { x: data.x, y: { data: data.y.data.map((v) => (v > 0 ? 1 : 0)), shape: data.y.shape } };
    expect(model.trainStep(data.x, probs.y, { optimizer, loss: 'bceWithLogits' })).toBeGreaterThan(0);
    expect(() => model.trainStep(data.x, data.y, { optimizer, loss: 'hinge' as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(/loss: expected one of 'mse', 'l1', 'huber', 'bceWithLogits', 'crossEntropy', got "hinge"/) }));
    expect(() => model.evaluate(data, { loss: 'hinge' as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
  });
});

describe("sequence-level heads (outputMode): PyTorch's fc(out[:, -1]) and fc(hn[-1])", () => {
  const heads = JSON.parse(readFileSync(path.join(FIXTURES, 'torch-heads', 'heads.json'), 'utf8')) as {
    cases: Record<string, { options: Record<string, number | boolean>; mode: 'last' | 'final'; loss: 'mse' | 'crossEntropy'; lengths: number[] | null; value: number }>;
  };
  const all = lib.loadSafetensors(readFileSync(path.join(FIXTURES, 'torch-heads', 'heads.safetensors'))).tensors;
  const of = (name: string, prefix: string) => Object.fromEntries(Object.entries(all).filter(([k]) => k.startsWith(`${name}.${prefix}`)).map(([k, v]) => [k.slice(name.length + 1 + prefix.length), v]));
  const make = (name: string, engine: (typeof ENGINES)[number]) => {
    const c = heads.cases[name];
    const o = c.options;
    return withEngine(engine, () =>
      new SequenceModel({ inputSize: o.input_size as number, hiddenSize: o.hidden_size as number, numLayers: o.num_layers as number, bidirectional: Boolean(o.bidirectional), projSize: (o.proj_size as number) ?? 0, batchFirst: true, outputSize: 3, outputMode: c.mode, backend: engine.backend }).loadStateDict(of(name, '')),
    );
  };
  describe.each(ENGINES)('$label', (engine) => {
    it.each(Object.keys(heads.cases))('%s: predictions, loss and every gradient', (name) => {
      const c = heads.cases[name];
      const model = make(name, engine);
      const x = all[`${name}.x`];
      const lengths = c.lengths ?? undefined;
      const pred = model.forward(x, { lengths }).output;
      expect(pred.shape).toEqual([4, 3]);
      expectClose(pred, all[`${name}.pred`], 'predictions');
      // gradients: a step at rate 0 leaves them in the parameters
      const optimizer = new SGD(model.parameters(), { lr: 0 });
      const target = c.loss === 'mse' ? all[`${name}.y`] : Array.from(all[`${name}.y`].data);
      const loss = model.trainStep(x, target as Tensor, { optimizer, loss: c.loss, lengths });
      expect(loss).toBeCloseTo(c.value, 5);
      const grads = of(name, 'grad.');
      expect(model.parameters().map((p) => p.name).sort()).toEqual(Object.keys(grads).sort());
      for (const p of model.parameters()) expectClose({ data: p.grad, shape: p.shape }, grads[p.name], `d ${p.name}`, 1e-6, 1e-4);
      model.dispose();
    });
  });

  it("one-direction 'last' and 'final' agree; unbatched, time-major and async give the same; wrong targets are refused", async () => {
    const a = make('uni_last', ENGINES[0]);
    const b = new SequenceModel({ inputSize: 3, hiddenSize: 5, numLayers: 2, batchFirst: true, outputSize: 3, outputMode: 'final', backend: ENGINES[0].backend }).loadStateDict(a.stateDict());
    const x = all['uni_last.x'];
    const lengths = [6, 3, 1, 5];
    expect(b.forward(x, { lengths }).output).toEqual(a.forward(x, { lengths }).output);
    expect((await a.forwardAsync(x, { lengths })).output).toEqual(a.forward(x, { lengths }).output);
    // the second sequence alone, unbatched: [O]
    const one = { data: x.data.slice(6 * 3, 6 * 3 + 3 * 3), shape: [3, 3] };
    const single = a.forward(one).output;
    expect(single.shape).toEqual([3]);
    expectClose(single, { data: a.forward(x, { lengths }).output.data.slice(3, 6), shape: [3] }, 'unbatched');
    const tm = new SequenceModel({ inputSize: 3, hiddenSize: 5, numLayers: 2, outputSize: 3, outputMode: 'last', backend: ENGINES[0].backend }).loadStateDict(a.stateDict());
    const xt = { data: new Float32Array(x.data.length), shape: [6, 4, 3] };
    for (let bb = 0; bb < 4; bb++) for (let t = 0; t < 6; t++) xt.data.set(x.data.subarray((bb * 6 + t) * 3, (bb * 6 + t + 1) * 3), (t * 4 + bb) * 3);
    expect(tm.forward(xt, { lengths }).output).toEqual(a.forward(x, { lengths }).output);
    const optimizer = new SGD(a.parameters(), { lr: 0.1 });
    expect(() => a.trainStep(x, { data: new Float32Array(4 * 6 * 3), shape: [4, 6, 3] }, { optimizer })).toThrow(expect.objectContaining({ code: 'LSTM_SHAPE', message: expect.stringMatching(/target: expected \[4, 3\]/) }));
    await expect(a.fit({ x, y: { data: new Float32Array(4 * 6 * 3), shape: [4, 6, 3] } }, { optimizer, worker: false })).rejects.toMatchObject({ code: 'LSTM_SHAPE', message: expect.stringMatching(/data\.y: expected \[4, O\] \(one target per sequence: outputMode 'last'\)/) });
    await expect(a.fit({ x, y: { data: new Float32Array(12), shape: [4, 3] } }, { optimizer, tbptt: 2, worker: false })).rejects.toMatchObject({ code: 'LSTM_OPTION', message: expect.stringMatching(/only the last window has a target/) });
    expect(() => new SequenceModel({ inputSize: 1, hiddenSize: 2, outputSize: 1, outputMode: 'first' as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(/outputMode/) }));
    // a sequence classifier forecasts too: its one prediction per sequence fed back in
    const f = new SequenceModel({ inputSize: 2, hiddenSize: 4, outputSize: 2, outputMode: 'final', seed: 3, backend: ENGINES[0].backend });
    const ctx = { data: Float32Array.from({ length: 10 }, (_, i) => Math.sin(i)), shape: [5, 2] };
    const ahead = f.forecast(ctx, 3);
    expect(ahead.shape).toEqual([3, 2]);
    expect(Array.from(ahead.data.subarray(0, 2))).toEqual(Array.from(f.forward(ctx).output.data));
    for (const m of [a, b, tm, f]) m.dispose();
  });

  it("fit with one target per sequence: a classifier learns, and the worker gives the same bits", async () => {
    // sign of the sum of a sequence's values (lengths vary): a class per sequence
    const rand = mulberry32(77);
    const N = 48, T = 8;
    const x = { data: new Float32Array(N * T), shape: [N, T, 1] };
    const lengths = Array.from({ length: N }, () => 2 + Math.floor(rand() * 7));
    const y = { data: new Float32Array(N), shape: [N] };
    for (let n = 0; n < N; n++) {
      let sum = 0;
      for (let t = 0; t < lengths[n]; t++) sum += x.data[n * T + t] = rand() * 2 - 1;
      y.data[n] = sum > 0 ? 1 : 0;
    }
    const run = async (worker: boolean) => {
      const model = new SequenceModel({ inputSize: 1, hiddenSize: 12, outputSize: 2, batchFirst: true, outputMode: 'last', seed: 8, backend: 'native', threads: 1 });
      const r = await model.fit({ x, y, lengths }, { optimizer: new Adam(model.parameters(), { lr: 0.03 }), loss: 'crossEntropy', epochs: 25, batchSize: 16, seed: 2, worker, validation: { x, y, lengths } });
      return { model, r };
    };
    const a = await run(false);
    expect(a.r.history.at(-1)!.valLoss!).toBeLessThan(0.5 * a.r.history[0].valLoss!);
    const pred = a.model.forward(x, { lengths }).output;
    let right = 0;
    for (let n = 0; n < N; n++) right += Number((pred.data[n * 2 + 1] > pred.data[n * 2] ? 1 : 0) === y.data[n]);
    expect(right / N).toBeGreaterThan(0.8);
    const b = await run(true);
    expect(b.r.history).toEqual(a.r.history);
    expect(b.model.stateDict()).toEqual(a.model.stateDict());
  });
});

describe('learning-rate schedules: torch.optim.lr_scheduler\'s rates', () => {
  // test/fixtures/torch-optim/schedules.py: each scheduler's lr after construction and after
  // each of 40 step() calls (ReduceLROnPlateau fed a loss that improves, stalls within the
  // threshold and rises), from PyTorch 1.13.
  const sched = JSON.parse(readFileSync(path.join(FIXTURES, 'torch-optim', 'schedules.json'), 'utf8')) as {
    steps: number;
    metric: number[];
    cases: { scheduler: string; lr: number; options: Record<string, unknown>; optimizer: string; lrs: number[]; momenta: (number | null)[] }[];
  };
  // PyTorch's option names as ours
  const OURS: Record<string, string> = {
    step_size: 'stepSize', T_max: 'tMax', eta_min: 'etaMin', threshold_mode: 'thresholdMode', min_lr: 'minLr', start_factor: 'startFactor', end_factor: 'endFactor',
    total_iters: 'totalIters', T_0: 't0', T_mult: 'tMult', max_lr: 'maxLr', total_steps: 'totalSteps', steps_per_epoch: 'stepsPerEpoch', pct_start: 'pctStart',
    anneal_strategy: 'annealStrategy', cycle_momentum: 'cycleMomentum', base_momentum: 'baseMomentum', max_momentum: 'maxMomentum', div_factor: 'divFactor',
    final_div_factor: 'finalDivFactor', three_phase: 'threePhase',
  };
  const ours = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [OURS[k] ?? k, v]));
  const param = () => [{ name: 'w', value: new Float32Array(1), grad: new Float32Array(1), shape: [1] }];
  const optimizerOf = (kind: string, lr: number) =>
    kind === 'sgd' ? new SGD(param(), { lr }) : kind === 'sgd_momentum' ? new SGD(param(), { lr, momentum: 0.9 }) : kind === 'adam' ? new Adam(param(), { lr }) : kind === 'rmsprop_momentum' ? new RMSprop(param(), { lr, momentum: 0.5 }) : new Adagrad(param(), { lr });
  const momentumOf = (o: unknown) => ('betas' in (o as object) ? (o as Adam).betas[0] : 'momentum' in (o as object) ? (o as SGD).momentum : null);
  it.each(sched.cases.map((c) => [`${c.scheduler} ${JSON.stringify(c.options)} on ${c.optimizer}`, c] as const))('%s', (_label, c) => {
    const optimizer = optimizerOf(c.optimizer, c.lr);
    const config =
      c.scheduler === 'SequentialLR'
        ? { name: c.scheduler, milestones: c.options.milestones, schedulers: (c.options.schedulers as { name: string; options: Record<string, unknown> }[]).map((k) => ({ name: k.name, ...ours(k.options) })) }
        : { name: c.scheduler, ...ours(c.options) };
    const scheduler = lib.schedulerFromConfig(optimizer, config);
    const lrs = [optimizer.lr];
    const momenta = [momentumOf(optimizer)];
    // Halfway, the scheduler's config and state (through JSON) continue on a second
    // optimizer with the same rate and momentum: both then take the same steps.
    const again = optimizerOf(c.optimizer, 1);
    let resumed: InstanceType<typeof lib.LRScheduler> | null = null;
    for (let t = 0; t < sched.steps; t++) {
      optimizer.step();
      scheduler.step(sched.metric[t]);
      lrs.push(optimizer.lr);
      momenta.push(momentumOf(optimizer));
      if (resumed) {
        resumed.step(sched.metric[t]);
        expect(again.lr, `resumed at step ${t}`).toBe(optimizer.lr);
        expect(momentumOf(again)).toBe(momentumOf(optimizer));
      } else if (t === sched.steps / 2) {
        again.lr = optimizer.lr;
        if ('momentum' in again) (again as SGD).momentum = (optimizer as SGD).momentum;
        if ('betas' in again) (again as Adam).betas = (optimizer as Adam).betas;
        resumed = lib.schedulerFromConfig(again, JSON.parse(JSON.stringify(scheduler.config)), JSON.parse(JSON.stringify(scheduler.state())));
        expect(again.lr).toBe(optimizer.lr);
      }
    }
    expect(resumed).not.toBeNull();
    // Cosines: V8's Math.cos and the C library's (Python's) may
    // differ in the last bit, and the chained forms carry that on.
    const inexact = JSON.stringify(c).match(/Cosine|OneCycle/) !== null;
    for (const [got, want, what] of [[lrs, c.lrs, 'lr'], [momenta, c.momenta, 'momentum']] as const) {
      if (inexact) got.forEach((v, i) => expect(Math.abs(v! - want[i]!), `${what} at step ${i}: ${v} vs ${want[i]}`).toBeLessThanOrEqual(8 * Number.EPSILON * Math.abs(want[i]!)));
      else expect(got).toEqual(want);
    }
  });

  it('options and calls it refuses', () => {
    const optimizer = new SGD(param(), { lr: 0.1 });
    const code = (fn: () => unknown, re: RegExp) => expect(fn).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(re) }));
    code(() => new lib.StepLR(optimizer, { stepSize: 0 }), /stepSize: expected a positive integer/);
    code(() => new lib.ExponentialLR(optimizer, {} as never), /gamma/);
    code(() => new lib.MultiStepLR(optimizer, { milestones: [1, -2] }), /milestones/);
    code(() => new lib.CosineAnnealingLR(optimizer, { tMax: 1.5 }), /tMax/);
    code(() => new lib.ReduceLROnPlateau(optimizer, { factor: 1 }), /factor: expected a number in \[0, 1\)/);
    code(() => new lib.ReduceLROnPlateau(optimizer, { mode: 'lowest' as never }), /mode/);
    code(() => new lib.ReduceLROnPlateau(optimizer).step(), /expected the epoch's metric/);
    code(() => new lib.StepLR({} as never, { stepSize: 2 }), /expected an optimizer/);
    code(() => lib.schedulerFromConfig(optimizer, { name: 'CyclicLR' }), /unknown kind/);
    code(() => new lib.LinearLR(optimizer, { startFactor: 0 }), /startFactor: expected a number in \(0, 1\]/);
    code(() => new lib.ConstantLR(optimizer, { factor: 1.5 }), /factor/);
    code(() => new lib.PolynomialLR(optimizer, { totalIters: 0 }), /totalIters/);
    code(() => new lib.CosineAnnealingWarmRestarts(optimizer, { t0: 3, tMult: 1.5 }), /tMult/);
    code(() => new lib.OneCycleLR(optimizer, {} as never), /maxLr/);
    code(() => new lib.OneCycleLR(optimizer, { maxLr: 0.1 }), /give totalSteps, or epochs and stepsPerEpoch/);
    code(() => new lib.OneCycleLR(optimizer, { maxLr: 0.1, totalSteps: 5, annealStrategy: 'exp' as never }), /annealStrategy/);
    code(() => new lib.OneCycleLR(new Adagrad(param(), {}), { maxLr: 0.1, totalSteps: 5 }), /cycleMomentum needs an optimizer with a momentum or betas/);
    code(() => new lib.OneCycleLR(new Adam(param(), {}), { maxLr: 0.1, totalSteps: 5, maxMomentum: 1 }), /first beta must stay below 1/);
    code(() => new lib.OneCycleLR(optimizer, { maxLr: 0.1, totalSteps: 10, pctStart: 0.1 }), /pctStart 0.1 with totalSteps 10 leaves phase 1 of the cycle no steps/);
    code(() => new lib.OneCycleLR(optimizer, { maxLr: 0.1, totalSteps: 10, pctStart: 1 }), /leaves phase 2/);
    const short = new lib.OneCycleLR(new SGD(param(), { lr: 0.1 }), { maxLr: 0.1, totalSteps: 2 });
    short.step();
    short.step();
    code(() => short.step(), /stepped 4 times, but totalSteps is 2/);
    const fresh = () => new SGD(param(), { lr: 0.1 });
    const o = fresh();
    code(() => new lib.SequentialLR(o, { schedulers: [new lib.StepLR(o, { stepSize: 2 }), new lib.StepLR(fresh(), { stepSize: 2 })], milestones: [3] }), /schedulers\[1\]: made for another optimizer/);
    code(() => new lib.SequentialLR(o, { schedulers: [new lib.StepLR(o, { stepSize: 2 }), new lib.ReduceLROnPlateau(o)], milestones: [3] }), /ReduceLROnPlateau cannot run inside SequentialLR/);
    code(() => new lib.SequentialLR(o, { schedulers: [new lib.StepLR(o, { stepSize: 2 })], milestones: [3] }), /milestones: expected 0 ascending/);
    code(() => new lib.SequentialLR(o, { schedulers: [], milestones: [] }), /non-empty array of schedulers/);
    code(() => (new SGD(param(), { lr: 0.1 }).momentum = -1), /momentum: expected a finite number >= 0, got -1/);
    code(() => (new Adam(param(), {}).betas = [0.9, 1]), /betas: expected two numbers in \[0, 1\)/);
    code(() => (optimizer.lr = NaN), /lr: expected a finite number >= 0, got NaN/);
    code(() => new SGD(param(), {} as never), /lr: expected a finite number >= 0, got undefined/);
    expect(() => new lib.StepLR(optimizer, { stepSize: 2 }).loadState({ lastEpoch: -1 } as never)).toThrow(expect.objectContaining({ code: 'LSTM_FORMAT' }));
  });
});

describe('dropout between layers while training (nn.LSTM(dropout=p))', () => {
  const { dropoutMasks } = require('../dist/cjs/train/bptt.js') as typeof import('../dist/cjs/train/bptt.js');
  const { Rng } = require('../dist/cjs/rng.js') as typeof import('../dist/cjs/rng.js');
  const options: LSTMOptions = { inputSize: 3, hiddenSize: 5, numLayers: 3, bidirectional: true, dropout: 0.4, seed: 11 };
  const x = randomTensor([6, 3, 3], mulberry32(4));

  it('the option: a probability in [0, 1), kept by optionsOf, and no masks for one layer or p = 0', () => {
    for (const bad of [-0.1, 1, 1.5, NaN, '0.2', true]) {
      expect(() => new LSTM({ inputSize: 1, hiddenSize: 2, dropout: bad as number })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    }
    const m = new LSTM(options);
    expect(m.config.dropout).toBe(0.4);
    expect(lib.optionsOf(m).dropout).toBe(0.4);
    expect(lib.optionsOf(new LSTM({ inputSize: 1, hiddenSize: 2 })).dropout).toBeUndefined();
    expect(dropoutMasks(new LSTM({ ...options, numLayers: 1 }).config, 10, () => new Rng(1))).toBeNull();
    expect(dropoutMasks(new LSTM({ ...options, dropout: 0 }).config, 10, () => new Rng(1))).toBeNull();
  });

  it('masks drop a share p of the elements and scale the rest by 1/(1-p)', () => {
    const m = new LSTM({ ...options, hiddenSize: 50 });
    const masks = dropoutMasks(m.config, 400, () => new Rng(7))!;
    expect(masks.length).toBe(2);
    for (const mask of masks) {
      expect(mask.length).toBe(400 * 2 * 50);
      const dropped = mask.filter((v) => v === 0).length / mask.length;
      expect(Math.abs(dropped - 0.4)).toBeLessThan(0.01);
      expect(mask.every((v) => v === 0 || v === Math.fround(1 / 0.6))).toBe(true);
    }
    // different layers draw different masks
    expect(masks[0]).not.toEqual(masks[1]);
  });

  it('forward never drops; forwardTrain drops unless asked not to, and each run draws new masks', () => {
    const m = new LSTM({ ...options, backend: 'js' });
    const plain = new LSTM({ ...options, dropout: 0, backend: 'js' });
    plain.loadStateDict(m.stateDict());
    const f = m.forward(x);
    expect(f.output.data).toEqual(plain.forward(x).output.data);
    expect(m.forwardTrain(x, { dropout: false }).output.data).toEqual(f.output.data);
    const a = m.forwardTrain(x).output.data;
    const b = m.forwardTrain(x).output.data;
    expect(a).not.toEqual(f.output.data);
    expect(a).not.toEqual(b);
    expect(() => m.forwardTrain(x, { dropout: 'yes' as unknown as boolean })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    // the same generator state gives the same masks
    const state = m.dropoutState;
    const c = m.forwardTrain(x).output.data;
    m.dropoutState = state;
    expect(m.forwardTrain(x).output.data).toEqual(c);
    expect(() => {
      m.dropoutState = [0, 0, 0, 0];
    }).toThrow(expect.objectContaining({ code: 'LSTM_FORMAT' }));
  });

  it('gradients through the masks: finite differences with the masks held fixed', () => {
    const m = new LSTM({ ...options, backend: 'js' });
    const state = m.dropoutState;
    const run = m.forwardTrain(x);
    const w = randomTensor(run.output.shape, mulberry32(5));
    const g = run.backward({ output: w });
    const sd = m.stateDict();
    const loss = (name: string, index: number, delta: number): number => {
      const p = sd[name].data.slice();
      p[index] += delta;
      m.loadStateDict({ ...sd, [name]: { data: p, shape: sd[name].shape } });
      m.dropoutState = state;
      const out = m.forwardTrain(x).output.data;
      let s = 0;
      for (let i = 0; i < out.length; i++) s += out[i] * w.data[i];
      return s;
    };
    let checked = 0;
    for (const name of ['weight_ih_l0', 'weight_hh_l0_reverse', 'bias_ih_l1', 'weight_ih_l2', 'weight_ih_l1_reverse']) {
      const grad = g.params[name].data;
      for (const index of [0, Math.floor(grad.length / 2), grad.length - 1]) {
        const fd = (loss(name, index, 1e-2) - loss(name, index, -1e-2)) / 2e-2;
        expect(Math.abs(fd - grad[index]), `${name}[${index}] fd ${fd} vs ${grad[index]}`).toBeLessThan(5e-3 + 2e-2 * Math.abs(fd));
        checked++;
      }
    }
    expect(checked).toBe(15);
    // and the input gradient, which passes every mask
    m.loadStateDict(sd);
    m.dropoutState = state;
    const dx = m.forwardTrain(x).backward({ output: w }).input.data;
    const xs = x.data.slice();
    const at = (i: number, delta: number) => {
      xs[i] = x.data[i] + delta;
      m.dropoutState = state;
      const out = m.forwardTrain({ data: xs, shape: x.shape }).output.data;
      xs[i] = x.data[i];
      return out.reduce((s, v, k) => s + v * w.data[k], 0);
    };
    for (const i of [0, 20, xs.length - 1]) {
      const fd = (at(i, 1e-2) - at(i, -1e-2)) / 2e-2;
      expect(Math.abs(fd - dx[i]), `input[${i}]`).toBeLessThan(5e-3 + 2e-2 * Math.abs(fd));
    }
  });

  it.each(ENGINES.filter((e) => e.backend !== 'js'))('$label draws the same masks as js and gives the same gradients', (engine) => {
    const js = new LSTM({ ...options, backend: 'js' });
    const other = withEngine(engine, () => new LSTM({ ...options, backend: engine.backend }));
    other.loadStateDict(js.stateDict());
    const ra = js.forwardTrain(x);
    const rb = other.forwardTrain(x);
    expectClose(rb.output, ra.output, 'output');
    const w = randomTensor(ra.output.shape, mulberry32(6));
    const ga = ra.backward({ output: w });
    const gb = rb.backward({ output: w });
    for (const [k, v] of Object.entries(ga.params)) expectClose(gb.params[k], v, k, 1e-4, 1e-3);
    expectClose(gb.input, ga.input, 'input', 1e-4, 1e-3);
    other.dispose();
  });

  it('a checkpoint resumes with the same masks: training on from it gives the same bits', () => {
    const make = () => new SequenceModel({ inputSize: 3, hiddenSize: 6, numLayers: 2, outputSize: 2, dropout: 0.3, seed: 8, backend: 'js' });
    const y = randomTensor([6, 3, 2], mulberry32(7));
    const a = make();
    const optA = new Adam(a.parameters(), { lr: 0.01 });
    for (let i = 0; i < 3; i++) a.trainStep(x, y, { optimizer: optA });
    const ckpt = a.saveCheckpoint(optA);
    const b = make();
    const optB = new Adam(b.parameters(), { lr: 0.01 });
    b.loadCheckpoint(ckpt, optB);
    const la = [0, 1, 2].map(() => a.trainStep(x, y, { optimizer: optA }));
    const lb = [0, 1, 2].map(() => b.trainStep(x, y, { optimizer: optB }));
    expect(lb).toEqual(la);
    expect(b.stateDict()).toEqual(a.stateDict());
    // without the generator's state the masks (and so the losses) would differ
    const c = make();
    const optC = new Adam(c.parameters(), { lr: 0.01 });
    const meta = lib.loadSafetensors(ckpt);
    delete meta.metadata.dropout_rng;
    c.loadCheckpoint(lib.saveSafetensors(meta.tensors, meta.metadata), optC);
    expect([0, 1, 2].map(() => c.trainStep(x, y, { optimizer: optC }))).not.toEqual(la);
  });
});

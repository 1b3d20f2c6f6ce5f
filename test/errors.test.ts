// Every error code, and the bad inputs the core issue lists, on both engines.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
// Each call must end in an LstmError with a stable code — never a crash — and the
// model must still answer correctly afterwards.
import { describe, expect, it } from 'vitest';
const require = createRequire(import.meta.url);
import { ENGINES, LSTM, LstmError, expectClose, lib, loadSafetensors, mulberry32, randomTensor, withEngine } from './helpers';

function expectCode(fn: () => unknown, code: string, message?: RegExp): LstmError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(LstmError);
    expect(err).toBeInstanceOf(Error);
    expect((err as LstmError).code).toBe(code);
    if (message) expect((err as Error).message).toMatch(message);
    return err as LstmError;
  }
  return expect.fail(`expected ${code} to be thrown`);
}

describe('LSTM_OPTION', () => {
  it.each([
    [{ inputSize: 0, hiddenSize: 4 }, /inputSize/],
    [{ inputSize: 3, hiddenSize: -1 }, /hiddenSize/],
    [{ inputSize: 3, hiddenSize: NaN }, /hiddenSize/],
    [{ inputSize: 3.5, hiddenSize: 4 }, /inputSize/],
    [{ inputSize: '3', hiddenSize: 4 }, /inputSize/],
    [{ inputSize: 3, hiddenSize: 2 ** 40 }, /hiddenSize/],
    [{ inputSize: 3, hiddenSize: 4, numLayers: 0 }, /numLayers/],
    [{ inputSize: 3, hiddenSize: 4, projSize: 4 }, /projSize/],
    [{ inputSize: 3, hiddenSize: 4, peephole: 'yes' }, /peephole/],
    [{ inputSize: 3, hiddenSize: 4, gateActivation: 'swish' }, /gateActivation/],
    [{ inputSize: 3, hiddenSize: 4, cellActivation: { name: 'hardSigmoid', alpha: NaN } }, /cellActivation.alpha/],
    [{ inputSize: 3, hiddenSize: 4, clip: -1 }, /clip/],
    [{ inputSize: 3, hiddenSize: 4, backend: 'gpu' }, /backend/],
    [{ inputSize: 3, hiddenSize: 4, bidirectional: true, direction: 'forward' }, /contradicts/],
    [{ inputSize: 3, hiddenSize: 4, hidden_size: 4 }, /unknown option/],
    [{ inputSize: 50000, hiddenSize: 50000 }, /2\^31/],
    [null, /options/],
  ])('%j', (opts, msg) => {
    expectCode(() => new LSTM(opts as never), 'LSTM_OPTION', msg);
  });

  it('a misspelt option of any call is LSTM_OPTION naming it: forward, training, loaders, export', async () => {
    const m = new LSTM({ inputSize: 2, hiddenSize: 3, seed: 1 });
    const x = { data: new Float32Array(4), shape: [2, 1, 2] };
    const h0 = { data: new Float32Array(3), shape: [1, 1, 3] };
    // h_0 would otherwise run silently from zeros
    expectCode(() => m.forward(x, { h_0: h0 } as never), 'LSTM_OPTION', /options: unknown option 'h_0' \(known: h0, c0, lengths, out\)/);
    expectCode(() => m.forwardTrain(x, { lenghts: [1] } as never), 'LSTM_OPTION', /unknown option 'lenghts'/);
    await expect(m.forwardAsync(x, { c_0: h0 } as never)).rejects.toMatchObject({ code: 'LSTM_OPTION' });
    const net = new lib.SequenceModel({ inputSize: 2, hiddenSize: 3, outputSize: 1, seed: 1 });
    const opt = new lib.Adam(net.parameters());
    expectCode(() => net.trainStep(x, { data: new Float32Array(2), shape: [2, 1, 1] }, { optimizer: opt, clipNorm: 1 } as never), 'LSTM_OPTION', /trainStep options: unknown option 'clipNorm'/);
    expect(net.trainStep(x, { data: new Float32Array(2), shape: [2, 1, 1] }, { optimizer: opt, clipGradNorm: 1, h0, lengths: [2] })).toBeGreaterThanOrEqual(0);
    expectCode(() => lib.exportOnnx(m, { opSet: 14 } as never), 'LSTM_OPTION', /exportOnnx options: unknown option 'opSet'/);
    const onnx = lib.exportOnnx(m);
    expectCode(() => lib.loadOnnx(onnx, { stackonly: true } as never), 'LSTM_OPTION', /loadOnnx options: unknown option 'stackonly'/);
    expectCode(() => m.loadStateDict(m.stateDict(), { Prefix: 'x' } as never), 'LSTM_OPTION', /unknown option 'Prefix'/);
    expectCode(() => lib.inferOptions(m.stateDict(), { prefx: '' } as never), 'LSTM_OPTION', /unknown option 'prefx'/);
    expectCode(() => LSTM.fromSafetensors(m.toSafetensors(), { backnd: 'js' } as never), 'LSTM_OPTION', /unknown option 'backnd'/);
    expectCode(() => lib.SequenceModel.fromStateDict(net.stateDict(), { Head: 'head.' } as never), 'LSTM_OPTION', /fromStateDict options: unknown option 'Head'/);
    const k = { kernel: { data: new Float32Array(24), shape: [2, 12] }, recurrentKernel: { data: new Float32Array(36), shape: [3, 12] } };
    expectCode(() => LSTM.fromKeras(k, { units: 3, go_backwards: true } as never), 'LSTM_OPTION', /fromKeras options: unknown option 'go_backwards'/);
    expectCode(() => LSTM.fromKerasFile(new Uint8Array(8), { logit: true } as never), 'LSTM_OPTION', /fromKerasFile options: unknown option 'logit'/);
    expectCode(() => LSTM.fromTfjs({}, new Uint8Array(0), { layer: ['a'] } as never), 'LSTM_OPTION', /fromTfjs options: unknown option 'layer'/);
    expectCode(() => LSTM.fromOnnx({ hiddenSize: 3, directon: 'reverse' } as never), 'LSTM_OPTION', /fromOnnx: unknown option 'directon'/);
    // training's helpers: a misspelt momentum, gamma or label smoothing would fall back to the default
    const p = net.parameters();
    expectCode(() => new lib.SGD(p, { lr: 0.1, momentun: 0.9 } as never), 'LSTM_OPTION', /SGD options: unknown option 'momentun'/);
    expectCode(() => new lib.AdamW(p, { beta: [0.9, 0.99] } as never), 'LSTM_OPTION', /AdamW options: unknown option 'beta'/);
    expectCode(() => new lib.RMSprop(p, { centred: true } as never), 'LSTM_OPTION', /RMSprop options: unknown option 'centred'/);
    expectCode(() => new lib.Adagrad(p, { lr_decay: 0.1 } as never), 'LSTM_OPTION', /Adagrad options: unknown option 'lr_decay'/);
    const sgd = new lib.SGD(p, { lr: 0.1 });
    expectCode(() => new lib.StepLR(sgd, { stepSize: 2, gama: 0.5 } as never), 'LSTM_OPTION', /StepLR options: unknown option 'gama'/);
    expectCode(() => new lib.OneCycleLR(sgd, { maxLr: 1, totalSteps: 10, pct_start: 0.3 } as never), 'LSTM_OPTION', /OneCycleLR options: unknown option 'pct_start'/);
    expectCode(() => new lib.ReduceLROnPlateau(sgd, { patients: 3 } as never), 'LSTM_OPTION', /ReduceLROnPlateau options: unknown option 'patients'/);
    const logits = { data: new Float32Array(2), shape: [1, 2] };
    expectCode(() => lib.crossEntropy(logits, [1], { labelSmoothin: 0.1 } as never), 'LSTM_OPTION', /loss options: unknown option 'labelSmoothin'/);
    expectCode(() => lib.mse(logits, logits, { lenghts: [1] } as never), 'LSTM_OPTION', /loss options: unknown option 'lenghts'/);
    expectCode(() => lib.SequenceModel.fromCheckpoint(net.saveCheckpoint(), { bakend: 'js' } as never), 'LSTM_OPTION', /fromCheckpoint options: unknown option 'bakend'/);
    // a scheduler rebuilt from its own config (as checkpoints and fit's worker do) passes
    lib.schedulerFromConfig(sgd, new lib.OneCycleLR(sgd, { maxLr: 1, totalSteps: 10 }).config);
    for (const d of [m, net]) d.dispose();
  });

  it('an invalid LSTM_BACKEND is reported, not ignored', () => {
    process.env.LSTM_BACKEND = 'cuda';
    try {
      expectCode(() => new LSTM({ inputSize: 2, hiddenSize: 2 }), 'LSTM_OPTION', /LSTM_BACKEND/);
    } finally {
      delete process.env.LSTM_BACKEND;
    }
  });
});

describe.each(ENGINES)('bad inputs on $label', (engine) => {
  const make = () => withEngine(engine, () => new LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 2, seed: 5, backend: engine.backend }));
  const rand = mulberry32(9);
  const x = randomTensor([5, 2, 3], rand);

  it('LSTM_SHAPE: wrong ranks, sizes and inconsistent shapes', () => {
    const m = make();
    const good = m.forward(x);
    const bad: [unknown, RegExp][] = [
      [{ data: new Float32Array(40), shape: [5, 2, 4] }, /x: expected \[T, B, I\] or unbatched \[T, I\] with I = 3, got \[5, 2, 4\]/],
      [{ data: new Float32Array(30), shape: [30] }, /x: expected/],
      [{ data: new Float32Array(30), shape: [5, 2, 3, 1] }, /x: expected/],
      [{ data: new Float32Array(29), shape: [5, 2, 3] }, /needs 30 elements/],
      [{ data: new Float32Array(0), shape: [0, 2, 3] }, /at least 1/],
      [{ data: new Float32Array(30), shape: [5, -2, 3] }, /non-negative integers/],
      [{ data: new Float32Array(30), shape: [5, 2.5, 3] }, /non-negative integers/],
      [{ data: new Float32Array(30), shape: [5, NaN, 3] }, /non-negative integers/],
      [{ data: new Float32Array(30), shape: [2 ** 20, 2 ** 20, 3] }, /more than/],
      [{ data: new Float32Array(30), shape: [2 ** 53, 2 ** 53, 3] }, /non-negative integers|more than/],
      [{ data: new Float32Array(30), shape: '5,2,3' }, /shape/],
      [null, /x: expected a tensor/],
      [new Float32Array(30), /shape/],
    ];
    for (const [input, msg] of bad) expectCode(() => m.forward(input as never), 'LSTM_SHAPE', msg);
    // states and lengths
    expectCode(() => m.forward(x, { h0: { data: new Float32Array(8), shape: [1, 2, 4] } }), 'LSTM_SHAPE', /h0: expected \[2, 2, 4\]/);
    expectCode(() => m.forward(x, { c0: { data: new Float32Array(16), shape: [2, 4, 2] } }), 'LSTM_SHAPE', /c0/);
    for (const lengths of [['2', 3], [0, 5], [6, 1], [1.5, 2], [NaN, 2], [1], [1, 2, 3], 'ab', 5, [-1, 2]]) {
      expectCode(() => m.forward(x, { lengths: lengths as never }), 'LSTM_SHAPE', /lengths/);
    }
    // A detached buffer reads as an empty array.
    const detached = new Float32Array(30);
    structuredClone(detached.buffer, { transfer: [detached.buffer] });
    expectCode(() => m.forward({ data: detached, shape: [5, 2, 3] }), 'LSTM_SHAPE', /detached/);
    // the model is intact
    expectClose(m.forward(x).output, good.output, 'after errors');
  });

  it('LSTM_DTYPE: data that is not a Float32Array', () => {
    const m = make();
    expectCode(() => m.forward({ data: new Float64Array(30) as never, shape: [5, 2, 3] }), 'LSTM_DTYPE', /Float32Array/);
    expectCode(() => m.forward({ data: Array(30).fill(0) as never, shape: [5, 2, 3] }), 'LSTM_DTYPE', /Float32Array/);
    expectCode(() => m.forward(x, { h0: { data: new Int32Array(16) as never, shape: [2, 2, 4] } }), 'LSTM_DTYPE', /h0/);
  });

  it('a shape read twice cannot differ: getters and Proxies that change their answer', () => {
    const m = make();
    const ref = m.forward(x);
    // Answers honestly `honest` times, then claims a huge first dimension: every read after
    // the check would see 1e7 steps (or rows) over 30 elements of data.
    const lying = (shape: number[], honest: number) => {
      let reads = 0;
      return new Proxy(shape.slice(), { get: (t, k, r) => (k === '0' ? (reads++ < honest ? t[0] : 1e7) : Reflect.get(t, k, r)) });
    };
    for (let honest = 1; honest <= 4; honest++) {
      const r = m.forward({ data: x.data, shape: lying([5, 2, 3], honest) });
      expect(r.output.shape).toEqual([5, 2, 4]);
      expectClose(r.output, ref.output, `honest ${honest} reads`);
      let gets = 0;
      const viaGetter = { data: x.data, get shape() { return gets++ === 0 ? [5, 2, 3] : [1e7, 2, 3]; } };
      expectClose(m.forward(viaGetter).output, ref.output, 'getter');
      // A streaming step: the rows of x, the state's shapes and out's.
      const state = m.initialState(2);
      const out = { data: new Float32Array(8), shape: lying([2, 4], honest) };
      const y = m.step({ data: x.data.subarray(0, 6), shape: lying([2, 3], honest) }, { h: { data: state.h.data, shape: lying([2, 2, 4], honest) }, c: state.c }, out);
      expect(y.data).toBe(out.data);
      const plain = m.initialState(2);
      expect(Array.from(m.step({ data: x.data.subarray(0, 6), shape: [2, 3] }, plain).data)).toEqual(Array.from(out.data));
    }
    // A shape with a vast length is refused before anything walks it.
    const vast: number[] = [];
    vast.length = 2 ** 32 - 1;
    expectCode(() => m.forward({ data: x.data, shape: vast }), 'LSTM_SHAPE', /x\.shape: expected at most 64 dimensions, got 4294967295/);
  });

  it('SharedArrayBuffer-backed and offset views are read correctly', () => {
    const m = make();
    const ref = m.forward(x);
    const shared = new Float32Array(new SharedArrayBuffer(30 * 4));
    shared.set(x.data);
    expectClose(m.forward({ data: shared, shape: [5, 2, 3] }).output, ref.output, 'shared');
    const big = new Float32Array(40);
    big.set(x.data, 7);
    expectClose(m.forward({ data: big.subarray(7, 37), shape: [5, 2, 3] }).output, ref.output, 'offset view');
  });

  it('LSTM_WEIGHTS: missing, unknown and misshapen tensors; a failed load changes nothing', () => {
    const m = make();
    const before = m.forward(x);
    const sd = m.stateDict();
    const other = withEngine(engine, () => new LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 2, seed: 6, backend: engine.backend }));
    const changed = other.stateDict();
    const { weight_hh_l1: _dropped, ...missing } = changed;
    expectCode(() => m.loadStateDict(missing), 'LSTM_WEIGHTS', /missing tensors: weight_hh_l1/);
    expectCode(() => m.loadStateDict({ ...changed, extra: changed.bias_ih_l0 }), 'LSTM_WEIGHTS', /unexpected tensors for this configuration: extra/);
    expectCode(() => m.loadStateDict({ ...changed, weight_ih_l0: { data: new Float32Array(12 * 16), shape: [12, 16] } }), 'LSTM_WEIGHTS', /expected shape \[16, 3\]/);
    expectCode(() => m.loadStateDict({ ...changed, bias_ih_l1: { data: new Float64Array(16), shape: [16] } as never }), 'LSTM_DTYPE');
    expectCode(() => m.loadStateDict(null as never), 'LSTM_WEIGHTS');
    expectClose(m.forward(x).output, before.output, 'after failed loads');
    expect(m.stateDict()).toEqual(sd);
    // non-strict ignores missing and unknown names but never wrong shapes
    m.loadStateDict({ weight_hh_l1: changed.weight_hh_l1, unrelated: changed.bias_hh_l0 }, { strict: false });
    expect(m.stateDict().weight_hh_l1).toEqual(changed.weight_hh_l1);
    expect(m.stateDict().weight_hh_l0).toEqual(sd.weight_hh_l0);
  });

  it('LSTM_DISPOSED: every call after dispose; dispose is idempotent', () => {
    const m = make();
    m.dispose();
    m.dispose();
    expectCode(() => m.forward(x), 'LSTM_DISPOSED');
    expectCode(() => m.stateDict(), 'LSTM_DISPOSED');
    expectCode(() => m.loadStateDict({}), 'LSTM_DISPOSED');
  });
});

describe('LSTM_FORMAT', () => {
  it('malformed safetensors', () => {
    expectCode(() => loadSafetensors(new Uint8Array([1, 2, 3])), 'LSTM_FORMAT', /shorter/);
    expectCode(() => loadSafetensors('abc' as never), 'LSTM_FORMAT');
  });

  it('an ONNX activation that does not exist, or a list of the wrong length', () => {
    const H = 2;
    const W = { data: new Float32Array(4 * H * 3), shape: [1, 4 * H, 3] };
    const R = { data: new Float32Array(4 * H * H), shape: [1, 4 * H, H] };
    expectCode(() => LSTM.fromOnnx({ W, R, hiddenSize: H, activations: ['Swish', 'Tanh', 'Tanh'] }), 'LSTM_FORMAT', /Swish/);
    const W2 = { data: new Float32Array(2 * 4 * H * 3), shape: [2, 4 * H, 3] };
    const R2 = { data: new Float32Array(2 * 4 * H * H), shape: [2, 4 * H, H] };
    expectCode(
      () => LSTM.fromOnnx({ W: W2, R: R2, hiddenSize: H, direction: 'bidirectional', activations: ['Sigmoid', 'Tanh', 'Tanh'] }),
      'LSTM_FORMAT',
      /expected 6 names \(f, g, h per direction\)/,
    );
    // six that differ per direction are the reverse direction's own (see onnx.test.ts)
    const six = LSTM.fromOnnx({ W: W2, R: R2, hiddenSize: H, direction: 'bidirectional', activations: ['Sigmoid', 'Tanh', 'Tanh', 'Sigmoid', 'Relu', 'Tanh'] });
    expect(six.config.reverseActivations?.cell).toMatchObject({ name: 'relu' });
    expect(six.config.cellActivation).toMatchObject({ name: 'tanh' });
    expectCode(() => LSTM.fromOnnx({ W, R: W, hiddenSize: H }), 'LSTM_WEIGHTS', /R: expected/);
  });
});

describe('LSTM_NATIVE and the native layer itself', () => {
  it("backend 'native' without a binary throws LSTM_NATIVE with the reason (child process)", async () => {
    const { runWithoutBinary } = await import('./no-binary');
    const out = runWithoutBinary(`
      const { LSTM, backendInfo } = require(process.argv[1]);
      const info = backendInfo();
      let code = null, message = '';
      try { new LSTM({ inputSize: 2, hiddenSize: 3, backend: 'native' }); } catch (e) { code = e.code; message = e.message; }
      const auto = new LSTM({ inputSize: 2, hiddenSize: 3, seed: 1 });
      const r = auto.forward({ data: new Float32Array(8).fill(0.5), shape: [4, 1, 2] });
      console.log(JSON.stringify({ info, code, message, backend: auto.backend, finite: r.output.data.every(Number.isFinite) }));
    `);
    expect(out.info.native).toBe(false);
    expect(out.info.reason).toMatch(/no native binary/);
    expect(out.info.reason).toMatch(/npx lstm-native rebuild/);
    expect(out.code).toBe('LSTM_NATIVE');
    expect(out.message).toMatch(/no native binary/);
    expect(out.backend).toBe('js');
    expect(out.finite).toBe(true);
  });

  it('a Stepper holds its layers weakly: once collected, its step throws LSTM_DISPOSED (child process)', () => {
    if (!lib.backendInfo().native) return expect(process.env.LSTM_EXPECT_NATIVE).toBe('0');
    const script = `
      const { loadNative } = require('./dist/cjs/native/loader.js');
      const addon = loadNative().addon;
      const act = { kind: 0, alpha: 0, beta: 0 };
      const desc = { inputSize: 2, hiddenSize: 3, projSize: 0, numDirections: 1, reverse: false, bias: false, peephole: 0, gate: act, cell: { ...act, kind: 1 }, hidden: { ...act, kind: 1 }, clip: 0, coupled: false, isa: '' };
      const f = (n) => new Float32Array(n);
      const stepper = new addon.Stepper([new addon.Layer(desc, [{ wIh: f(24), wHh: f(36) }])]);
      stepper.step(f(2), 1, f(3), f(3), f(3), 1);
      (async () => {
        for (let i = 0; i < 6; i++) { global.gc(); await new Promise((r) => setImmediate(r)); }
        let code = null;
        try { stepper.step(f(2), 1, f(3), f(3), f(3), 1); } catch (e) { code = e.code; }
        console.log(JSON.stringify({ code }));
      })();
    `;
    const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], { cwd: path.resolve(__dirname, '..'), encoding: 'utf8' });
    expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual({ code: 'LSTM_DISPOSED' });
  });

  it('worker_threads terminated, and the process exiting, with forwardAsync calls in flight (child processes)', () => {
    if (!lib.backendInfo().native) return expect(process.env.LSTM_EXPECT_NATIVE).toBe('0');
    // The workers are the addon's only users: each one's end unloads the library unless it
    // keeps itself loaded, while its calls are still running on the pool's threads. Each is
    // terminated a little later than the one before, so the calls are at different stages.
    const workers = `
      const { Worker } = require('node:worker_threads');
      const code = \`
        const lib = require(\${JSON.stringify(process.cwd() + '/dist/cjs/index.js')});
        const m = new lib.LSTM({ inputSize: 256, hiddenSize: 256, numLayers: 2, seed: 1, backend: 'native', threads: 2 });
        const x = { data: new Float32Array(100 * 32 * 256).fill(0.1), shape: [100, 32, 256] };
        for (let i = 0; i < 4; i++) m.forwardAsync(x);
        require('node:worker_threads').parentPort.postMessage('started');
      \`;
      let n = 0;
      const one = () => {
        const w = new Worker(code, { eval: true });
        w.on('message', () => setTimeout(() => w.terminate().then(() => (++n < 6 ? one() : console.log('terminated ' + n))), n * 5));
      };
      one();
    `;
    const opts = { cwd: path.resolve(__dirname, '..'), encoding: 'utf8' as const, timeout: 120_000 };
    expect(execFileSync(process.execPath, ['-e', workers], opts).trim()).toBe('terminated 6');
    // process.exit while calls run on libuv's and the pool's threads
    const exits = `
      const lib = require('./dist/cjs/index.js');
      const m = new lib.LSTM({ inputSize: 256, hiddenSize: 256, numLayers: 2, seed: 1, backend: 'native', threads: 2 });
      const x = { data: new Float32Array(100 * 32 * 256).fill(0.1), shape: [100, 32, 256] };
      for (let i = 0; i < 4; i++) m.forwardAsync(x);
      setTimeout(() => { console.log('exiting'); process.exit(0); }, Number(process.argv[1]));
    `;
    for (const delay of ['0', '3', '15']) expect(execFileSync(process.execPath, ['-e', exits, delay], opts).trim()).toBe('exiting');
  });

  it('the addon re-validates every argument (the second line of defence)', () => {
    const { loadNative } = require('../dist/cjs/native/loader.js') as typeof import('../dist/cjs/native/loader.js');
    const addon = loadNative().addon;
    if (!addon) return expect(process.env.LSTM_EXPECT_NATIVE).toBe('0');
    const act = { kind: 0, alpha: 0, beta: 0 };
    const desc = { inputSize: 2, hiddenSize: 3, projSize: 0, numDirections: 1, reverse: false, bias: false, peephole: 0, gate: act, cell: { ...act, kind: 1 }, hidden: { ...act, kind: 1 }, clip: 0, coupled: false, isa: '' };
    const dirs = [{ wIh: new Float32Array(24), wHh: new Float32Array(36) }];
    const layer = new addon.Layer(desc, dirs);
    const f = (n: number) => new Float32Array(n);
    // forward(layers, x, T, B, h0, c0, lengths, y, hn, cn, threads)
    const args = (): unknown[] => [[layer], f(8), 4, 1, f(3), f(3), null, f(12), f(3), f(3), 1];
    const codeOf = (fn: () => unknown): unknown => {
      try {
        fn();
      } catch (err) {
        return (err as { code?: string }).code;
      }
      return undefined;
    };
    const call = (a: unknown[]) => codeOf(() => (addon.forward as (...xs: unknown[]) => void)(...a));
    expect(call(args())).toBeUndefined();
    const cases: [number, unknown, string][] = [
      [0, [], 'LSTM_OPTION'],
      [0, [{}], 'LSTM_OPTION'],
      [0, 'layer', 'LSTM_OPTION'],
      // an object with the Layer prototype that the constructor never made
      [0, [Object.create(addon.Layer.prototype)], 'LSTM_OPTION'],
      [1, f(7), 'LSTM_SHAPE'],
      [1, new Float64Array(8), 'LSTM_DTYPE'],
      [2, -1, 'LSTM_SHAPE'],
      [2, 2 ** 31, 'LSTM_SHAPE'],
      [2, NaN, 'LSTM_SHAPE'],
      [3, 1.5, 'LSTM_SHAPE'],
      [3, 'x', 'LSTM_SHAPE'],
      [3, 2 ** 30, 'LSTM_SHAPE'],
      [6, new Int32Array([5]), 'LSTM_SHAPE'],
      [6, new Int32Array([0]), 'LSTM_SHAPE'],
      [6, new Int32Array([1, 2]), 'LSTM_SHAPE'],
      [6, new Float32Array([1]), 'LSTM_DTYPE'],
      [7, f(11), 'LSTM_SHAPE'],
      [9, {}, 'LSTM_DTYPE'],
      [10, 0, 'LSTM_SHAPE'],
    ];
    for (const [i, value, code] of cases) {
      const a = args();
      a[i] = value;
      expect(call(a), `argument ${i} = ${String(value)}`).toBe(code);
    }
    // layers that do not chain
    const wide = new addon.Layer({ ...desc, inputSize: 5 }, [{ wIh: f(60), wHh: f(36) }]);
    const a = args();
    a[0] = [layer, wide];
    expect(call(a)).toBe('LSTM_OPTION');
    // a Packed matrix's prototype without its constructor, for the GEMMs
    const fake = Object.create(addon.Packed.prototype);
    expect(codeOf(() => (addon.gemmNT as (...xs: unknown[]) => void)(1, f(2), fake, f(2), false, '', 1))).toBe('LSTM_OPTION');
    // stepping a bidirectional layer
    const bi = new addon.Layer({ ...desc, numDirections: 2 }, [dirs[0], dirs[0]]);
    expect(codeOf(() => addon.step([bi], f(2), 1, f(6), f(6), f(6), 1))).toBe('LSTM_OPTION');
    // a Stepper binds its layers once: checked when made, re-checked when they change
    expect(codeOf(() => new addon.Stepper([bi]))).toBe('LSTM_OPTION');
    expect(codeOf(() => new addon.Stepper([]))).toBe('LSTM_OPTION');
    expect(codeOf(() => new addon.Stepper([Object.create(addon.Layer.prototype)]))).toBe('LSTM_OPTION');
    expect(codeOf(() => new addon.Stepper([layer, wide]))).toBe('LSTM_OPTION');
    const own = new addon.Layer(desc, dirs);
    const stepper = new addon.Stepper([own]);
    const stepArgs = (): unknown[] => [f(2), 1, f(3), f(3), f(3), 1];
    const stepCall = (a: unknown[], target: unknown = stepper) => codeOf(() => (stepper.step as (...xs: unknown[]) => void).apply(target, a));
    expect(stepCall(stepArgs())).toBeUndefined();
    expect(stepCall(stepArgs().slice(0, 5))).toBe('LSTM_OPTION');
    for (const [i, value, code] of [[0, f(3), 'LSTM_SHAPE'], [1, 0, 'LSTM_SHAPE'], [2, new Int32Array(3), 'LSTM_DTYPE'], [4, 'out', 'LSTM_DTYPE'], [5, 0.5, 'LSTM_SHAPE']] as [number, unknown, string][]) {
      const a = stepArgs();
      a[i] = value;
      expect(stepCall(a), `step argument ${i}`).toBe(code);
    }
    const mem = f(12);
    expect(stepCall([mem.subarray(0, 2), 1, mem.subarray(2, 5), mem.subarray(5, 8), mem.subarray(8, 11), 1])).toBeUndefined();
    expect(stepCall([mem.subarray(0, 2), 1, mem.subarray(2, 5), mem.subarray(5, 8), mem.subarray(7, 10), 1])).toBe('LSTM_SHAPE');
    expect(stepCall([mem.subarray(0, 2), 1, mem.subarray(2, 5), mem.subarray(4, 7), mem.subarray(8, 11), 1])).toBe('LSTM_SHAPE');
    expect(codeOf(() => addon.step([own], mem.subarray(0, 2), 1, mem.subarray(2, 5), mem.subarray(5, 8), mem.subarray(1, 4), 1))).toBe('LSTM_SHAPE');
    // its method on anything but a Stepper the constructor made: a TypeError, not a crash
    const stepOn = (target: unknown) => () => (stepper.step as (...xs: unknown[]) => void).apply(target, stepArgs());
    expect(stepOn(Object.create(addon.Stepper.prototype))).toThrow(TypeError);
    expect(stepOn(own)).toThrow(TypeError);
    expect(stepOn({})).toThrow(TypeError);
    own.load(dirs);
    expect(stepCall(stepArgs())).toBeUndefined();
    own.dispose();
    expect(stepCall(stepArgs())).toBe('LSTM_DISPOSED');
    expect(() => new addon.Layer({ ...desc, hiddenSize: -3 }, dirs)).toThrow(/hiddenSize/);
    expect(() => new addon.Layer(desc, [{ wIh: f(23), wHh: f(36) }])).toThrow(/wIh/);
    expect(() => new addon.Layer({ ...desc, isa: 'sse9' }, dirs)).toThrow(/LSTM_ISA/);
    layer.dispose();
    expect(call(args())).toBe('LSTM_DISPOSED');
    expect(codeOf(() => addon.forwardAsync([layer], f(8), 4, 1, f(3), f(3), null, 1))).toBe('LSTM_DISPOSED');
    expect(lib.backendInfo().native).toBe(true);
  });
});

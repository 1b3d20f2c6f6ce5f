// Shared by the CI test (test/fuzz-api.test.ts) and `npm run fuzz` (scripts/fuzz.mjs):
// random and adversarial arguments to every public function.
import fc from 'fast-check';
import type * as Lib from '../../dist/cjs/index.js';

type L = typeof Lib;

export interface FuzzReport {
  cases: number;
  lstmErrors: number;
  results: number;
  byTarget: Record<string, number>;
  /** Calls that returned normally, per target. */
  okByTarget: Record<string, number>;
}

const ADVERSARIAL_NUMBERS = [0, 1, 2, 3, -1, 0.5, 1.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e308, -0, 64, 65536];

function detached(n: number): Float32Array {
  const a = new Float32Array(n);
  structuredClone(a.buffer, { transfer: [a.buffer] });
  return a;
}

/** Arbitraries for the library's argument kinds, valid and hostile mixed. */
function arbitraries() {
  const dim = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 6 }) }, { weight: 1, arbitrary: fc.constantFrom(...ADVERSARIAL_NUMBERS) });
  const shape = fc.oneof({ weight: 6, arbitrary: fc.array(dim, { minLength: 0, maxLength: 4 }) }, { weight: 1, arbitrary: fc.anything() });
  const floatData = fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: 48 }).map((n) => new Float32Array(n).map((_, i) => Math.sin(i))) },
    { weight: 1, arbitrary: fc.float32Array({ maxLength: 48 }) }, // NaN, Inf and friends
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 48 }).map((n) => detached(n)) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 0, max: 48 }).map((n) => {
        const a = new Float32Array(new SharedArrayBuffer(4 * n));
        a.fill(0.25);
        return a;
      }),
    },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 40 }).map((n) => new Float32Array(n + 8).subarray(3, 3 + n)) },
    { weight: 1, arbitrary: fc.constantFrom<unknown>(new Float64Array(12), new Int32Array(12), [1, 2, 3], 'abc', null, undefined, {}, new DataView(new ArrayBuffer(8))) },
  );
  const tensor = fc.oneof({ weight: 8, arbitrary: fc.record({ data: floatData, shape }) }, { weight: 1, arbitrary: fc.anything() });
  // A tensor consistent with its data, of the shapes the test model wants (so deeper code runs);
  // now and then its shape is a Proxy that answers honestly a few reads, then claims 2^20
  // for one dimension (what a second read after the check would see).
  const lying = (s: number[], honest: number, dim: number) => {
    let reads = 0;
    return new Proxy(s.slice(), { get: (t, k, r) => (k === String(dim) ? (reads++ < honest ? t[dim] : 2 ** 20) : Reflect.get(t, k, r)) });
  };
  const fitting = (shapes: number[][]) =>
    fc.tuple(fc.constantFrom(...shapes), fc.oneof({ weight: 12, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 3 }) }), fc.nat()).chain(([s, honest, dim]) => {
      const n = s.reduce((a, b) => a * b, 1);
      const shape = honest < 0 ? s : lying(s, honest, dim % s.length);
      return fc.float32Array({ minLength: n, maxLength: n, noDefaultInfinity: false }).map((data) => ({ data, shape }));
    });
  const lengths = fc.oneof(
    { weight: 6, arbitrary: fc.constant(undefined) },
    { weight: 2, arbitrary: fc.array(fc.integer({ min: 1, max: 2 }), { minLength: 3, maxLength: 3 }) },
    { weight: 1, arbitrary: fc.array(fc.constantFrom<unknown>(...ADVERSARIAL_NUMBERS, 1, 2, 5, 'x', null, 3n), { maxLength: 4 }) },
    { weight: 1, arbitrary: fc.anything() },
  );
  const maybe = <T,>(arb: fc.Arbitrary<T>) => fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });
  const oneActivation = fc.oneof(fc.constantFrom('sigmoid', 'tanh', 'relu', 'hardSigmoid', 'swish', '', null), fc.record({ name: fc.constantFrom('elu', 'hardSigmoid', 'nope'), alpha: fc.constantFrom(...ADVERSARIAL_NUMBERS), beta: fc.constantFrom(...ADVERSARIAL_NUMBERS) }));
  // one, a pair [forward, reverse], or an array of another length
  const activation = fc.oneof({ weight: 4, arbitrary: oneActivation }, { weight: 2, arbitrary: fc.tuple(oneActivation, oneActivation) }, { weight: 1, arbitrary: fc.array(oneActivation, { maxLength: 3 }) });
  const size = fc.oneof({ weight: 5, arbitrary: fc.integer({ min: 1, max: 9 }) }, { weight: 2, arbitrary: fc.constantFrom<unknown>(...ADVERSARIAL_NUMBERS, '4', null) });
  const options = fc.record(
    {
      inputSize: size,
      hiddenSize: size,
      numLayers: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.constantFrom<unknown>(0, -1, 1.5, NaN)),
      bias: fc.oneof(fc.boolean(), fc.anything()),
      batchFirst: fc.boolean(),
      bidirectional: fc.oneof(fc.boolean(), fc.constant('yes')),
      direction: fc.constantFrom('forward', 'reverse', 'bidirectional', 'sideways'),
      projSize: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.constantFrom<unknown>(-1, NaN)),
      peephole: fc.constantFrom('none', 'diagonal', 'full', 'both'),
      gateActivation: activation,
      cellActivation: activation,
      hiddenActivation: activation,
      clip: fc.oneof(fc.double(), fc.constant(undefined)),
      coupledInputForget: fc.boolean(),
      seed: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.constantFrom<unknown>(-1, NaN, 2 ** 60)),
      dropout: fc.oneof(fc.double(), fc.constantFrom<unknown>(undefined, '0.2', 1, null)),
      backend: fc.constantFrom('auto', 'js', 'native', 'gpu'),
      threads: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constantFrom<unknown>(0, 5000, NaN)),
      typo: fc.anything(),
    },
    { requiredKeys: [] },
  );
  const bytes = fc.oneof(fc.uint8Array({ maxLength: 256 }), fc.anything());
  const validOptions = fc.record(
    {
      inputSize: fc.integer({ min: 1, max: 6 }),
      hiddenSize: fc.integer({ min: 2, max: 9 }),
      numLayers: fc.integer({ min: 1, max: 3 }),
      bias: fc.boolean(),
      batchFirst: fc.boolean(),
      direction: fc.constantFrom('forward', 'reverse', 'bidirectional'),
      projSize: fc.constantFrom(0, 1),
      peephole: fc.constantFrom('none', 'diagonal', 'full'),
      cellActivation: fc.constantFrom('tanh', 'relu', 'softsign'),
      clip: fc.oneof(fc.constant(undefined), fc.double({ min: 0.1, max: 5, noNaN: true })),
      coupledInputForget: fc.boolean(),
      seed: fc.integer({ min: 0, max: 1000 }),
      dropout: fc.constantFrom(0, 0.3),
      threads: fc.integer({ min: 1, max: 4 }),
    },
    { requiredKeys: ['inputSize', 'hiddenSize'] },
  );
  return {
    validOptions, tensor, fitting, lengths, options, bytes, shape, maybe };
}

/**
 * Run `numRuns` random calls. `check` is called after every case with the sentinel
 * model, which must still give its reference output.
 */
export async function fuzzApi(lib: L, backend: 'js' | 'native', numRuns: number, seed: number): Promise<FuzzReport> {
  const { LSTM, LstmError } = lib;
  const a = arbitraries();
  const report: FuzzReport = { cases: 0, lstmErrors: 0, results: 0, byTarget: {}, okByTarget: {} };
  const model = new LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 2, seed: 1, backend });
  const stepper = new LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 2, seed: 1, backend, projSize: 2 });
  const refX = { data: new Float32Array(2 * 3 * 3).map((_, i) => Math.cos(i)), shape: [2, 3, 3] };
  const reference = model.forward(refX).output.data.slice();
  const dropper = new LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 3, dropout: 0.5, seed: 2, backend });
  const disposed = new LSTM({ inputSize: 3, hiddenSize: 4, backend });
  disposed.dispose();
  const goodShapes = [[2, 3, 3], [5, 3], [1, 1, 3], [2, 2, 4], [3, 2, 3]];

  const optimizerCall = fc
    .tuple(
      fc.constantFrom('SGD', 'Adam', 'AdamW', 'RMSprop', 'Adagrad'),
      fc.oneof(
        { weight: 9, arbitrary: fc.dictionary(fc.constantFrom('lr', 'momentum', 'dampening', 'nesterov', 'weightDecay', 'betas', 'eps', 'amsgrad', 'alpha', 'centered', 'lrDecay', 'initialAccumulatorValue'), fc.oneof(fc.constantFrom<unknown>(...ADVERSARIAL_NUMBERS, 0.5, 0.9, true, [0.9, 0.99]), fc.anything())) },
        { weight: 1, arbitrary: fc.constantFrom<unknown>(null, undefined, 3, 'x') },
      ),
    )
    .map(([kind, o]) => () => {
      const p = { name: 'w', value: new Float32Array([0.5, -1]), grad: new Float32Array([0.25, 2]), shape: [2] };
      const optimizer = new (lib as unknown as Record<string, new (ps: unknown, opts: unknown) => InstanceType<typeof lib.SGD>>)[kind]([p], o);
      optimizer.step();
      optimizer.step();
      return optimizer.config;
    });
  const scheduleCall = fc
    .tuple(
      fc.constantFrom<unknown>('StepLR', 'MultiStepLR', 'ExponentialLR', 'CosineAnnealingLR', 'ReduceLROnPlateau', 'LinearLR', 'ConstantLR', 'PolynomialLR', 'CosineAnnealingWarmRestarts', 'OneCycleLR', 'SequentialLR', 'CyclicLR', 3, null),
      fc.dictionary(
        fc.constantFrom('stepSize', 'gamma', 'milestones', 'tMax', 'etaMin', 'mode', 'factor', 'patience', 'threshold', 'thresholdMode', 'cooldown', 'minLr', 'eps', 'startFactor', 'endFactor', 'totalIters', 'power', 't0', 'tMult', 'maxLr', 'totalSteps', 'epochs', 'stepsPerEpoch', 'pctStart', 'annealStrategy', 'cycleMomentum', 'baseMomentum', 'maxMomentum', 'divFactor', 'threePhase', 'schedulers'),
        fc.oneof(fc.constantFrom<unknown>(...ADVERSARIAL_NUMBERS, 1, 2, 0.5, 'min', 'abs', 'linear', true, [1, 2], [{ name: 'StepLR', stepSize: 2 }, { name: 'LinearLR' }], [{ name: 'ReduceLROnPlateau' }]), fc.anything()),
      ),
      fc.anything(),
      fc.oneof(fc.constantFrom<unknown>(...ADVERSARIAL_NUMBERS), fc.anything()),
    )
    .map(([name, o, metric, lr]) => () => {
      const optimizer = new lib.SGD([{ name: 'w', value: new Float32Array(1), grad: new Float32Array(1), shape: [1] }], { lr: 0.1, momentum: 0.5 });
      const scheduler = lib.schedulerFromConfig(optimizer, { ...(o as object), name } as never);
      // each hostile call may be refused (an LstmError), and the scheduler carries on
      const guarded = (fn: () => void) => {
        try {
          fn();
        } catch (err) {
          if (!(err instanceof LstmError)) throw err;
        }
      };
      for (const m of [metric, 1, 0.5]) guarded(() => scheduler.step(m as never));
      guarded(() => (optimizer.lr = lr as never));
      guarded(() => scheduler.loadState(metric as never));
      scheduler.loadState(scheduler.state());
      scheduler.step(0.25);
      if (!Number.isFinite(optimizer.lr) || optimizer.lr < 0) throw new Error(`schedule: lr became ${optimizer.lr}`);
      if (!Number.isFinite(optimizer.momentum) || optimizer.momentum < 0) throw new Error(`schedule: momentum became ${optimizer.momentum}`);
    });
  const forecaster = new lib.SequenceModel({ inputSize: 3, hiddenSize: 4, numLayers: 2, outputSize: 3, seed: 3, backend });
  const forecastCall = fc
    .tuple(fc.oneof(a.tensor, a.fitting(goodShapes)), fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constantFrom<unknown>(...ADVERSARIAL_NUMBERS)), fc.oneof(fc.constant({}), fc.record({ h0: a.tensor, c0: a.tensor }, { requiredKeys: [] }), fc.anything()))
    .map(([x, horizon, o]) => () => forecaster.forecast(x as never, horizon as never, o as never));
  const targets: Record<string, fc.Arbitrary<() => unknown>> = {
    construct: a.options.map((o) => () => new LSTM(o as never)),
    constructValid: fc.tuple(a.validOptions, fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 3 })).map(([o, T, B]) => () => {
      const m = new LSTM({ ...o, backend });
      try {
        const I = m.config.inputSize;
        return m.forward({ data: new Float32Array(T * B * I).fill(0.5), shape: m.config.batchFirst ? [B, T, I] : [T, B, I] });
      } finally {
        m.dispose();
      }
    }),
    forward: fc.tuple(fc.oneof(a.tensor, a.fitting(goodShapes)), a.maybe(a.tensor), a.maybe(a.tensor), a.lengths).map(([x, h0, c0, lengths]) => () =>
      model.forward(x as never, { h0: h0 as never, c0: c0 as never, lengths: lengths as never }),
    ),
    forwardGoodStates: fc.tuple(a.fitting(goodShapes), a.fitting([[2, 3, 4], [2, 4], [2, 1, 4], [4, 3, 4]]), a.lengths).map(([x, h, lengths]) => () =>
      model.forward(x as never, { h0: h as never, c0: h as never, lengths: lengths as never }),
    ),
    // out tensors: fresh, views of one buffer that also holds x, h0 and c0 (sharing memory
    // with them or not), each other's memory, or any tensor; through forward or
    // forwardAsync. Where the call succeeds, its results must be those of a plain forward.
    forwardOut: fc.tuple(a.fitting(goodShapes), fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 3, maxLength: 3 }), a.tensor, fc.nat(), fc.boolean()).map(
      ([xArg, modes, junk, shift, async]) => () => {
        type T = { data: Float32Array; shape: number[] };
        const x = xArg as T;
        let want: { output: T; hn: T; cn: T };
        try {
          want = model.forward({ data: x.data.slice(), shape: x.shape });
        } catch {
          return model.forward(x as never, { out: { output: junk } as never });
        }
        // the states are as long as hn and cn, and get values of their own
        const state = (t: T, k: number) => ({ data: t.data.map((_, i) => Math.sin(i + k)), shape: t.shape });
        const h0 = state(want.hn, 1);
        const c0 = state(want.cn, 2);
        want = model.forward({ data: x.data.slice(), shape: x.shape }, { h0, c0 });
        const inputs = [x, h0, c0];
        const parts = [want.output, want.hn, want.cn];
        const total = (ts: T[]) => ts.reduce((n, t) => n + t.data.length, 0);
        const buf = new Float32Array(total(inputs) + total(parts));
        let at = 0;
        const [xv, hv, cv] = inputs.map((t) => {
          const v = buf.subarray(at, (at += t.data.length));
          v.set(t.data);
          return { data: v, shape: t.shape };
        });
        const outs = parts.map((t, i) => {
          const n = t.data.length;
          const from = shift % (buf.length - n + 1);
          switch (modes[i]) {
            case 0: return undefined;
            case 1: return { data: new Float32Array(n), shape: t.shape.slice() };
            case 2: return { data: buf.subarray(from, from + n), shape: t.shape.slice() }; // over the inputs, or another out
            case 3: return junk;
            default: return { data: buf.subarray(at, (at += n)), shape: t.shape.slice() };
          }
        });
        const out = { output: outs[0], hn: outs[1], cn: outs[2] } as never;
        const check = (r: { output: T; hn: T; cn: T }) => {
          (['output', 'hn', 'cn'] as const).forEach((k, i) => {
            const got = r[k].data;
            if (got.length !== parts[i].data.length || got.some((v, j) => !Object.is(v, parts[i].data[j]))) throw new Error(`forwardOut: ${k} differs from a plain forward`);
          });
          return r;
        };
        const opts = { h0: hv, c0: cv, out } as never;
        return async ? model.forwardAsync(xv as never, opts).then(check) : check(model.forward(xv as never, opts));
      },
    ),
    forwardAsync: fc.tuple(fc.oneof({ weight: 1, arbitrary: a.tensor }, { weight: 3, arbitrary: a.fitting(goodShapes) }), a.lengths).map(([x, lengths]) => () => model.forwardAsync(x as never, { lengths: lengths as never })),
    step: fc
      .tuple(fc.oneof({ weight: 1, arbitrary: a.tensor }, { weight: 3, arbitrary: a.fitting([[3], [2, 3], [1, 3]]) }), fc.integer({ min: 0, max: 2 }), a.maybe(a.tensor), fc.oneof(fc.array(fc.constantFrom<unknown>(0, 1, 2, -1, 1.5, NaN, '1')), fc.anything()))
      .map(([x, b, out, rows]) => () => {
        const st = b === 0 ? { h: 1, c: 2 } : stepper.initialState(b);
        const y = stepper.step(x as never, st as never, out as never);
        // then a row reset, hostile rows included: refused with an LstmError, or done
        try {
          stepper.resetState(st as never, rows as never);
        } catch (err) {
          if (!(err instanceof LstmError)) throw err;
        }
        return y;
      }),
    initialState: fc.anything().map((b) => () => stepper.initialState(b as never)),
    loadStateDict: fc.tuple(fc.dictionary(fc.constantFrom('weight_ih_l0', 'weight_hh_l1', 'bias_ih_l0', 'x'), a.tensor), fc.constantFrom<unknown>(undefined, '', 'lstm.', 5), fc.constantFrom<unknown>(true, false, undefined)).map(([dict, prefix, strict]) => () => {
      const victim = new LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 2, seed: 2, backend });
      try {
        return victim.loadStateDict(dict as never, { prefix: prefix as never, strict: strict as never });
      } finally {
        victim.dispose();
      }
    }),
    fromOnnx: fc.record({ W: a.tensor, R: a.tensor, B: a.tensor, P: a.tensor, hiddenSize: fc.constantFrom<unknown>(...ADVERSARIAL_NUMBERS), direction: fc.constantFrom<unknown>('forward', 'bidirectional', 'up'), activations: fc.anything() }, { requiredKeys: [] }).map((spec) => () => LSTM.fromOnnx({ ...(spec as object), backend } as never)),
    fromKeras: fc.tuple(fc.record({ kernel: a.tensor, recurrentKernel: a.tensor, bias: a.tensor }, { requiredKeys: [] }), fc.record({ units: fc.constantFrom<unknown>(...ADVERSARIAL_NUMBERS), activation: fc.constantFrom<unknown>('tanh', 'hard_sigmoid', 'gelu', 3) }, { requiredKeys: [] })).map(
      ([w, o]) => () => LSTM.fromKeras(w as never, { ...(o as object), backend } as never),
    ),
    loadSafetensors: a.bytes.map((b) => () => lib.loadSafetensors(b as never)),
    saveSafetensors: fc.tuple(fc.dictionary(fc.string({ maxLength: 5 }), fc.oneof(a.tensor, fc.record({ data: fc.float32Array({ maxLength: 8 }), shape: a.shape, dtype: fc.constantFrom<unknown>('F16', 'I8', 'BF16', 'Q4', 7) }))), fc.anything()).map(([t, m]) => () => lib.saveSafetensors(t as never, m as never)),
    loadOnnx: a.bytes.map((b) => () => lib.loadOnnx(b as never, { backend })),
    // the other file readers on arbitrary input
    loadFile: fc.tuple(fc.constantFrom('loadTorch', 'loadHdf5', 'loadNpz', 'loadNpy'), a.bytes).map(([fn, b]) => () => (lib as unknown as Record<string, (b: unknown) => unknown>)[fn](b)),
    saveNpz: fc.dictionary(fc.string({ maxLength: 5 }), a.tensor).map((t) => () => lib.loadNpz(lib.saveNpz(t as never))),
    fromStateDict: fc.tuple(fc.dictionary(fc.constantFrom('lstm.weight_ih_l0', 'lstm.weight_hh_l0', 'lstm.bias_ih_l0', 'fc.weight', 'fc.bias'), a.tensor), fc.anything()).map(([dict, o]) => () =>
      lib.SequenceModel.fromStateDict(dict as never, { ...(o !== null && typeof o === 'object' ? o : {}), backend } as never).dispose(),
    ),
    exportOnnx: fc
      .tuple(
        fc.constantFrom<unknown>(model, disposed, null, {}),
        // mostly its own options (unknown names are refused), sometimes anything
        fc.oneof({ weight: 3, arbitrary: fc.record({ opset: fc.constantFrom<unknown>(10, 14, 21, 9, 22, '14', null), lengths: fc.constantFrom<unknown>(true, false, 1) }, { requiredKeys: [] }) }, { weight: 1, arbitrary: fc.anything() }),
      )
      .map(([m, o]) => () => lib.exportOnnx(m as never, o as never)),
    forwardTrain: fc.tuple(fc.oneof({ weight: 1, arbitrary: a.tensor }, { weight: 3, arbitrary: a.fitting(goodShapes) }), fc.oneof(a.tensor, a.fitting([[2, 3, 4], [5, 4], [1, 1, 4]]), fc.constant(undefined))).map(([x, up]) => () =>
      model.forwardTrain(x as never).backward({ output: up as never }),
    ),
    forwardTrainDropout: fc.tuple(a.fitting(goodShapes), fc.constantFrom<unknown>(undefined, true, false, 'no', 1, null)).map(([x, dropout]) => () =>
      dropper.forwardTrain(x as never, { dropout: dropout as never }).backward(),
    ),
    // optimizers, schedules and forecasts share one target (a fair share of the calls for the rest)
    training: fc.oneof(optimizerCall, scheduleCall, forecastCall),
    disposed: fc.constantFrom('forward', 'forwardAsync', 'step', 'stateDict', 'forwardTrain', 'initialState').map((m) => () => (disposed as never as Record<string, (...args: unknown[]) => unknown>)[m](refX, {})),
  };
  const names = Object.keys(targets);
  const call = fc.constantFrom(...names).chain((name) => targets[name].map((fn) => ({ name, fn })));

  await fc.assert(
    fc.asyncProperty(call, async ({ name, fn }) => {
      report.cases++;
      report.byTarget[name] = (report.byTarget[name] ?? 0) + 1;
      try {
        await fn();
        report.results++;
        report.okByTarget[name] = (report.okByTarget[name] ?? 0) + 1;
      } catch (err) {
        if (!(err instanceof LstmError)) throw new Error(`${name}: threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
        report.lstmErrors++;
      }
      const now = model.forward(refX).output.data;
      for (let i = 0; i < reference.length; i++) if (now[i] !== reference[i]) throw new Error(`${name}: the model's answer changed`);
    }),
    { numRuns, seed, endOnFailure: true },
  );
  model.dispose();
  stepper.dispose();
  dropper.dispose();
  return report;
}

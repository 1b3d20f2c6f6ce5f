// Parity with PyTorch and ONNX Runtime on every golden fixture, on every engine
// (js, and native on each ISA this CPU has).
import { describe, expect, it } from 'vitest';
import { ENGINES, LSTM, expectClose, fixture, onnxYToOutput, torchOptions, withEngine, type Tensor } from './helpers';

const TORCH_CASES = [
  't01_single',
  't02_stack2_batchfirst',
  't03_bidir2',
  't04_proj',
  't05_nobias',
  't06_packed_bidir',
  't07_unbatched',
  't08_larger',
  't09_proj_bidir_packed_bf',
  't10_one_step',
  'p01_seed_full_peephole',
  'p02_diagonal_peephole',
  'e01_export_bidir2',
  'e02_export_stack3_bf',
];

const ONNX_CASES = [
  'o01_forward_peephole',
  'o02_reverse_peephole_lens',
  'o03_bidir_peephole_lens',
  'o04_clip_coupled',
  'o05_hardsigmoid',
  'o06_bidir_no_state',
  'o07_plain',
];

describe.each(ENGINES)('parity on $label', (engine) => {
  it.each(TORCH_CASES)('%s matches PyTorch (forward, forwardAsync, step)', async (name) => {
    const { tensors, metadata } = fixture(name);
    const lstm = withEngine(engine, () => new LSTM({ ...torchOptions(metadata), backend: engine.backend }));
    expect(lstm.backend).toBe(engine.backend);
    lstm.loadStateDict(tensors, { strict: false });
    // strict=false above only because fixtures also hold inputs and outputs: prove every parameter was provided.
    for (const key of Object.keys(lstm.stateDict())) expect(tensors[key], key).toBeDefined();
    const { output, hn, cn } = lstm.forward(tensors.input, { h0: tensors.h0, c0: tensors.c0, lengths: tensors.lengths });
    // t08 and the exported stacks run longer recurrences: the README allows "a little more".
    const atol = name === 't08_larger' ? 2e-5 : 1e-5;
    expectClose(output, tensors.output, `${name} output`, atol);
    expectClose(hn, tensors.hn, `${name} hn`, atol);
    expectClose(cn, tensors.cn, `${name} cn`, atol);

    // forwardAsync gives the same numbers.
    const viaAsync = await lstm.forwardAsync(tensors.input, { h0: tensors.h0, c0: tensors.c0, lengths: tensors.lengths });
    expectClose(viaAsync.output, tensors.output, `${name} forwardAsync output`, atol);
    expectClose(viaAsync.hn, tensors.hn, `${name} forwardAsync hn`, atol);

    // So does stepping through it, where a stream can express the case (one direction, full lengths).
    if (lstm.config.numDirections === 1 && tensors.lengths === undefined) {
      const bf = lstm.config.batchFirst;
      const unbatched = tensors.input.shape.length === 2;
      const [T, B] = unbatched ? [tensors.input.shape[0], 1] : bf ? [tensors.input.shape[1], tensors.input.shape[0]] : tensors.input.shape;
      const I = lstm.config.inputSize;
      const Hout = lstm.config.outSize;
      const state = { h: { data: tensors.h0.data.slice(), shape: [lstm.config.numLayers, B, Hout] }, c: { data: tensors.c0.data.slice(), shape: [lstm.config.numLayers, B, lstm.config.hiddenSize] } };
      for (let t = 0; t < T; t++) {
        const xt = new Float32Array(B * I);
        for (let b = 0; b < B; b++) xt.set(tensors.input.data.subarray(((bf ? b * T + t : t * B + b)) * I, ((bf ? b * T + t : t * B + b) + 1) * I), b * I);
        const y = lstm.step({ data: xt, shape: [B, I] }, state);
        const want = new Float32Array(B * Hout);
        for (let b = 0; b < B; b++) want.set(tensors.output.data.subarray((bf ? b * T + t : t * B + b) * Hout, ((bf ? b * T + t : t * B + b) + 1) * Hout), b * Hout);
        expectClose(y, { data: want, shape: [B, Hout] }, `${name} step ${t}`, atol);
      }
      expectClose({ data: state.h.data, shape: tensors.hn.shape }, tensors.hn, `${name} stepped hn`, atol);
      expectClose({ data: state.c.data, shape: tensors.cn.shape }, tensors.cn, `${name} stepped cn`, atol);
    }
    lstm.dispose();
  });

  it.each(ONNX_CASES)('%s matches ONNX Runtime through LSTM.fromOnnx', (name) => {
    const { tensors, metadata } = fixture(name);
    const c = JSON.parse(metadata.config);
    const lstm = withEngine(engine, () =>
      LSTM.fromOnnx({
        W: tensors.W,
        R: tensors.R,
        B: tensors.B,
        P: tensors.P,
        hiddenSize: c.hidden_size,
        direction: c.direction,
        clip: c.clip ?? undefined,
        inputForget: c.input_forget,
        activations: c.activations,
        activationAlpha: c.activation_alpha ?? undefined,
        activationBeta: c.activation_beta ?? undefined,
        backend: engine.backend,
      }),
    );
    const { output, hn, cn } = lstm.forward(tensors.X, {
      h0: tensors.initial_h,
      c0: tensors.initial_c,
      lengths: tensors.sequence_lens,
    });
    expectClose(output, onnxYToOutput(tensors.Y), `${name} Y`);
    expectClose(hn, tensors.Y_h, `${name} Y_h`);
    expectClose(cn, tensors.Y_c, `${name} Y_c`);
    // The float64 reading of the spec agrees too.
    expectClose(output, onnxYToOutput(tensors.Y_ref64), `${name} Y_ref64`);
    lstm.dispose();
  });

  it('torch-random: 120 random nn.LSTM configurations, forward and gradients match PyTorch', () => {
    // Layers, directions, batch_first, bias, projection, unbatched, packed lengths, default or
    // given states, all mixed (test/fixtures/torch-random/make.py, PyTorch 1.13).
    const { tensors, metadata } = fixture('torch-random/random');
    const cases: { lengths: number[] | null; state: boolean }[] = JSON.parse(metadata.cases);
    const seen = { packed: 0, unbatched: 0, proj: 0, bidirectional: 0, state: 0 };
    cases.forEach((c, i) => {
      const t = (name: string): Tensor => tensors[`c${i}.${name}`];
      const lstm = withEngine(engine, () => new LSTM({ ...torchOptions({ config: JSON.stringify(c) }), backend: engine.backend }));
      const names = Object.keys(lstm.stateDict());
      lstm.loadStateDict(Object.fromEntries(names.map((n) => [n, t(n)])));
      const what = `case ${i} ${JSON.stringify(c)}`;
      const opts = { h0: c.state ? t('h0') : undefined, c0: c.state ? t('c0') : undefined, lengths: c.lengths ?? undefined };
      const r = lstm.forward(t('input'), opts);
      expectClose(r.output, t('output'), `${what} output`);
      expectClose(r.hn, t('hn'), `${what} hn`);
      expectClose(r.cn, t('cn'), `${what} cn`);
      const g = lstm.forwardTrain(t('input'), opts).backward({ output: t('grad_output'), hn: t('grad_hn'), cn: t('grad_cn') });
      expectClose(g.input, t('grad_input'), `${what} grad_input`, 1e-4, 1e-3);
      if (c.state) {
        expectClose(g.h0, t('grad_h0'), `${what} grad_h0`, 1e-4, 1e-3);
        expectClose(g.c0, t('grad_c0'), `${what} grad_c0`, 1e-4, 1e-3);
      }
      for (const n of names) expectClose(g.params[n], t(`grad.${n}`), `${what} grad.${n}`, 1e-4, 1e-3);
      lstm.dispose();
      const cfg = lstm.config;
      seen.packed += c.lengths ? 1 : 0;
      seen.unbatched += t('input').shape.length === 2 ? 1 : 0;
      seen.proj += cfg.projSize > 0 ? 1 : 0;
      seen.bidirectional += cfg.numDirections === 2 ? 1 : 0;
      seen.state += c.state ? 1 : 0;
    });
    // every kind of case is there (of 120: packed 41, unbatched 10, projection 53, bidirectional 57, states 61)
    for (const [k, n] of Object.entries(seen)) expect(n, k).toBeGreaterThanOrEqual(10);
  });

  it('m01_sine_model: the trained model reproduces its predictions', () => {
    const { tensors } = fixture('m01_sine_model');
    const lstm = withEngine(engine, () => new LSTM({ inputSize: 1, hiddenSize: 32, numLayers: 2, backend: engine.backend }));
    lstm.loadStateDict(tensors, { prefix: 'lstm.' });
    const { output } = lstm.forward(tensors.input);
    const [T, B, H] = output.shape;
    const w = tensors['head.weight'].data;
    const bias = tensors['head.bias'].data[0];
    const pred = new Float32Array(T * B);
    for (let i = 0; i < T * B; i++) {
      let s = bias;
      for (let h = 0; h < H; h++) s += w[h] * output.data[i * H + h];
      pred[i] = s;
    }
    const expected: Tensor = tensors.prediction;
    expectClose({ data: pred, shape: [T, B, 1] }, expected, 'prediction', 2e-5);
    let mse = 0;
    for (let i = 0; i < pred.length; i++) mse += (pred[i] - tensors.target.data[i]) ** 2;
    expect(mse / pred.length).toBeLessThan(2e-3);
  });
});

// ONNX import (single nodes and torch.onnx.export stacks) and export checked by ONNX Runtime.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENGINES, FIXTURES, LSTM, LstmError, expectClose, expectFormat, fixture, lib, mulberry32, onnxYToOutput, randomTensor, sweepSeeds, withEngine, type Activation, type LSTMOptions, type Tensor } from './helpers';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node') as typeof import('onnxruntime-node');
const { onnx } = require('onnx-proto') as typeof import('onnx-proto');
const { loadOnnx, exportOnnx } = lib;
const onnxFile = (name: string) => new Uint8Array(readFileSync(path.join(FIXTURES, `${name}.onnx`)));

describe.each(ENGINES)('loadOnnx on $label', (engine) => {
  it.each(['e01_export_bidir2', 'e02_export_stack3_bf'])('%s (torch.onnx.export) matches its fixture', (name) => {
    const { tensors, metadata } = fixture(name);
    const m = withEngine(engine, () => loadOnnx(onnxFile(name), { backend: engine.backend }));
    expect(m.backend).toBe(engine.backend);
    const cfg = JSON.parse(metadata.config);
    expect(m.config.numLayers).toBe(cfg.num_layers);
    expect(m.config.batchFirst).toBe(cfg.batch_first);
    expect(m.config.numDirections).toBe(cfg.bidirectional ? 2 : 1);
    // The weights are the PyTorch parameters, exactly.
    for (const [k, v] of Object.entries(m.stateDict())) expect(v.data, k).toEqual(tensors[k].data);
    const r = m.forward(tensors.input, { h0: tensors.h0, c0: tensors.c0 });
    expectClose(r.output, tensors.output, `${name} output`);
    expectClose(r.hn, tensors.hn, `${name} hn`);
    expectClose(r.cn, tensors.cn, `${name} cn`);
  });

  it.each(['o01_forward_peephole', 'o02_reverse_peephole_lens', 'o03_bidir_peephole_lens', 'o04_clip_coupled', 'o05_hardsigmoid', 'o06_bidir_no_state', 'o07_plain'])(
    '%s imports from its .onnx file and matches ONNX Runtime',
    (name) => {
      const { tensors } = fixture(name);
      const m = withEngine(engine, () => loadOnnx(onnxFile(name), { backend: engine.backend }));
      const r = m.forward(tensors.X, { h0: tensors.initial_h, c0: tensors.initial_c, lengths: tensors.sequence_lens });
      expectClose(r.output, onnxYToOutput(tensors.Y), `${name} Y`);
      expectClose(r.hn, tensors.Y_h, `${name} Y_h`);
      expectClose(r.cn, tensors.Y_c, `${name} Y_c`);
    },
  );
});

// More torch.onnx.export files (test/fixtures/torch-export/make.py, PyTorch 1.13's TorchScript
// exporter), with PyTorch's own outputs: models called without an initial state (zeros by
// Expand of a constant for a fixed batch, by ConstantOfShape for a dynamic one, sliced per
// layer when stacked), every opset's Slice of h0/c0 (attributes before opset 10), weights the
// exporter left unfolded (opsets 7 and 8, do_constant_folding=False), variable
// lengths through pack_padded_sequence (sorted by the exporter when enforce_sorted=False, with
// and without initial states), and a model whose only output is the sequence.
const TORCH_EXPORT = path.join(FIXTURES, 'torch-export');
const exported = (name: string) => ({
  bytes: new Uint8Array(readFileSync(path.join(TORCH_EXPORT, `${name}.onnx`))),
  ...lib.loadSafetensors(readFileSync(path.join(TORCH_EXPORT, `${name}.safetensors`))),
});
const PACKED = ['packed_l2_bi_bf', 'packed_l2_uni_tm', 'packed_l1_uni_bf_state', 'packed_l2_bi_bf_state', 'packed_sorted'];
const NOSTATE = [1, 2].flatMap((l) => ['uni', 'bi'].flatMap((d) => ['tm', 'bf'].flatMap((b) => ['static', 'dynamic'].map((s) => `nostate_l${l}_${d}_${b}_${s}`))));

describe.each(ENGINES)('torch.onnx.export files on $label', (engine) => {
  const UNFOLDED = ['opset8_nostate_l2_bi_bf', 'opset7_states_l3_bf', 'unfolded_l2_bi_tm'];
  it.each([...NOSTATE, ...PACKED, ...UNFOLDED, 'states_opset9', 'states_opset11', 'states_opset13', 'states_opset17', 'output_only'])('%s matches PyTorch', (name) => {
    const { bytes, tensors, metadata } = exported(name);
    const m = withEngine(engine, () => loadOnnx(bytes, { backend: engine.backend }));
    try {
      expect(m.backend).toBe(engine.backend);
      const cfg = JSON.parse(metadata.config);
      expect(m.config.numLayers).toBe(cfg.num_layers);
      expect(m.config.batchFirst).toBe(cfg.batch_first);
      expect(m.config.numDirections).toBe(cfg.bidirectional ? 2 : 1);
      const r = m.forward(tensors.input, { h0: tensors.h0, c0: tensors.c0, lengths: tensors.lengths });
      expectClose(r.output, tensors.output, `${name} output`);
      if (tensors.hn) expectClose(r.hn, tensors.hn, `${name} hn`);
      if (tensors.cn) expectClose(r.cn, tensors.cn, `${name} cn`);
    } finally {
      m.dispose();
    }
  });
});

describe('loadOnnx takes a stack only when forward gives the file\'s outputs', () => {
  const mutate = (name: string, fn: (m: import('onnx-proto').onnx.ModelProto) => void): Uint8Array => {
    const m = onnx.ModelProto.decode(exported(name).bytes);
    fn(m);
    return onnx.ModelProto.encode(m).finish();
  };
  const lstmNodes = (m: import('onnx-proto').onnx.ModelProto) => m.graph!.node!.filter((n) => n.opType === 'LSTM');

  it('a Linear head after the LSTM is named, not dropped; stackOnly takes the LSTM out of the graph', () => {
    const { bytes, tensors } = exported('with_head');
    expectFormat(() => loadOnnx(bytes), /graph output 'y' is not the LSTM stack's own output .*\(Add\).*stackOnly: true/);
    const m = loadOnnx(bytes, { stackOnly: true });
    const r = m.forward(tensors.input);
    expect(r.output.shape).toEqual([2, 5, 4]);
    // The head on the stack's output gives the file's output (y = output W^T + b).
    const { tensors: params } = lib.loadSafetensors(readFileSync(path.join(TORCH_EXPORT, 'with_head_params.safetensors')));
    const y = new Float32Array(2 * 5 * 2);
    for (let row = 0; row < 10; row++) {
      for (let j = 0; j < 2; j++) {
        let acc = params['head.bias'].data[j];
        for (let k = 0; k < 4; k++) acc += r.output.data[row * 4 + k] * params['head.weight'].data[j * 4 + k];
        y[row * 2 + j] = acc;
      }
    }
    expectClose({ data: y, shape: [2, 5, 2] }, tensors.y, 'with_head y');
    for (const [k, v] of Object.entries(m.stateDict())) expect(v.data, k).toEqual(params[`lstm.${k}`].data);
    m.dispose();
    expect(() => loadOnnx(bytes, { stackOnly: 1 as unknown as boolean })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
  });

  it('SequenceModel.fromOnnx takes an LSTM with its Linear head, as PyTorch exports it, packed lengths too', () => {
    for (const [name, y, lengths] of [['with_head', 'y', undefined], ['packed_with_head', 'y', 'lengths']] as const) {
      const { bytes, tensors } = exported(name);
      const model = lib.SequenceModel.fromOnnx(bytes);
      const r = model.forward(tensors.input, { lengths: lengths ? tensors[lengths] : undefined });
      expectClose(r.output, tensors[y], `${name} ${y}`);
      model.dispose();
    }
    // loadOnnx says where to go; fromOnnx refuses a graph without a head
    expectFormat(() => loadOnnx(exported('with_head').bytes), /SequenceModel\.fromOnnx takes an LSTM with a Linear head/);
    expectFormat(() => lib.SequenceModel.fromOnnx(exported('states_opset13').bytes), /no graph output is a Linear head/);
  });

  it("exportOnnx of a head per sequence ('last', 'final'): ONNX Runtime gives forward's output, and it reads back", async () => {
    const cases = [
      ['final', false, 1, false, false, 14],
      ['final', true, 2, true, true, 14],
      ['final', true, 1, false, true, 10],
      ['last', false, 2, false, true, 12],
      ['last', false, 1, true, false, 13],
      ['last', true, 1, true, false, 14],
      ['last', true, 2, false, false, 11],
    ] as const;
    for (const [mode, bidirectional, numLayers, batchFirst, lengths, opset] of cases) {
      const what = `${mode} ${bidirectional ? 'bi' : 'uni'} L=${numLayers} ${batchFirst ? 'batch-first' : 'time-major'}${lengths ? ' lengths' : ''} opset ${opset}`;
      const model = new lib.SequenceModel({ inputSize: 3, hiddenSize: 4, numLayers, bidirectional, batchFirst, outputSize: 2, outputMode: mode, seed: 5 });
      const bytes = exportOnnx(model, { lengths, opset });
      const session = await ort.InferenceSession.create(bytes);
      const T = 5, B = 3, LD = numLayers * (bidirectional ? 2 : 1);
      const x = randomTensor(batchFirst ? [B, T, 3] : [T, B, 3], mulberry32(4));
      const h0 = randomTensor([LD, B, 4], mulberry32(5), 0.5);
      const c0 = randomTensor([LD, B, 4], mulberry32(6), 0.5);
      const lens = [5, 2, 4];
      const feeds: Record<string, import('onnxruntime-node').Tensor> = { input: new ort.Tensor('float32', x.data, x.shape), h0: new ort.Tensor('float32', h0.data, h0.shape), c0: new ort.Tensor('float32', c0.data, c0.shape) };
      if (lengths) feeds.lengths = new ort.Tensor('int32', Int32Array.from(lens), [B]);
      const run = await session.run(feeds);
      const mine = model.forward(x, { h0, c0, lengths: lengths ? lens : undefined });
      expect(run.output.dims, what).toEqual([B, 2]);
      expectClose({ data: run.output.data as Float32Array, shape: [B, 2] }, mine.output, `${what}: output`);
      expectClose({ data: run.hn.data as Float32Array, shape: mine.hn.shape }, mine.hn, `${what}: hn`);
      // back: a forward model's 'last' reads Y_h, which is its 'final' (the same outputs)
      const back = lib.SequenceModel.fromOnnx(bytes);
      expect(back.outputMode, what).toBe(mode === 'last' && !bidirectional ? 'final' : mode);
      expectClose(back.forward(x, { h0, c0, lengths: lengths ? lens : undefined }).output, mine.output, `${what}: read back`);
      back.dispose();
    }
    const bi = new lib.SequenceModel({ inputSize: 3, hiddenSize: 4, bidirectional: true, outputSize: 2, outputMode: 'last' });
    expect(() => exportOnnx(bi, { lengths: true })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION', message: expect.stringMatching(/exports without lengths only/) }));
  });

  it('exportOnnx of a SequenceModel reads back through SequenceModel.fromOnnx with the same outputs', () => {
    for (const [batchFirst, bidirectional, bias] of [[false, true, true], [true, false, false]] as const) {
      const model = new lib.SequenceModel({ inputSize: 3, hiddenSize: 5, numLayers: 2, bidirectional, batchFirst, outputSize: 4, seed: 9 });
      if (!bias) (model.head as { bias: Float32Array | null }).bias = null;
      const back = lib.SequenceModel.fromOnnx(exportOnnx(model));
      expect(back.lstm.config).toMatchObject({ batchFirst, numDirections: bidirectional ? 2 : 1, numLayers: 2, hiddenSize: 5 });
      const x = randomTensor(batchFirst ? [2, 6, 3] : [6, 2, 3], mulberry32(8));
      const want = model.forward(x);
      const got = back.forward(x);
      expectClose(got.output, want.output, 'output');
      expectClose(got.cn, want.cn, 'cn');
      back.dispose();
    }
  });

  it("heads per sequence as torch.onnx.export writes them: fc(out[:, -1]), fc(hn[-1]), fc(torch.cat((hn[-2], hn[-1]), 1))", () => {
    const dir = path.join(FIXTURES, 'torch-heads');
    const outs = lib.loadSafetensors(readFileSync(path.join(dir, 'onnx_outputs.safetensors'))).tensors;
    const want: Record<string, string> = { last_uni2: 'last', hn_uni1: 'final', hn_uni2: 'final', cat_bi1: 'final', cat_bi2: 'final', last_bi1: 'last' };
    for (const engine of ENGINES) {
      for (const [name, mode] of Object.entries(want)) {
        const bytes = new Uint8Array(readFileSync(path.join(dir, `${name}.onnx`)));
        const model = withEngine(engine, () => lib.SequenceModel.fromOnnx(bytes, { backend: engine.backend }));
        expect(model.outputMode, name).toBe(mode);
        expect(model.lstm.config.batchFirst).toBe(true);
        const r = model.forward(outs[`${name}.x`]);
        expect(r.output.shape).toEqual([4, 2]);
        expectClose(r.output, outs[`${name}.y`], `${name} on ${engine.label}`);
        model.dispose();
      }
    }
    // a head on another row of hn (the first layer's) is not the model's output
    const other = new Uint8Array(readFileSync(path.join(dir, 'hn_uni2.onnx')));
    const m = onnx.ModelProto.decode(other);
    const gather = m.graph!.node!.filter((n) => n.opType === 'Gather').at(-1)!;
    const index = m.graph!.node!.find((n) => n.output![0] === gather.input![1])!;
    index.attribute![0].t!.rawData = new Uint8Array(BigInt64Array.of(0n).buffer);
    expectFormat(() => lib.SequenceModel.fromOnnx(onnx.ModelProto.encode(m).finish()), /the head must read the output sequence, its last step, or the last layer's final states/);
    // fc(out[:, -1]) after pack_padded_sequence reads padding for shorter rows: not outputMode 'last'
    expectFormat(() => lib.SequenceModel.fromOnnx(new Uint8Array(readFileSync(path.join(dir, 'packed_last.onnx')))), /sequence_lens leaves as padding \(zeros\) in shorter rows/);
  });

  it('outputs that are not the stack\'s: an inner layer\'s Y, one layer\'s Y_h of a stack, a Concat out of order, a graph input', () => {
    const inner = mutate('states_opset13', (m) => {
      m.graph!.output![0].name = lstmNodes(m)[0].output![0];
    });
    expectFormat(() => loadOnnx(inner), /is output 0 of node .*the stack's outputs are/);
    const oneLayer = mutate('states_opset13', (m) => {
      m.graph!.output![1].name = lstmNodes(m)[1].output![1];
    });
    expectFormat(() => loadOnnx(oneLayer), /is output 1 of node/);
    const swapped = mutate('states_opset13', (m) => {
      const concat = m.graph!.node!.find((n) => n.opType === 'Concat')!;
      concat.input = [...concat.input!].reverse();
    });
    expectFormat(() => loadOnnx(swapped), /concatenated in order along axis 0/);
    const passthrough = mutate('states_opset13', (m) => {
      m.graph!.output![0].name = 'h0';
    });
    expectFormat(() => loadOnnx(passthrough), /graph output 'h0' is not computed from the LSTM stack/);
  });

  it('a batch-first input needs a batch-first output', () => {
    const bytes = mutate('nostate_l1_uni_bf_static', (m) => {
      const t = m.graph!.node!.find((n) => n.output![0] === 'output')!;
      m.graph!.node = m.graph!.node!.filter((n) => n !== t);
      m.graph!.output![0].name = t.input![0];
    });
    expectFormat(() => loadOnnx(bytes), /must end in a Transpose \[1, 0, 2\]/);
  });

  it('a sort of the batch by lengths must be undone on every output, and lengths and states sorted alike', () => {
    const byOp = (m: import('onnx-proto').onnx.ModelProto, out: string) => m.graph!.node!.find((n) => n.output![0] === out)!;
    // output left in sorted order
    const sortedOut = mutate('packed_l2_bi_bf_state', (m) => {
      const g = byOp(m, 'output');
      m.graph!.node = m.graph!.node!.filter((n) => n !== g);
      m.graph!.output![0].name = g.input![0];
    });
    expectFormat(() => loadOnnx(sortedOut), /graph output '.*': the input's batch is sorted by length, so every output must be Gathered back/);
    // hn gathered back along the wrong axis
    const wrongAxis = mutate('packed_l2_bi_bf_state', (m) => {
      byOp(m, 'hn').attribute![0].i = 0;
    });
    expectFormat(() => loadOnnx(wrongAxis), /graph output 'hn': the Gather back to the input's order is along axis 0, expected the batch axis 1/);
    // sequence_lens sorted, input not
    const unsortedInput = mutate('packed_l2_uni_tm', (m) => {
      const lstm = lstmNodes(m)[0];
      const gather = m.graph!.node!.find((n) => n.output![0] === lstm.input![0])!;
      lstm.input![0] = gather.input![0];
    });
    expectFormat(() => loadOnnx(unsortedInput), /sequence_lens is sorted, but the input's batch is not/);
    // lengths as they are while the input is sorted
    const plainLengths = mutate('packed_l2_uni_tm', (m) => {
      for (const n of lstmNodes(m)) n.input![4] = 'lengths';
    });
    expectFormat(() => loadOnnx(plainLengths), /must be that sort's values/);
    // h0 not sorted while the input is
    const unsortedState = mutate('packed_l2_bi_bf_state', (m) => {
      for (const n of m.graph!.node!) if (n.opType === 'Slice' && n.input![0].startsWith('/lstm/Gather')) {
        const gather = m.graph!.node!.find((x) => x.output![0] === n.input![0])!;
        if (gather.input![0] === 'h0') n.input![0] = 'h0';
      }
    });
    expectFormat(() => loadOnnx(unsortedState), /initial_h: its batch must be sorted as the input's is/);
  });

  it('constant folding: unfolded weights read back as PyTorch\'s, and a fold cannot grow past the file', () => {
    // the unfolded file's W is built from PyTorch's weight_ih_l0 by Slice / Concat / Unsqueeze
    const m = loadOnnx(exported('unfolded_l2_bi_tm').bytes);
    const folded = loadOnnx(exported('nostate_l2_bi_tm_static').bytes);
    expect(m.config).toMatchObject({ numLayers: 2, numDirections: 2 });
    expect(Object.keys(m.stateDict())).toEqual(Object.keys(folded.stateDict()));
    // a chain of Concats that doubles a constant 40 times: refused, not 2^40 elements
    const bytes = mutate('states_opset13', (model) => {
      const lstm = lstmNodes(model)[0];
      let prev = lstm.input![1];
      for (let k = 0; k < 40; k++) {
        model.graph!.node!.push(onnx.NodeProto.create({ opType: 'Concat', name: `double_${k}`, input: [prev, prev], output: [`double_${k}_out`], attribute: [onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 0 })] }));
        prev = `double_${k}_out`;
      }
      lstm.input![1] = prev;
    });
    expectFormat(() => loadOnnx(bytes), /constant folding would produce more than the file's constants justify/);
  });

  it('an initial state that is a constant other than zeros, or differs between layers, is refused', () => {
    const nonZero = mutate('nostate_l1_uni_tm_static', (m) => {
      const zeros = m.graph!.node!.find((n) => n.opType === 'Constant' && n.attribute![0].t?.dims?.length === 3)!;
      const t = zeros.attribute![0].t!;
      const raw = new Float32Array(t.rawData!.length / 4).fill(0.25);
      t.rawData = new Uint8Array(raw.buffer);
    });
    expectFormat(() => loadOnnx(nonZero), /initial_h of layer 0 must be a graph input, a Slice of one or zeros, found node .*Expand/);
    const mixed = mutate('states_opset13', (m) => {
      lstmNodes(m)[1].input![5] = ''; // layer 1 from zeros, layer 0 from h0
    });
    expectFormat(() => loadOnnx(mixed), /initial_h: layer 0 starts from graph input 'h0', layer 1 from zeros/);
    const constantLengths = mutate('states_opset13', (m) => {
      m.graph!.initializer!.push(onnx.TensorProto.create({ name: 'fixed_lengths', dims: [2], dataType: 6, int32Data: [5, 5] }));
      for (const n of lstmNodes(m)) n.input![4] = 'fixed_lengths';
    });
    expectFormat(() => loadOnnx(constantLengths), /sequence_lens must be a graph input/);
  });
});

const ACTS = ['sigmoid', 'tanh', 'relu', 'hardSigmoid', 'leakyRelu', 'thresholdedRelu', 'scaledTanh', 'affine', 'elu', 'softsign', 'softplus'] as const;

function randomExportCase(seed: number) {
  const rand = mulberry32(seed);
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const H = pick([1, 3, 5, 8, 17]);
  const options: LSTMOptions = {
    inputSize: pick([1, 2, 4, 7]),
    hiddenSize: H,
    numLayers: 1 + Math.floor(rand() * 3),
    direction: pick(['forward', 'reverse', 'bidirectional'] as const),
    bias: rand() < 0.8,
    batchFirst: rand() < 0.4,
    peephole: rand() < 0.4 ? 'diagonal' : 'none',
    clip: rand() < 0.3 ? 0.3 + rand() * 2 : undefined,
    coupledInputForget: rand() < 0.2,
    seed,
  };
  const act = () => {
    const name = pick(ACTS);
    return rand() < 0.5 ? name : { name, alpha: 0.1 + rand(), beta: rand() - 0.5 };
  };
  if (rand() < 0.4) {
    options.gateActivation = pick(['sigmoid', 'hardSigmoid', { name: 'hardSigmoid' as const, alpha: 0.25, beta: 0.4 }] as const);
    options.cellActivation = act();
    options.hiddenActivation = pick(['tanh', 'softsign', 'sigmoid', { name: 'scaledTanh' as const, alpha: 1.5, beta: 0.7 }] as const);
  }
  const T = 1 + Math.floor(rand() * 7);
  const B = 1 + Math.floor(rand() * 4);
  const withLengths = rand() < 0.4;
  // ONNX's six activations: a bidirectional node's reverse direction with functions of its own
  if (options.direction === 'bidirectional' && rand() < 0.5) {
    const forward = (v: LSTMOptions['gateActivation'], dflt: Activation) => (v ?? dflt) as Activation;
    options.gateActivation = [forward(options.gateActivation, 'sigmoid'), pick(['hardSigmoid', 'sigmoid', { name: 'hardSigmoid' as const, alpha: 0.15, beta: 0.45 }] as const)];
    options.cellActivation = [forward(options.cellActivation, 'tanh'), act()];
    options.hiddenActivation = [forward(options.hiddenActivation, 'tanh'), pick(['tanh', 'softsign', { name: 'scaledTanh' as const, alpha: 0.8, beta: 1.3 }] as const)];
  }
  return { options, T, B, withLengths, rand };
}

/** An exported file run in onnxruntime-node on input, h0, c0 (and lengths): its outputs. */
async function runExport(bytes: Uint8Array, x: Tensor, h0: Tensor, c0: Tensor, lengths?: Int32Array) {
  const session = await ort.InferenceSession.create(bytes);
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {
    input: new ort.Tensor('float32', x.data, x.shape),
    h0: new ort.Tensor('float32', h0.data, h0.shape),
    c0: new ort.Tensor('float32', c0.data, c0.shape),
  };
  if (lengths) feeds.lengths = new ort.Tensor('int32', lengths, [lengths.length]);
  return session.run(feeds);
}

// 60 configurations from seed 1, or more from elsewhere for a longer local sweep
// (EXPORT_SEED, EXPORT_CASES), as the other random sweeps take.
const EXPORT_SEEDS = sweepSeeds('EXPORT', 60);

describe('exportOnnx runs in onnxruntime-node with the same outputs', () => {
  it(`${EXPORT_SEEDS.length} random configurations: stacked, bidirectional, peepholes, clip, coupled, activations, lengths`, async () => {
    const seen = new Set<string>();
    for (const seed of EXPORT_SEEDS) {
      const { options, T, B, withLengths, rand } = randomExportCase(seed);
      const m = new LSTM(options);
      const c = m.config;
      const D = c.numDirections;
      const L = c.numLayers;
      const x = randomTensor(c.batchFirst ? [B, T, c.inputSize] : [T, B, c.inputSize], rand);
      const h0 = randomTensor([L * D, B, c.hiddenSize], rand, 0.5);
      const c0 = randomTensor([L * D, B, c.hiddenSize], rand, 0.5);
      const lengths = withLengths ? Int32Array.from({ length: B }, () => 1 + Math.floor(rand() * T)) : undefined;
      const ours = m.forward(x, { h0, c0, lengths });
      const bytes = exportOnnx(m, { lengths: withLengths });
      const got = await runExport(bytes, x, h0, c0, lengths);
      const what = `seed ${seed} ${JSON.stringify(options)}`;
      for (const k of ['output', 'hn', 'cn'] as const) {
        expectClose({ data: got[k].data as Float32Array, shape: [...got[k].dims] }, ours[k], `${what} ${k}`);
      }
      // nothing in the graph goes unused: every initializer and every node output is read
      // by a node or is a graph output (onnxruntime warns about each unused initializer
      // whenever it opens the file), and nothing merely passes a value through
      const graph = onnx.ModelProto.decode(bytes).graph!;
      const read = new Set([...graph.node!.flatMap((n) => n.input!), ...graph.output!.map((o) => o.name)]);
      for (const t of graph.initializer!) expect(read.has(t.name!), `${what}: initializer ${t.name} unused`).toBe(true);
      for (const n of graph.node!) for (const o of n.output!) expect(read.has(o), `${what}: ${n.name} output ${o} unused`).toBe(true);
      expect(graph.node!.filter((n) => n.opType === 'Identity'), what).toEqual([]);
      if (L === 1) expect(graph.node!.filter((n) => ['Slice', 'Concat'].includes(n.opType!)), what).toEqual([]);
      // and it imports back to the same model
      const back = loadOnnx(bytes);
      expect(back.config.numLayers).toBe(L);
      expect(back.stateDict()).toEqual(m.stateDict());
      // with the same attributes: activations (per direction), alpha, beta, clip, input_forget
      const lstmAttributes = (b: Uint8Array) => onnx.ModelProto.decode(b).graph!.node!.filter((n) => n.opType === 'LSTM').map((n) => JSON.stringify(n.attribute));
      expect(lstmAttributes(exportOnnx(back, { lengths: withLengths })), what).toEqual(lstmAttributes(bytes));
      seen.add(`revActs:${c.reverseActivations !== null}`);
      seen.add(`L${L}`).add(c.direction).add(`peep:${c.peephole}`).add(`clip:${c.clip > 0}`).add(`coupled:${c.coupledInputForget}`).add(`lens:${withLengths}`).add(`bf:${c.batchFirst}`);
    }
    for (const must of ['L1', 'L2', 'L3', 'forward', 'reverse', 'bidirectional', 'peep:diagonal', 'clip:true', 'coupled:true', 'lens:true', 'bf:true', 'revActs:true']) expect(seen.has(must), must).toBe(true);
  }, 120_000);

  it(`${EXPORT_SEEDS.length} random SequenceModels, each head (per step, 'last', 'final'): onnxruntime-node gives their predictions, and they read back`, async () => {
    const seen = new Set<string>();
    for (const seed of EXPORT_SEEDS) {
      const { options, T, B, withLengths, rand } = randomExportCase(seed + 7_000_000);
      const modes = ['sequence', 'last', 'final'] as const;
      let outputMode = modes[Math.floor(rand() * 3)] as (typeof modes)[number];
      // a reverse or bidirectional 'last' head exports without lengths only (exportOnnx refuses it)
      const lengthsOk = !(outputMode === 'last' && options.direction !== 'forward');
      if (withLengths && !lengthsOk) outputMode = 'final';
      const opset = [10, 12, 13, 14, 17][Math.floor(rand() * 5)];
      const model = new lib.SequenceModel({ ...options, outputSize: 1 + Math.floor(rand() * 3), outputMode });
      const c = model.lstm.config;
      const LD = c.numLayers * c.numDirections;
      const x = randomTensor(c.batchFirst ? [B, T, c.inputSize] : [T, B, c.inputSize], rand);
      const h0 = randomTensor([LD, B, c.hiddenSize], rand, 0.5);
      const c0 = randomTensor([LD, B, c.hiddenSize], rand, 0.5);
      const lengths = withLengths ? Int32Array.from({ length: B }, () => 1 + Math.floor(rand() * T)) : undefined;
      const ours = model.forward(x, { h0, c0, lengths });
      const bytes = exportOnnx(model, { lengths: withLengths, opset });
      const got = await runExport(bytes, x, h0, c0, lengths);
      const what = `seed ${seed} ${outputMode} opset ${opset} ${JSON.stringify(options)}`;
      for (const k of ['output', 'hn', 'cn'] as const) expectClose({ data: got[k].data as Float32Array, shape: [...got[k].dims] }, ours[k], `${what} ${k}`);
      const graph = onnx.ModelProto.decode(bytes).graph!;
      const read = new Set([...graph.node!.flatMap((n) => n.input!), ...graph.output!.map((o) => o.name)]);
      for (const t of graph.initializer!) expect(read.has(t.name!), `${what}: initializer ${t.name} unused`).toBe(true);
      for (const n of graph.node!) for (const o of n.output!) if (o) expect(read.has(o), `${what}: ${n.name} output ${o} unused`).toBe(true);
      const back = lib.SequenceModel.fromOnnx(bytes);
      expectClose(back.forward(x, { h0, c0, lengths }).output, ours.output, `${what}: read back`);
      expect(back.stateDict()).toEqual(model.stateDict());
      back.dispose();
      model.dispose();
      seen.add(outputMode).add(`${outputMode}:${c.direction}`).add(`lens:${withLengths}`);
    }
    for (const must of ['sequence', 'last', 'final', 'last:reverse', 'last:bidirectional', 'final:bidirectional', 'final:reverse', 'lens:true']) expect(seen.has(must), must).toBe(true);
  }, 120_000);

  it('opset 12 (Squeeze with an axes attribute) also runs', async () => {
    const m = new LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 2, seed: 2 });
    const session = await ort.InferenceSession.create(exportOnnx(m, { opset: 12 }));
    const x = randomTensor([5, 2, 3], mulberry32(3));
    const zeros = new Float32Array(2 * 2 * 4);
    const got = await session.run({ input: new ort.Tensor('float32', x.data, x.shape), h0: new ort.Tensor('float32', zeros, [2, 2, 4]), c0: new ort.Tensor('float32', zeros, [2, 2, 4]) });
    expectClose({ data: got.output.data as Float32Array, shape: [...got.output.dims] }, m.forward(x).output, 'opset 12');
  });

  it('a SequenceModel exports with its head (MatMul, Add): onnxruntime gives its predictions', async () => {
    for (const [batchFirst, bidirectional, bias] of [[false, false, true], [true, true, true], [true, false, false]] as const) {
      const model = new lib.SequenceModel({ inputSize: 3, hiddenSize: 5, numLayers: 2, bidirectional, batchFirst, outputSize: 2, seed: 7, dropout: 0.3 });
      if (!bias) (model.head as { bias: Float32Array | null }).bias = null; // a PyTorch Linear(bias=False) head
      const session = await ort.InferenceSession.create(exportOnnx(model));
      const [T, B, D] = [4, 3, bidirectional ? 2 : 1];
      const x = randomTensor(batchFirst ? [B, T, 3] : [T, B, 3], mulberry32(3));
      const h0 = randomTensor([2 * D, B, 5], mulberry32(4), 0.5);
      const c0 = randomTensor([2 * D, B, 5], mulberry32(5), 0.5);
      const ours = model.forward(x, { h0, c0 });
      const got = await session.run({ input: new ort.Tensor('float32', x.data, x.shape), h0: new ort.Tensor('float32', h0.data, h0.shape), c0: new ort.Tensor('float32', c0.data, c0.shape) });
      const what = `batchFirst ${batchFirst} bidirectional ${bidirectional} bias ${bias}`;
      expectClose({ data: got.output.data as Float32Array, shape: [...got.output.dims] }, ours.output, `${what} output`);
      expectClose({ data: got.hn.data as Float32Array, shape: [...got.hn.dims] }, ours.hn, `${what} hn`);
      const graph = onnx.ModelProto.decode(exportOnnx(model)).graph!;
      expect(graph.node!.find((n) => n.output![0] === 'output')!.opType).toBe(bias ? 'Add' : 'MatMul');
    }
    expect(() => exportOnnx({ lstm: new LSTM({ inputSize: 1, hiddenSize: 2 }), head: { weight: new Float32Array(6), bias: null, inFeatures: 3, outFeatures: 2 } } as never)).toThrow(/the head takes 3 features, the LSTM gives 2/);
  });

  it('a sequence_lens of 0: onnxruntime gives zeros for that row, we refuse it, and the other rows agree without it', async () => {
    // What the README tells ONNX users: lengths are 1..T here (as in PyTorch); drop an
    // empty sequence's row before the call. Two layers, bidirectional, so the zeros show in
    // every layer's and direction's states.
    const L = 2, D = 2, H = 4, I = 3, T = 4, B = 3;
    const m = new LSTM({ inputSize: I, hiddenSize: H, numLayers: L, bidirectional: true, seed: 11 });
    const rand = mulberry32(12);
    const x = randomTensor([T, B, I], rand);
    const h0 = randomTensor([L * D, B, H], rand, 0.5);
    const c0 = randomTensor([L * D, B, H], rand, 0.5);
    const lengths = Int32Array.from([3, 0, 4]);
    const session = await ort.InferenceSession.create(exportOnnx(m, { lengths: true }));
    const got = await session.run({
      input: new ort.Tensor('float32', x.data, x.shape),
      h0: new ort.Tensor('float32', h0.data, h0.shape),
      c0: new ort.Tensor('float32', c0.data, c0.shape),
      lengths: new ort.Tensor('int32', lengths, [B]),
    });
    expect(() => m.forward(x, { h0, c0, lengths })).toThrow(expect.objectContaining({ code: 'LSTM_SHAPE', message: expect.stringMatching(/^lengths\[1\]: .* got 0/) }));
    // Row b of a [rows, B, w] tensor's data, and the tensor without row 1.
    const row = (data: Float32Array, w: number, b: number) => Array.from({ length: data.length / (B * w) }, (_, r) => Array.from(data.subarray((r * B + b) * w, (r * B + b + 1) * w))).flat();
    const drop = (t: { data: Float32Array; shape: number[] }) => {
      const w = t.shape[2];
      const rows = t.shape[0];
      const data = new Float32Array(rows * (B - 1) * w);
      for (let r = 0; r < rows; r++) {
        data.set(t.data.subarray((r * B) * w, (r * B + 1) * w), (r * (B - 1)) * w);
        data.set(t.data.subarray((r * B + 2) * w, (r * B + 3) * w), (r * (B - 1) + 1) * w);
      }
      return { data, shape: [rows, B - 1, w] };
    };
    const ortOut = { output: got.output.data as Float32Array, hn: got.hn.data as Float32Array, cn: got.cn.data as Float32Array };
    for (const [k, w] of [['output', D * H], ['hn', H], ['cn', H]] as const) {
      expect(row(ortOut[k], w, 1).every((v) => v === 0), `onnxruntime's ${k} for the empty row`).toBe(true);
    }
    const ours = m.forward(drop(x), { h0: drop(h0), c0: drop(c0), lengths: [3, 4] });
    for (const [k, w] of [['output', D * H], ['hn', H], ['cn', H]] as const) {
      expectClose(drop({ data: ortOut[k], shape: [ortOut[k].length / (B * w), B, w] }), ours[k], `${k} without the empty row`);
    }
  });

  it('projection and full peepholes cannot be expressed: LSTM_FORMAT says why', () => {
    expectFormat(() => exportOnnx(new LSTM({ inputSize: 2, hiddenSize: 4, projSize: 2 })), /no projection/);
    expectFormat(() => exportOnnx(new LSTM({ inputSize: 2, hiddenSize: 4, peephole: 'full' })), /only diagonal peepholes/);
    expect(() => exportOnnx(new LSTM({ inputSize: 2, hiddenSize: 4 }), { opset: 7 })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
  });
});

describe('hostile ONNX files end in LSTM_FORMAT', () => {
  const mutate = (name: string, fn: (m: import('onnx-proto').onnx.ModelProto) => void): Uint8Array => {
    const m = onnx.ModelProto.decode(onnxFile(name));
    fn(m);
    return onnx.ModelProto.encode(m).finish();
  };

  it('garbage and every truncation of a valid file', () => {
    expectFormat(() => loadOnnx(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3])), /not a valid ONNX protobuf|no graph/);
    expectFormat(() => loadOnnx(new Uint8Array(0)), /no graph/);
    // A prefix that ends on a field boundary is a valid (shorter) protobuf: it must then
    // load as a working model; every other prefix must end in an LstmError.
    const good = onnxFile('o01_forward_peephole');
    let refused = 0;
    for (let n = 0; n < good.length; n++) {
      try {
        const m = loadOnnx(good.subarray(0, n));
        expect(m.forward({ data: new Float32Array(4), shape: [1, 4] }).output.data.every(Number.isFinite)).toBe(true);
      } catch (err) {
        expect(err, `prefix ${n}`).toBeInstanceOf(LstmError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(good.length * 0.9);
  });

  it('deeply nested messages', () => {
    // AttributeProto.g (field 6) -> GraphProto.node (field 1) -> NodeProto.attribute (field 5) -> ...
    let inner = new Uint8Array(0);
    const wrap = (field: number, payload: Uint8Array): Uint8Array => {
      const len: number[] = [];
      let v = payload.length;
      do {
        len.push((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>>= 7;
      } while (v > 0);
      const out = new Uint8Array(1 + len.length + payload.length);
      out[0] = (field << 3) | 2;
      out.set(len, 1);
      out.set(payload, 1 + len.length);
      return out;
    };
    for (let depth = 0; depth < 20000; depth++) inner = wrap(1, wrap(5, wrap(6, inner)));
    expectFormat(() => loadOnnx(wrap(7, inner)), /not a valid ONNX protobuf|Constant|LSTM/);
  });

  it('huge declared dims are refused before any allocation', () => {
    const bytes = mutate('o07_plain', (m) => {
      m.graph!.initializer![0].dims = [2 ** 40, 2 ** 20];
    });
    expectFormat(() => loadOnnx(bytes), /too large/);
    const mismatch = mutate('o07_plain', (m) => {
      m.graph!.initializer![0].dims = [1, 28, 7];
    });
    expectFormat(() => loadOnnx(mismatch), /need 784 bytes|W has dims/);
  });

  it('another op on the data path is named', () => {
    const bytes = mutate('e02_export_stack3_bf', (m) => {
      const squeeze = m.graph!.node!.find((n) => n.opType === 'Squeeze')!;
      const out = squeeze.output![0];
      squeeze.output = [`${out}_pre`];
      m.graph!.node!.push(onnx.NodeProto.create({ opType: 'Relu', name: 'the_relu', input: [`${out}_pre`], output: [out] }));
    });
    expectFormat(() => loadOnnx(bytes), /node 'the_relu' \(Relu\)/);
  });

  it('an LSTM that feeds itself (a cycle) is refused, not followed forever', () => {
    const bytes = mutate('o07_plain', (m) => {
      const node = m.graph!.node!.find((n) => n.opType === 'LSTM')!;
      m.graph!.input = m.graph!.input!.filter((v) => v.name !== node.input![0]);
      node.input![0] = node.output![0]; // X is its own Y
    });
    expectFormat(() => loadOnnx(bytes), /cycle|no LSTM node reads a graph input/);
  });

  it('layout=1, unknown activations and mismatched layers', () => {
    const layout = mutate('o07_plain', (m) => {
      const node = m.graph!.node!.find((n) => n.opType === 'LSTM')!;
      node.attribute = node.attribute!.filter((a) => a.name !== 'layout');
      node.attribute.push(onnx.AttributeProto.create({ name: 'layout', type: onnx.AttributeProto.AttributeType.INT, i: 1 }));
    });
    expectFormat(() => loadOnnx(layout), /layout=1/);
    const act = mutate('o01_forward_peephole', (m) => {
      const node = m.graph!.node!.find((n) => n.opType === 'LSTM')!;
      node.attribute = node.attribute!.filter((a) => a.name !== 'activations');
      node.attribute.push(
        onnx.AttributeProto.create({ name: 'activations', type: onnx.AttributeProto.AttributeType.STRINGS, strings: ['Sigmoid', 'Gelu', 'Tanh'].map((s) => new TextEncoder().encode(s)) }),
      );
    });
    expectFormat(() => loadOnnx(act), /unsupported ONNX activation "Gelu"/);
    const noLstm = mutate('o07_plain', (m) => {
      m.graph!.node = m.graph!.node!.filter((n) => n.opType !== 'LSTM');
    });
    expectFormat(() => loadOnnx(noLstm), /no LSTM node/);
  });
});

describe('loadOnnx: weights stored as bfloat16 (LSTM-22)', () => {
  it('bfloat16 initializers, in raw_data or int32_data, read as the float32 they round to', () => {
    const lstm = new LSTM({ inputSize: 3, hiddenSize: 4, bidirectional: true, seed: 5, backend: 'js' });
    const bytes = lib.exportOnnx(lstm, { opset: 14 });
    lstm.dispose();
    const toBf16 = (f: number): number => {
      const u = new Uint32Array(new Float32Array([f]).buffer)[0];
      return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff; // round to nearest even
    };
    const fromBf16 = (b: number): number => new Float32Array(new Uint32Array([b << 16]).buffer)[0];
    const rounded = onnx.ModelProto.decode(bytes);
    const bf16 = onnx.ModelProto.decode(bytes);
    const weights = new Set(rounded.graph!.node!.filter((n) => n.opType === 'LSTM').flatMap((n) => n.input!.slice(1, 4)));
    let k = 0;
    for (const [a, b] of rounded.graph!.initializer!.map((t, i) => [t, bf16.graph!.initializer![i]] as const)) {
      if (!weights.has(a.name!)) continue;
      const values = new Float32Array(a.rawData!.slice().buffer, 0, a.rawData!.length / 4);
      const bits = Array.from(values, toBf16);
      a.rawData = new Uint8Array(Float32Array.from(bits, fromBf16).buffer);
      b.dataType = 16;
      if (k++ % 2 === 0) b.rawData = new Uint8Array(Uint16Array.from(bits).buffer);
      else {
        b.rawData = new Uint8Array(0);
        b.int32Data = bits;
      }
    }
    expect(k).toBe(3);
    const x = randomTensor([5, 2, 3], mulberry32(3));
    const want = loadOnnx(onnx.ModelProto.encode(rounded).finish(), { backend: 'js' });
    const got = loadOnnx(onnx.ModelProto.encode(bf16).finish(), { backend: 'js' });
    expect(Array.from(got.forward(x).output.data)).toEqual(Array.from(want.forward(x).output.data));
    for (const m of [want, got]) m.dispose();
  });
});

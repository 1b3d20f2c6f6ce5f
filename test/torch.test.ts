// torch.save files (.pt / .pth): state dicts and checkpoints from PyTorch itself
// (test/fixtures/torch-save/make.py), and hostile archives built here.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENGINES, FIXTURES, LSTM, LstmError, expectClose, expectFormat, lib, torchOptions, withEngine } from './helpers';

const require = createRequire(import.meta.url);

const DIR = path.join(FIXTURES, 'torch-save');
const file = (name: string) => new Uint8Array(readFileSync(path.join(DIR, name)));
const reference = (name: string) => lib.loadSafetensors(file(`${name}.safetensors`));
const { loadTorch } = lib;

describe('loadTorch reads what torch.save wrote', () => {
  it.each([
    ['lstm_state_dict.pt', 'lstm_state_dict'],
    ['checkpoint.pth', 'checkpoint'],
    ['views_and_dtypes.pt', 'views_and_dtypes'],
    // the same three objects in the legacy format (before PyTorch 1.6, or _use_new_zipfile_serialization=False)
    ['legacy_lstm_state_dict.pt', 'lstm_state_dict'],
    ['legacy_checkpoint.pth', 'checkpoint'],
    ['legacy_views_and_dtypes.pt', 'views_and_dtypes'],
  ])('%s: every tensor, bit for bit as float32', (name, ref) => {
    const { tensors } = loadTorch(file(name));
    const want = reference(ref).tensors;
    const expected = Object.keys(want).filter((k) => !['input', 'output', 'hn', 'cn'].includes(k));
    expect(Object.keys(tensors).sort()).toEqual(expected.sort());
    for (const k of expected) {
      expect(tensors[k].shape, k).toEqual(want[k].shape);
      expect(tensors[k].data, k).toEqual(want[k].data);
    }
  });

  it.each(['views_and_dtypes.pt', 'legacy_views_and_dtypes.pt'])('%s: views of one storage (offsets, transposed, permuted), a scalar, an empty tensor and every dtype', (name) => {
    const { tensors } = loadTorch(file(name));
    expect(tensors.b.shape).toEqual([4, 5]); // flat[24:44].view(5, 4).t()
    expect(tensors.c.shape).toEqual([5, 2, 2]);
    expect(tensors.scalar).toMatchObject({ shape: [], dtype: 'F32' });
    expect(Array.from(tensors.scalar.data)).toEqual([3.5]);
    expect(tensors.empty.shape).toEqual([0, 3]);
    expect(Array.from(tensors.long.data)).toEqual([5, -2, 2 ** 40]);
    expect(Array.from(tensors.bool.data)).toEqual([1, 0, 1]);
    expect(Array.from(tensors.uint8.data)).toEqual([0, 200, 255]);
    expect(Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, t.dtype]))).toMatchObject({
      half: 'F16', bfloat16: 'BF16', double: 'F64', long: 'I64', int: 'I32', bool: 'BOOL', uint8: 'U8', a: 'F32',
    });
  });

  it('the legacy format: its plain values as the zip format gives them, and a storage view (PyTorch before 0.4)', () => {
    expect(loadTorch(file('legacy_checkpoint.pth')).values).toEqual(loadTorch(file('checkpoint.pth')).values);
    // persistent id ('storage', FloatStorage, 'root', 'cpu', 10, ('view', 3, 7)): elements 3.. of
    // arange(10) * 0.5, read by a tensor at offset 1 with size (2, 3), stride (1, 2) (make.py checks it with torch.load)
    const { tensors } = loadTorch(file('legacy_storage_view.pt'));
    expect(tensors.whole).toEqual({ data: Float32Array.from({ length: 10 }, (_, i) => i / 2), shape: [2, 5], dtype: 'F32' });
    expect(tensors.view).toEqual({ data: new Float32Array([2, 3, 4, 2.5, 3.5, 4.5]), shape: [2, 3], dtype: 'F32' });
    const lstm = new LSTM(lib.inferOptions(loadTorch(file('legacy_format.pt')).tensors));
    expect(lstm.config).toMatchObject({ inputSize: 2, hiddenSize: 3, numLayers: 1 });
    lstm.loadStateDict(loadTorch(file('legacy_format.pt')).tensors);
  });

  it('a checkpoint: nested names, the optimizer state, and its plain values', () => {
    const { tensors, values } = loadTorch(file('checkpoint.pth'));
    expect(values).toMatchObject({ epoch: 7, best_loss: 0.125, tag: 'run-1', done: false, 'optimizer.param_groups.0.lr': 0.001 });
    expect(tensors['optimizer.state.0.exp_avg'].shape).toEqual(tensors['model.lstm.weight_ih_l0'].shape);
    const lstm = new LSTM({ ...lib.inferOptions(tensors, { prefix: 'model.lstm.' }), batchFirst: true });
    lstm.loadStateDict(tensors, { prefix: 'model.lstm.' });
    expect(lstm.config).toMatchObject({ inputSize: 2, hiddenSize: 4, numLayers: 1 });
    // inferOptions says where the LSTM is when the prefix is missing
    expect(() => lib.inferOptions(tensors)).toThrow(/found one under prefix 'model\.lstm\.'/);
  });

  it('a model with its own module names (self.rnn, self.fc) runs as a SequenceModel', () => {
    const { tensors } = loadTorch(file('net.pt'));
    const ref = reference('net').tensors;
    const options = lib.inferOptions(tensors, { prefix: 'rnn.' });
    const model = new lib.SequenceModel({ ...options, batchFirst: true, outputSize: tensors['fc.weight'].shape[0] });
    model.loadStateDict(tensors, { lstm: 'rnn.', head: 'fc.' });
    expectClose(model.forward(ref.input).output, ref.output, 'net output');
    expect(() => model.loadStateDict(tensors)).toThrow(/missing tensors: head\.weight/);
    expect(() => model.loadStateDict(tensors, { head: 3 as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
  });

  it('a module pickled whole (torch.save(model)) reads as its state dict, and its hyperparameters as values', () => {
    const { tensors, values } = loadTorch(file('whole_module.pt')); // torch.save(nn.LSTM(2, 3))
    expect(Object.keys(tensors)).toEqual(['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0']);
    expect(values).toMatchObject({ input_size: 2, hidden_size: 3, num_layers: 1, batch_first: false, bidirectional: false, proj_size: 0 });
    expect(new LSTM(lib.inferOptions(tensors)).loadStateDict(tensors).config).toMatchObject({ inputSize: 2, hiddenSize: 3 });
  });

  it.each(['net_whole.pt', 'net_scripted.pt', 'net_traced.pt'])('%s (torch.save(model), torch.jit.script, torch.jit.trace): the state dict, and the model runs as PyTorch ran it', (name) => {
    const { tensors, values } = loadTorch(file(name));
    const want = loadTorch(file('net.pt')).tensors; // torch.save(net.state_dict())
    expect(Object.keys(tensors).sort()).toEqual(Object.keys(want).sort());
    for (const k of Object.keys(want)) expect(tensors[k], k).toEqual(want[k]);
    if (name === 'net_whole.pt') expect(values).toMatchObject({ 'rnn.batch_first': true, 'rnn.num_layers': 2, 'fc.in_features': 6 });
    const ref = reference('net').tensors;
    const model = new lib.SequenceModel({ ...lib.inferOptions(tensors, { prefix: 'rnn.' }), batchFirst: true, outputSize: 2 });
    model.loadStateDict(tensors, { lstm: 'rnn.', head: 'fc.' });
    expectClose(model.forward(ref.input).output, ref.output, `${name} output`);
  });

  it('SequenceModel.fromTorch finds the LSTM and its Linear head by names and shapes, in every kind of file', () => {
    const ref = reference('net').tensors;
    // a model saved whole records batch_first; a state dict or TorchScript file needs it said
    for (const [name, options] of [['net_whole.pt', {}], ['net.pt', { batchFirst: true }], ['net_scripted.pt', { batchFirst: true }], ['net_traced.pt', { batchFirst: true, lstm: 'rnn.', head: 'fc.' }]] as const) {
      const model = lib.SequenceModel.fromTorch(file(name), options);
      expect(model.lstm.config, name).toMatchObject({ inputSize: 3, hiddenSize: 6, numLayers: 2, batchFirst: true });
      expectClose(model.forward(ref.input).output, ref.output, `${name} output`);
    }
    // a checkpoint: under model.lstm. / model.head., beside the optimizer's state
    expect(lib.SequenceModel.fromTorch(file('checkpoint.pth')).head.outFeatures).toBe(1);
    // two candidates for the head, or none: say so, and which option settles it
    const { tensors } = loadTorch(file('net.pt'));
    const twoHeads = lib.saveTorch({ ...tensors, 'aux.weight': tensors['fc.weight'] });
    expect(() => lib.SequenceModel.fromTorch(twoHeads)).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS', message: expect.stringMatching(/2 candidates for the Linear head reading 6 features \('fc\.', 'aux\.'\); pass options\.head/) }));
    expect(lib.SequenceModel.fromTorch(twoHeads, { head: 'aux.' }).head.outFeatures).toBe(2);
    expect(() => lib.SequenceModel.fromTorch(file('lstm_state_dict.pt'))).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS', message: expect.stringMatching(/no Linear head reading 4 features/) }));
    expect(() => lib.SequenceModel.fromTorch(file('net.pt'), { lstm: 3 as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    expect(() => lib.SequenceModel.fromTorch(file('net.pt'), { batchFirst: 'yes' as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
  });

  it('SequenceModel.fromStateDict: the same search on a state dict from any loader (safetensors, npz, torch.save)', () => {
    // PyTorch's trained nn.LSTM + nn.Linear, saved as a safetensors state dict beside its data
    const m01 = lib.loadSafetensors(new Uint8Array(readFileSync(path.join(FIXTURES, 'm01_sine_model.safetensors')))).tensors;
    for (const engine of ENGINES) {
      const model = withEngine(engine, () => lib.SequenceModel.fromStateDict(m01, { backend: engine.backend }));
      expect(model.lstm.config).toMatchObject({ inputSize: 1, hiddenSize: 32, numLayers: 2, batchFirst: false });
      expectClose(model.forward(m01.input).output, m01.prediction, `m01 on ${engine.label}`, 2e-5);
      model.dispose();
    }
    // torch.save's state dict, and the same through numpy's .npz
    const ref = reference('net').tensors;
    const { tensors } = loadTorch(file('net.pt'));
    for (const dict of [tensors, lib.loadNpz(lib.saveNpz(tensors)).tensors]) {
      const model = lib.SequenceModel.fromStateDict(dict, { batchFirst: true });
      expectClose(model.forward(ref.input).output, ref.output, 'net.pt state dict');
      model.dispose();
    }
    expect(() => lib.SequenceModel.fromStateDict({ ...tensors, 'aux.weight': tensors['fc.weight'] })).toThrow(
      expect.objectContaining({ code: 'LSTM_WEIGHTS', message: expect.stringMatching(/fromStateDict: 2 candidates for the Linear head reading 6 features \('fc\.', 'aux\.'\)/) }),
    );
    const noLstm = Object.fromEntries(Object.entries(tensors).filter(([k]) => k.startsWith('fc.')));
    expect(() => lib.SequenceModel.fromStateDict(noLstm)).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS', message: expect.stringMatching(/no LSTM in the state dict; pass options\.lstm/) }));
    expect(() => lib.SequenceModel.fromStateDict(null as never)).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    // LSTM.fromStateDict: the LSTM alone, under a prefix
    const rnn = LSTM.fromStateDict(tensors, { prefix: 'rnn.' });
    expect(rnn.config).toMatchObject({ inputSize: 3, hiddenSize: 6, numLayers: 2 });
    expect(rnn.stateDict().weight_hh_l1.data).toEqual(tensors['rnn.weight_hh_l1'].data);
    rnn.dispose();
    expect(() => LSTM.fromStateDict(tensors, { prefix: 'fc.' })).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS' }));
    expect(() => LSTM.fromStateDict(tensors, { prefx: 'rnn.' } as never)).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    expect(() => lib.SequenceModel.fromStateDict({ ...tensors, 'rnn.weight_ih_l0': { data: [1], shape: [1] } } as never)).toThrow(expect.objectContaining({ code: 'LSTM_DTYPE' }));
  });

  it('what it refuses: the tar format before PyTorch 0.4, a pickle that is not torch.save\'s, not a zip', () => {
    const tar = new Uint8Array(1024);
    tar.set(new TextEncoder().encode('ustar'), 257);
    expectFormat(() => loadTorch(tar), /tar archive: the format of PyTorch before 0\.4/);
    expectFormat(() => loadTorch(new Uint8Array([0x80, 2, 0x4b, 7, 0x2e])), /not the magic number/); // pickle.dumps(7)
    const legacy = file('legacy_format.pt');
    expectFormat(() => loadTorch(legacy.subarray(0, legacy.length - 1)), /run past the file's 1052 bytes/);
    expectFormat(() => loadTorch(file('lstm_state_dict.safetensors')), /not a zip archive/);
    expectFormat(() => loadTorch(new Uint8Array(3)), /too short/);
    expect(() => loadTorch('x' as unknown as Uint8Array)).toThrow(expect.objectContaining({ code: 'LSTM_FORMAT' }));
  });

  it.each(['lstm_state_dict.pt', 'legacy_lstm_state_dict.pt'])('every truncation of %s loads or ends in an LstmError', (name) => {
    const good = file(name);
    for (let n = 0; n < good.length; n += 7) {
      try {
        loadTorch(good.subarray(0, n));
      } catch (err) {
        expect(err, `prefix ${n}`).toBeInstanceOf(LstmError);
      }
    }
  });
});

describe('saveTorch writes what torch.load reads', () => {
  it('the bytes PyTorch was checked against (make.py: torch.load, weights_only too, gives the state dict back)', () => {
    const { tensors } = loadTorch(file('lstm_state_dict.pt'));
    expect(lib.saveTorch(tensors)).toEqual(file('written_by_lstm_native.pt'));
  });

  it('round trips through loadTorch: any model, scalars and empty tensors, and names as given', () => {
    const m = new LSTM({ inputSize: 4, hiddenSize: 6, numLayers: 2, peephole: 'full', projSize: 3, seed: 2 });
    const sd: Record<string, import('./helpers').Tensor> = { ...m.stateDict(), scalar: { data: new Float32Array([2.5]), shape: [] }, empty: { data: new Float32Array(0), shape: [0, 4] }, 'model.x/y é': { data: new Float32Array([NaN, -0, Infinity]), shape: [3] } };
    const back = loadTorch(lib.saveTorch(sd)).tensors;
    expect(Object.keys(back)).toEqual(Object.keys(sd));
    for (const [k, t] of Object.entries(sd)) {
      expect(back[k].shape, k).toEqual(t.shape);
      expect(back[k].data, k).toEqual(t.data);
    }
    expect(() => lib.saveTorch(null as never)).toThrow(expect.objectContaining({ code: 'LSTM_SHAPE' }));
    expect(() => lib.saveTorch({ w: { data: [1, 2] as never, shape: [2] } })).toThrow(expect.objectContaining({ code: 'LSTM_DTYPE' }));
  });
});

describe.each(ENGINES)('a torch.save state dict on $label', (engine) => {
  it('loads into an LSTM (projection, bidirectional, 2 layers) that matches PyTorch', () => {
    const { tensors } = loadTorch(file('lstm_state_dict.pt'));
    const ref = reference('lstm_state_dict');
    const lstm = withEngine(engine, () => new LSTM({ ...lib.inferOptions(tensors), backend: engine.backend }));
    const cfg = torchOptions(ref.metadata);
    expect(lstm.config).toMatchObject({ inputSize: cfg.inputSize, hiddenSize: cfg.hiddenSize, numLayers: cfg.numLayers, projSize: cfg.projSize, numDirections: 2 });
    lstm.loadStateDict(tensors);
    const r = lstm.forward(ref.tensors.input);
    expectClose(r.output, ref.tensors.output, 'output');
    expectClose(r.hn, ref.tensors.hn, 'hn');
    expectClose(r.cn, ref.tensors.cn, 'cn');
    lstm.dispose();
  });

  it('an nn.LSTMCell state dict (names without _l0): step and forward follow the cell', () => {
    const { tensors } = loadTorch(file('lstm_cell.pt'));
    expect(Object.keys(tensors).sort()).toEqual(['bias_hh', 'bias_ih', 'weight_hh', 'weight_ih']);
    const ref = reference('lstm_cell').tensors;
    const lstm = withEngine(engine, () => new LSTM({ ...lib.inferOptions(tensors), backend: engine.backend }));
    expect(lstm.config).toMatchObject({ inputSize: 3, hiddenSize: 4, numLayers: 1, numDirections: 1, bias: true });
    lstm.loadStateDict(tensors);
    const [T, B] = ref.input.shape;
    const state = { h: { data: ref.h0.data.slice(), shape: [1, B, 4] }, c: { data: ref.c0.data.slice(), shape: [1, B, 4] } };
    for (let t = 0; t < T; t++) {
      const y = lstm.step({ data: ref.input.data.slice(t * B * 3, (t + 1) * B * 3), shape: [B, 3] }, state);
      expectClose(y, { data: ref.output.data.slice(t * B * 4, (t + 1) * B * 4), shape: [B, 4] }, `step ${t}`);
    }
    expectClose({ data: state.c.data, shape: [B, 4] }, ref.cn, 'c after the steps');
    const f = lstm.forward(ref.input, { h0: { data: ref.h0.data, shape: [1, B, 4] }, c0: { data: ref.c0.data, shape: [1, B, 4] } });
    expectClose(f.output, ref.output, 'forward');
    // The cell's names and nn.LSTM's for the same parameter: refused, not one silently kept.
    expect(() => lstm.loadStateDict({ ...tensors, weight_ih_l0: tensors.weight_ih })).toThrow(/given twice/);
    lstm.dispose();
  });
});

// ---- hostile archives, built here from a few pickle opcodes.

// Archives of hand-built pickles go through saveTorch's own zip writer: the reader under
// test checks the directory and entries, not how they were written.
const { writeZip: zip } = require('../dist/cjs/io/torch.js') as { writeZip: (entries: [string, Uint8Array][]) => Uint8Array };

const enc = new TextEncoder();
const op = {
  str: (s: string) => {
    const b = enc.encode(s);
    return [0x58, b.length & 255, (b.length >> 8) & 255, 0, 0, ...b];
  },
  int: (n: number) => [0x4a, n & 255, (n >> 8) & 255, (n >> 16) & 255, (n >>> 24) & 255],
  global: (m: string, n: string) => [0x63, ...enc.encode(`${m}\n${n}\n`)],
};
/** A tensor of the given size and stride over storage `key` of `numel` floats. */
const tensorOps = (key: string, numel: number, offset: number, size: number[], stride: number[]) => [
  ...op.global('torch._utils', '_rebuild_tensor_v2'),
  0x28, // MARK (args)
  0x28, ...op.str('storage'), ...op.global('torch', 'FloatStorage'), ...op.str(key), ...op.str('cpu'), ...op.int(numel), 0x74, 0x51, // BINPERSID
  ...op.int(offset),
  0x28, ...size.flatMap(op.int), 0x74,
  0x28, ...stride.flatMap(op.int), 0x74,
  0x89, // requires_grad False
  ...op.global('collections', 'OrderedDict'), 0x29, 0x52,
  0x74, 0x52, // args tuple, REDUCE
];
/** { name: tensor, ... } as a pickle. */
const dictPickle = (items: [string, number[]][]) => new Uint8Array([0x80, 2, 0x7d, 0x28, ...items.flatMap(([k, v]) => [...op.str(k), ...v]), 0x75, 0x2e]);
const floats = (n: number) => new Uint8Array(new Float32Array(n).map((_, i) => i).buffer);

describe('hostile torch.save archives end in LSTM_FORMAT, with nothing large allocated', () => {
  it('a hand-built archive loads (the writer and opcodes are right)', () => {
    const bytes = zip([['m/data.pkl', dictPickle([['w', tensorOps('0', 6, 0, [3, 2], [1, 3])]])], ['m/data/0', floats(6)]]);
    const { tensors } = loadTorch(bytes);
    expect(tensors.w.shape).toEqual([3, 2]);
    expect(Array.from(tensors.w.data)).toEqual([0, 3, 1, 4, 2, 5]); // the transpose of [[0,1,2],[3,4,5]]
  });

  it('views that read past their storage, broadcast views, and storages of the wrong size', () => {
    const one = (size: number[], stride: number[], numel = 4, bytes = floats(4)) =>
      zip([['a/data.pkl', dictPickle([['w', tensorOps('0', numel, 0, size, stride)]])], ['a/data/0', bytes]]);
    expectFormat(() => loadTorch(one([5], [1])), /reads past its storage of 4 elements/);
    expectFormat(() => loadTorch(one([2 ** 30], [0])), /broadcast view/);
    expectFormat(() => loadTorch(one([2, 2], [2, 1], 4, floats(2))), /holds 8 bytes, not the 16 of 4 F32 elements/);
    expectFormat(() => loadTorch(zip([['a/data.pkl', dictPickle([['w', tensorOps('9', 4, 0, [4], [1])]])]])), /storage '9' is not in the archive/);
  });

  it('many views of one storage cannot make it allocate more than twice what the file holds', () => {
    const n = 1 << 14;
    const items: [string, number[]][] = Array.from({ length: 200 }, (_, i) => [`v${i}`, tensorOps('0', n, 0, [n], [1])]);
    expectFormat(() => loadTorch(zip([['a/data.pkl', dictPickle(items)], ['a/data/0', floats(n)]])), /more elements than its storages hold twice over/);
    // a few are fine (a GPU LSTM's parameters are views of one flat buffer)
    const few = loadTorch(zip([['a/data.pkl', dictPickle(items.slice(0, 2))], ['a/data/0', floats(n)]]));
    expect(Object.keys(few.tensors)).toEqual(['v0', 'v1']);
  });

  it('calls outside the list are refused by name, and classes are never run', () => {
    const call = (m: string, n: string) => zip([['a/data.pkl', new Uint8Array([0x80, 2, ...op.global(m, n), 0x28, ...op.str('echo hi'), 0x74, 0x52, 0x2e])]]);
    expectFormat(() => loadTorch(call('os', 'system')), /os\.system, which this reader does not take/);
    expectFormat(() => loadTorch(call('builtins', 'eval')), /builtins\.eval/);
    expectFormat(() => loadTorch(call('torch', 'load')), /torch\.load/);
    // an object of any class is only its state: NEWOBJ of os.system makes an inert object,
    // whose state may hold a call, which is refused as any other
    const obj = (state: number[]) => zip([['a/data.pkl', new Uint8Array([0x80, 2, ...op.global('os', 'system'), 0x29, 0x81, 0x7d, 0x28, ...op.str('w'), ...state, 0x75, 0x62, 0x2e])]]);
    expect(loadTorch(obj([...op.str('x')])).values).toEqual({ w: 'x' });
    expectFormat(() => loadTorch(obj([...op.global('os', 'system'), 0x28, ...op.str('echo hi'), 0x74, 0x52])), /calls os\.system, which this reader does not take/);
  });

  it('deep nesting, self-reference, unknown opcodes and a compressed entry', () => {
    // 100 lists nested by APPEND
    const nested = new Uint8Array([0x80, 2, ...new Array(100).fill(0x5d), ...new Array(99).fill(0x61), 0x2e]);
    expectFormat(() => loadTorch(zip([['a/data.pkl', nested]])), /nested deeper than 64/);
    // a list that holds itself: read once, no tensors, no endless walk
    const cyclic = new Uint8Array([0x80, 2, 0x5d, 0x71, 0, 0x68, 0, 0x61, 0x2e]);
    expect(loadTorch(zip([['a/data.pkl', cyclic]])).tensors).toEqual({});
    expectFormat(() => loadTorch(zip([['a/data.pkl', new Uint8Array([0x80, 2, 0x69, 0x2e])]])), /opcode 0x69/);
    expectFormat(() => loadTorch(zip([['a/data.pkl', new Uint8Array([0x80, 2, 0x29])]])), /ends inside an opcode/);
    expectFormat(() => loadTorch(zip([['x.txt', new Uint8Array(4)]])), /no data\.pkl/);
    const compressed = zip([['a/data.pkl', dictPickle([])]]);
    const cd = compressed.length - 22 - (46 + 'a/data.pkl'.length);
    compressed[cd + 10] = 8; // deflate
    expectFormat(() => loadTorch(compressed), /compressed \(method 8\)/);
  });
});

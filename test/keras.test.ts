// Keras model files (.keras and .h5): the HDF5 reader on h5py's layouts, and LSTM /
// SequenceModel.fromKerasFile against a numpy LSTM written from Keras' equations and against
// tfjs-layers (Keras' port). The files come from test/fixtures/keras/make.py (h5py and
// zipfile, laid out as Keras' savers do).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENGINES, FIXTURES, LSTM, LstmError, expectClose, expectFormat, lib, loadSafetensors, withEngine, type Tensor } from './helpers';

const require = createRequire(import.meta.url);
const DIR = path.join(FIXTURES, 'keras');
const read = (f: string) => new Uint8Array(readFileSync(path.join(DIR, f)));
const expected = loadSafetensors(read('expected.safetensors')).tensors;
const meta = JSON.parse(readFileSync(path.join(DIR, 'expected.json'), 'utf8')) as Record<string, { lstm?: number[][][] | number[][]; mode: string }>;
const MODELS = ['k2_seq_dense.h5', 'k3_bidir_stack.h5', 'k2_final_backwards.h5', 'k21_list_config.h5', 'k3_stack_final.keras', 'k3_bidir_tagger.keras', 'k3_dropout.keras', 'k2_merge_sum_ave.h5'];

const nested = (v: unknown): Tensor => {
  const shape: number[] = [];
  for (let a = v; Array.isArray(a); a = a[0]) shape.push(a.length);
  return { data: Float32Array.from((v as unknown[]).flat(Infinity) as number[]), shape };
};

describe('loadHdf5: the HDF5 that h5py writes', () => {
  it('superblock 0, symbol-table groups and fixed-length string attributes (Keras 2 model.save)', () => {
    const f = lib.loadHdf5(read('k2_seq_dense.h5'));
    expect(Object.keys(f.tensors).sort()).toEqual([
      'model_weights/dense/dense/bias:0',
      'model_weights/dense/dense/kernel:0',
      'model_weights/lstm/lstm/lstm_cell/bias:0',
      'model_weights/lstm/lstm/lstm_cell/kernel:0',
      'model_weights/lstm/lstm/lstm_cell/recurrent_kernel:0',
      'optimizer_weights/Adam/iter:0',
    ]);
    expect(f.tensors['model_weights/lstm/lstm/lstm_cell/kernel:0'].shape).toEqual([3, 24]);
    expect(f.tensors['model_weights/lstm/lstm/lstm_cell/recurrent_kernel:0'].shape).toEqual([6, 24]);
    // an int64 scalar dataset
    expect(f.tensors['optimizer_weights/Adam/iter:0']).toEqual({ data: new Float32Array([7]), shape: [] });
    expect(f.attributes[''].keras_version).toBe('2.15.0');
    expect(JSON.parse(f.attributes[''].model_config as string).class_name).toBe('Sequential');
    expect(f.attributes.model_weights.layer_names).toEqual(['lstm', 'dense']);
    expect(f.attributes['model_weights/lstm'].weight_names).toEqual(['lstm/lstm_cell/kernel:0', 'lstm/lstm_cell/recurrent_kernel:0', 'lstm/lstm_cell/bias:0']);
    expect(f.unread).toEqual({});
  });

  it('superblock 3, v2 object headers, link messages and variable-length strings (libver latest)', () => {
    const f = lib.loadHdf5(read('k3_bidir_stack.h5'));
    expect(Object.keys(f.tensors)).toHaveLength(15);
    expect(f.tensors['model_weights/bidirectional_1/bidirectional_1/backward_lstm_1/lstm_cell/kernel'].shape).toEqual([8, 16]);
    expect(f.attributes[''].keras_version).toBe('3.3.3');
    expect(f.attributes.model_weights.layer_names).toEqual(['bidirectional', 'bidirectional_1', 'time_distributed']);
  });

  it('float64 and a compact dataset; float16 weights of save_weights', () => {
    const f = lib.loadHdf5(read('k2_final_backwards.h5'));
    const rk = f.tensors['model_weights/lstm_7/lstm_7/lstm_cell_7/recurrent_kernel:0']; // compact
    expect(rk.shape).toEqual([5, 20]);
    expect(rk.data.every(Number.isFinite) && rk.data.some((v) => v !== 0)).toBe(true);
    const w = lib.loadHdf5(read('k2_weights_only.h5'));
    expect(w.attributes[''].layer_names).toEqual(['lstm', 'lstm_1']);
    // float16 values read exactly: each is a multiple of its own power of two
    const k = w.tensors['lstm/lstm/lstm_cell/kernel:0'].data;
    for (const v of k) expect(Math.fround(v)).toBe(v);
  });

  it('every number type: IEEE 16/32/64-bit, bfloat16 (custom float, or marked), integers, big-endian', () => {
    const f = lib.loadHdf5(read('dtypes.h5'));
    const values = Object.fromEntries(Object.entries(f.tensors).map(([k, t]) => [k, [Array.from(t.data), t.shape]]));
    expect(values).toEqual({
      f16: [[1.5, -2], [2]],
      bf16: [[1.5, -2, 3.140625], [3]],
      bf16_marked: [[1.5, -2], [2]],
      f64_be: [[1.25, -3], [2]],
      f32_be: [[0.5, -0.25], [2, 1]],
      i8: [[-5, 7], [2]],
      u32_be: [[1, 70000], [2]],
    });
    expect(f.attributes[''].be_attr).toEqual([2.5, -1]);
    // attributes in full precision
    expect(f.attributes[''].precise).toEqual([0.1]);
    expect(f.attributes[''].big).toEqual([2 ** 40 + 1]);
  });

  it('attributes of every kind; a link cycle, a group under two names, soft and external links', () => {
    const f = lib.loadHdf5(read('links.h5'));
    // 'a' holds itself ('a/self') and is also 'b': read once, under its first name
    expect(Object.keys(f.tensors)).toEqual(['a/w']);
    expect(Array.from(f.tensors['a/w'].data)).toEqual([1, 2, 3]);
    expect(f.attributes.s).toEqual({ strs: ['one', 'two'], vstrs: ['uno', 'dos', 'tres'], nums: [1.5, -2], ints: [1, 2, 3, 4], empty: [] });
    // a string dataset is not a tensor
    expect(f.tensors['s/text']).toBeUndefined();
  });

  it('chunked, compressed and densely stored objects are read (test/hdf5.test.ts has every layout)', () => {
    const c = lib.loadHdf5(read('chunked.h5'));
    expect(c.unread).toEqual({});
    expect(Array.from(c.tensors.gz.data)).toEqual(Array.from({ length: 64 }, (_, i) => i));
    expect(Array.from(c.tensors.plain_chunks.data)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const d = lib.loadHdf5(read('dense_group.h5'));
    expect(d.unread).toEqual({});
    for (let k = 0; k < 20; k++) expect(Array.from(d.tensors[`many/w${k}`].data)).toEqual([k]);
  });

  it('data a file describes but does not hold (a never-written 4 GiB dataset) is refused before it is allocated', () => {
    const before = process.memoryUsage().rss;
    expectFormat(() => lib.loadHdf5(read('unwritten.h5')), /'huge': the file's structures add up to more than \d+ elements/);
    expect(process.memoryUsage().rss - before).toBeLessThan(256 * 1024 * 1024);
  });

  it('not HDF5, or cut anywhere: LSTM_FORMAT, never another error', () => {
    expectFormat(() => lib.loadHdf5(new TextEncoder().encode('{"not": "hdf5"}')), /HDF5 signature/);
    expect(() => lib.loadHdf5('file.h5' as unknown as Uint8Array)).toThrow(LstmError);
    for (const name of ['k2_seq_dense', 'k3_bidir_stack']) {
      const bytes = read(name + '.h5');
      const x = expected[`${name}.x`];
      const whole = lib.SequenceModel.fromKerasFile(bytes, { backend: 'js' });
      const want = whole.forward(x).output;
      whole.dispose();
      let refused = 0;
      for (let n = 0; n < bytes.length; n += 7) {
        let m;
        try {
          m = lib.SequenceModel.fromKerasFile(bytes.subarray(0, n), { backend: 'js' });
        } catch (err) {
          expect(err).toBeInstanceOf(LstmError);
          refused++;
          continue;
        }
        // a cut that only drops unused space at the end (heap slack) loads the same model
        expect(Array.from(m.forward(x).output.data)).toEqual(Array.from(want.data));
        m.dispose();
      }
      expect(refused).toBeGreaterThan((0.9 * bytes.length) / 7);
    }
  });
});

describe('LSTM.fromKerasFile and SequenceModel.fromKerasFile', () => {
  for (const file of MODELS) {
    const name = file.replace(/\.\w+$/, '');
    it(`${file}: the model's predictions on every engine (${meta[name].mode})`, () => {
      const bytes = read(file);
      for (const engine of ENGINES) {
        const m = withEngine(engine, () => lib.SequenceModel.fromKerasFile(bytes, { backend: engine.backend }));
        expect(m.outputMode).toBe(meta[name].mode);
        expectClose(m.forward(expected[`${name}.x`]).output, expected[`${name}.y`], `${name} ${engine.label}`);
        m.dispose();
      }
    });
  }

  it("LSTM.fromKerasFile gives the LSTM layers' own outputs, batch-first, go_backwards aligned to the inputs", () => {
    for (const name of ['k2_seq_dense', 'k3_bidir_stack', 'k21_list_config']) {
      const m = LSTM.fromKerasFile(read(name + '.h5'));
      expect(m.config.batchFirst).toBe(true);
      expectClose(m.forward(expected[`${name}.x`]).output, nested(meta[name].lstm), name);
      m.dispose();
    }
    const tagger = LSTM.fromKerasFile(read('k3_bidir_tagger.keras'));
    expect(tagger.config).toMatchObject({ direction: 'bidirectional', bias: false, gateActivation: { name: 'hardSigmoid', alpha: 1 / 6 } });
    expectClose(tagger.forward(expected['k3_bidir_tagger.x']).output, nested(meta.k3_bidir_tagger.lstm), 'k3_bidir_tagger');
    // two stacked layers, the second return_sequences=False: its final state is Keras' output
    const stack = LSTM.fromKerasFile(read('k3_stack_final.keras'));
    expect(stack.config.numLayers).toBe(2);
    const hn = stack.forward(expected['k3_stack_final.x']).hn;
    expectClose({ data: hn.data.subarray(15), shape: [3, 5] }, nested(meta.k3_stack_final.lstm), 'k3_stack_final hn[1]');
    for (const m of [tagger, stack]) m.dispose();
    const back = LSTM.fromKerasFile(read('k2_final_backwards.h5'));
    expect(back.config.direction).toBe('reverse');
    expect(back.config.bias).toBe(false);
    // return_sequences=False: Keras' output is the state after the whole (reversed) sequence
    expectClose(back.forward(expected['k2_final_backwards.x']).hn, { ...nested(meta.k2_final_backwards.lstm), shape: [1, 3, 5] }, 'hn');
    back.dispose();
  });

  it("hard_sigmoid is Keras 3's when Keras 3 wrote the file; hardSigmoid overrides", () => {
    const bytes = read('k3_bidir_stack.h5');
    const k3 = LSTM.fromKerasFile(bytes);
    const k2 = LSTM.fromKerasFile(bytes, { hardSigmoid: 'keras2' });
    expect(k3.config.gateActivation).toMatchObject({ name: 'hardSigmoid', alpha: 1 / 6, beta: 0.5 });
    expect(k2.config.gateActivation).toMatchObject({ name: 'hardSigmoid', alpha: 0.2, beta: 0.5 });
    const x = expected['k3_bidir_stack.x'];
    expect(Array.from(k2.forward(x).output.data)).not.toEqual(Array.from(k3.forward(x).output.data));
    // one layer of the two, by name
    const first = LSTM.fromKerasFile(bytes, { layers: ['bidirectional_1'] });
    expect(first.config.inputSize).toBe(8);
    for (const m of [k3, k2, first]) m.dispose();
  });

  it('the same predictions as tfjs-layers running the file\'s model_config with its weights', async () => {
    const tf = require('@tensorflow/tfjs-core') as typeof import('@tensorflow/tfjs-core');
    require('@tensorflow/tfjs-backend-cpu');
    const tfl = require('@tensorflow/tfjs-layers') as typeof import('@tensorflow/tfjs-layers');
    await tf.setBackend('cpu');
    for (const name of ['k2_seq_dense', 'k2_final_backwards']) {
      const f = lib.loadHdf5(read(name + '.h5'));
      const config = JSON.parse(f.attributes[''].model_config as string);
      // tfjs' orthogonal initializer needs ops it does not load here; the weights are set anyway
      for (const l of config.config.layers) if (l.class_name === 'LSTM') l.config.recurrent_initializer = { class_name: 'Zeros', config: {} };
      const model = await tfl.models.modelFromJSON({ modelTopology: config });
      const weights = model.layers.flatMap((layer) =>
        (f.attributes[`model_weights/${layer.name}`].weight_names as string[]).map((w) => {
          const t = f.tensors[`model_weights/${layer.name}/${w}`];
          return tf.tensor(t.data, t.shape);
        }),
      );
      model.setWeights(weights);
      const x = expected[`${name}.x`];
      const want = { data: (model.predict(tf.tensor(x.data, x.shape)) as import('@tensorflow/tfjs-core').Tensor).dataSync() as Float32Array, shape: expected[`${name}.y`].shape };
      const m = lib.SequenceModel.fromKerasFile(read(name + '.h5'));
      expectClose(m.forward(x).output, want, name);
      m.dispose();
    }
  });

  it("the config's merge_mode, backward_layer and time_major are honoured or refused, never ignored", () => {
    const bytes = read('k3_bidir_stack.h5');
    const config = () => JSON.parse(lib.loadHdf5(bytes).attributes[''].model_config as string);
    const mul = config();
    mul.config.layers[1].config.merge_mode = 'mul';
    expectFormat(() => LSTM.fromKerasFile(bytes, { modelConfig: mul }), /'bidirectional' merges its directions by "mul"; this reader takes 'concat', and 'sum' or 'ave' folded into the weights of the layer after it/);
    // the last layer's sum has nowhere to go without the Dense head
    const sum = config();
    sum.config.layers[2].config.merge_mode = 'sum';
    expectFormat(() => LSTM.fromKerasFile(bytes, { modelConfig: sum }), /'bidirectional_1' merges its directions by 'sum', which an LSTM alone cannot give/);
    const back = config();
    back.config.layers[2].config.backward_layer = { class_name: 'LSTM', config: { ...back.config.layers[2].config.layer.config, units: 7, go_backwards: true } };
    expectFormat(() => LSTM.fromKerasFile(bytes, { modelConfig: back }), /'bidirectional_1': its backward_layer's units \(7\) differs from the forward layer's \(4\)/);
    // a backward_layer that matches (as Keras writes it when one is given) loads
    const same = config();
    same.config.layers[2].config.backward_layer = { class_name: 'LSTM', config: { ...same.config.layers[2].config.layer.config, go_backwards: true } };
    LSTM.fromKerasFile(bytes, { modelConfig: same }).dispose();
    // time_major: [time, batch, features]
    const h5 = read('k2_seq_dense.h5');
    const tm = JSON.parse(lib.loadHdf5(h5).attributes[''].model_config as string);
    tm.config.layers[0].config.time_major = true;
    const m = lib.SequenceModel.fromKerasFile(h5, { modelConfig: tm });
    expect(m.lstm.config.batchFirst).toBe(false);
    const x = expected['k2_seq_dense.x']; // [B, T, I]
    const [B, T, I] = x.shape;
    const xt = new Float32Array(x.data.length);
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) xt.set(x.data.subarray((b * T + t) * I, (b * T + t + 1) * I), (t * B + b) * I);
    const y = m.forward({ data: xt, shape: [T, B, I] }).output;
    const want = expected['k2_seq_dense.y'];
    const O = want.shape[2];
    const yb = new Float32Array(y.data.length);
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) yb.set(y.data.subarray((t * B + b) * O, (t * B + b + 1) * O), (b * T + t) * O);
    expectClose({ data: yb, shape: want.shape }, want, 'time_major');
    m.dispose();
  });

  it('weights only (save_weights, Keras 2 and 3): read with options.modelConfig, else LSTM_FORMAT asking for it', () => {
    const bytes = read('k2_weights_only.h5');
    expectFormat(() => LSTM.fromKerasFile(bytes), /weights only \(model\.save_weights\).*options\.modelConfig.*loadHdf5.*LSTM\.fromKeras/);
    // model.to_json()'s text
    const fromJson = LSTM.fromKerasFile(bytes, { modelConfig: readFileSync(path.join(DIR, 'k2_weights_only.json'), 'utf8') });
    expectClose(fromJson.forward(expected['k2_weights_only.x']).output, expected['k2_weights_only.y'], 'save_weights + to_json');
    fromJson.dispose();
    // Keras 3's model.weights.h5 alone, with the config as an object
    const k3 = read('k3_stack_final.weights.h5');
    expectFormat(() => LSTM.fromKerasFile(k3), /Keras 3 weights only \(model\.save_weights\).*options\.modelConfig/);
    const config = JSON.parse(readFileSync(path.join(DIR, 'k3_stack_final.json'), 'utf8'));
    const net = lib.SequenceModel.fromKerasFile(k3, { modelConfig: config });
    expectClose(net.forward(expected['k3_stack_final.x']).output, expected['k3_stack_final.y'], '.weights.h5 + config');
    net.dispose();
    for (const bad of [5, 'not json', null]) expect(() => LSTM.fromKerasFile(k3, { modelConfig: bad })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    // or by hand: loadHdf5's datasets into fromKeras
    const { tensors } = lib.loadHdf5(bytes);
    const layer = (p: string) => ({ kernel: tensors[`${p}/kernel:0`], recurrentKernel: tensors[`${p}/recurrent_kernel:0`], bias: tensors[`${p}/bias:0`] });
    const m = LSTM.fromKeras([layer('lstm/lstm/lstm_cell'), layer('lstm_1/lstm_1/lstm_cell_1')], { units: 3 });
    expectClose(m.forward(expected['k2_weights_only.x']).output, expected['k2_weights_only.y'], 'save_weights');
    m.dispose();
  });

  it('what the file lacks or this reader leaves out is LSTM_FORMAT naming it', () => {
    expectFormat(() => LSTM.fromKerasFile(read('no_config.keras')), /the \.keras archive has no config\.json \(it holds 'metadata\.json', 'model\.weights\.h5'\)/);
    // an archive re-zipped with deflate reads as the original
    const deflated = LSTM.fromKerasFile(read('deflated.keras'));
    const original = LSTM.fromKerasFile(read('k3_stack_final.keras'));
    expect(deflated.stateDict()).toEqual(original.stateDict());
    for (const m of [deflated, original]) m.dispose();
    // junk among a config's layers is passed over; a Dense's variables with a hole fail the head alone
    const junk = LSTM.fromKerasFile(read('junk_layers.keras'));
    expect(junk.config).toMatchObject({ inputSize: 2, hiddenSize: 3, numLayers: 1 });
    lib.SequenceModel.fromKerasFile(read('junk_layers.keras')).dispose();
    const holed = LSTM.fromKerasFile(read('dense_hole.keras'));
    expect(Array.from(holed.stateDict().weight_ih_l0.data)).toEqual(Array.from(junk.stateDict().weight_ih_l0.data));
    for (const m of [junk, holed]) m.dispose();
    expectFormat(() => lib.SequenceModel.fromKerasFile(read('dense_hole.keras')), /'layers\/dense\/vars' holds variables '0', '2', not the two or three \(from '0'\)/);
    // a zip that is not one (PK and nothing after)
    expectFormat(() => LSTM.fromKerasFile(new Uint8Array([0x50, 0x4b, 3, 4, 0, 0])), /\.keras file: not a zip archive/);
    expectFormat(() => LSTM.fromKerasFile(read('k2_compressed.h5')), /weight 'lstm\/lstm_cell\/kernel:0', which is not read: .*it is filtered with lzf \(filter 32000\)/);
    expectFormat(() => LSTM.fromKerasFile(read('links.h5')), /no model_config attribute: not a Keras model file/);
    expectFormat(() => lib.SequenceModel.fromKerasFile(read('k2_weights_only.h5')), /weights only/);
    // a model with no Dense after its LSTM has no head
    expectFormat(() => lib.SequenceModel.fromKerasFile(read('k2_compressed.h5')), /not read|no Dense/);
    expect(() => LSTM.fromKerasFile(read('k2_seq_dense.h5'), { layers: ['dense'] })).toThrow(/no LSTM layer named "dense" \(the model's: lstm\)/);
    expect(() => LSTM.fromKerasFile(read('k2_seq_dense.h5'), { layers: 'lstm' } as never)).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    expect(() => LSTM.fromKerasFile(read('k2_seq_dense.h5'), 5 as never)).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
  });
});

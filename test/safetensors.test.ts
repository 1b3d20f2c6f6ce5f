import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, LstmError, lib, loadSafetensors, mulberry32, randomModel, randomTensor, saveSafetensors } from './helpers';

const FILES = readdirSync(FIXTURES).filter((f) => f.endsWith('.safetensors')).sort();

function expectFormat(bytes: Uint8Array, msg: RegExp): void {
  try {
    loadSafetensors(bytes);
  } catch (err) {
    expect(err).toBeInstanceOf(LstmError);
    expect((err as LstmError).code).toBe('LSTM_FORMAT');
    expect((err as Error).message).toMatch(msg);
    return;
  }
  expect.fail('expected LSTM_FORMAT');
}

function file(header: object, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

describe('safetensors', () => {
  it.each(FILES)('%s loads', (name) => {
    const bytes = new Uint8Array(readFileSync(path.join(FIXTURES, name)));
    const { tensors, metadata } = loadSafetensors(bytes);
    expect(metadata.format).toBe('lstm-fixture/1');
    expect(Object.keys(tensors).length).toBeGreaterThan(3);
    for (const t of Object.values(tensors)) expect(t.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
  });

  // The fixtures were written by the reference implementation; F64 values are read
  // as float32 (the library computes in float32), so files holding F64 cannot round-trip.
  it.each(FILES.filter((f) => !f.startsWith('r0')))('%s: load then save is byte-exact', (name) => {
    const bytes = new Uint8Array(readFileSync(path.join(FIXTURES, name)));
    const { tensors, metadata } = loadSafetensors(bytes);
    const again = saveSafetensors(tensors, metadata);
    expect(Buffer.from(again).equals(Buffer.from(bytes))).toBe(true);
  });

  it('save then load returns every dtype exactly where the dtype can hold the value', () => {
    const rand = mulberry32(1);
    const f = new Float32Array(37).map(() => (rand() - 0.5) * 100);
    const ints = new Float32Array([0, 1, -1, 127, -128, 5, 42]);
    const tensors = {
      f32: { data: f, shape: [37] },
      f64: { data: f, shape: [1, 37], dtype: 'F64' as const },
      i64: { data: ints, shape: [7], dtype: 'I64' as const },
      i32: { data: ints, shape: [7, 1], dtype: 'I32' as const },
      i8: { data: ints, shape: [7], dtype: 'I8' as const },
      f16: { data: new Float32Array([0, 1, -2, 0.5, 65504, 6.103515625e-5, 5.960464477539063e-8, Infinity]), shape: [8], dtype: 'F16' as const },
      bf16: { data: new Float32Array([0, 1, -2, 0.5, 3.140625, -Infinity]), shape: [6], dtype: 'BF16' as const },
      empty: { data: new Float32Array(0), shape: [0, 3] },
    };
    const bytes = saveSafetensors(tensors, { note: 'x' });
    expect((8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))) % 8).toBe(0);
    const back = loadSafetensors(bytes);
    expect(back.metadata).toEqual({ note: 'x' });
    for (const [k, t] of Object.entries(tensors)) {
      expect(back.tensors[k].shape, k).toEqual(t.shape);
      expect(Array.from(back.tensors[k].data), k).toEqual(Array.from(t.data));
      expect(back.tensors[k].dtype).toBe((t as { dtype?: string }).dtype ?? 'F32');
    }
  });

  it('converts F16 and BF16 with round-to-nearest-even', () => {
    const bytes = saveSafetensors({ h: { data: new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11]), shape: [2], dtype: 'F16' } });
    expect(Array.from(loadSafetensors(bytes).tensors.h.data)).toEqual([1, 1 + 2 ** -9]);
    const b = saveSafetensors({ h: { data: new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8]), shape: [2], dtype: 'BF16' } });
    expect(Array.from(loadSafetensors(b).tensors.h.data)).toEqual([1, 1 + 2 ** -6]);
  });

  it('rejects integers that do not fit and reserved names', () => {
    expect(() => saveSafetensors({ a: { data: new Float32Array([0.5]), shape: [1], dtype: 'I32' } })).toThrow(/cannot be stored/);
    expect(() => saveSafetensors({ __metadata__: { data: new Float32Array(1), shape: [1] } })).toThrow(/reserved/);
  });

  describe('hostile files end in LSTM_FORMAT', () => {
    const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
    it('truncated', () => {
      const good = file(ok, new Uint8Array(8));
      for (let n = 0; n < good.length; n++) {
        expect(() => loadSafetensors(good.subarray(0, n)), `length ${n}`).toThrow(LstmError);
      }
      expect(loadSafetensors(good).tensors.a.shape).toEqual([2]);
    });
    it('header length of 2^60', () => expectFormat(file(ok, new Uint8Array(8), 2n ** 60n), /header length/));
    it('offsets out of range', () => expectFormat(file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 16] } }, new Uint8Array(8)), /outside/));
    it('offsets reversed', () => expectFormat(file({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, new Uint8Array(8)), /outside/));
    it('overlapping tensors', () =>
      expectFormat(
        file({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)),
        /overlap/,
      ));
    it('shape disagreeing with the byte count', () => expectFormat(file({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /needs 12 bytes/));
    it('huge declared shape', () => expectFormat(file({ a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, new Uint8Array(8)), /too large/));
    it('unknown dtype', () => expectFormat(file({ a: { dtype: 'F8_E4M3', shape: [8], data_offsets: [0, 8] } }, new Uint8Array(8)), /dtype/));
    it('negative and fractional numbers', () => {
      expectFormat(file({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, new Uint8Array(8)), /shape/);
      expectFormat(file({ a: { dtype: 'F32', shape: [2], data_offsets: [0.5, 8] } }, new Uint8Array(8)), /data_offsets/);
    });
    it('not JSON, not UTF-8, not an object', () => {
      const junk = new Uint8Array(16).fill(0xff);
      new DataView(junk.buffer).setBigUint64(0, 8n, true);
      expectFormat(junk, /UTF-8 JSON/);
      expectFormat(file([1, 2] as never), /not a JSON object/);
      expectFormat(file({ __metadata__: { a: 1 } }), /not a string/);
      expectFormat(file({ a: 'x' }), /not an object/);
    });
  });
});

describe('model files: LSTM.toSafetensors / fromSafetensors, SequenceModel.fromCheckpoint', () => {
  const { LSTM, SequenceModel, Adam, optionsOf } = lib;
  it('a model file makes the same model again: every option, the same outputs bit for bit', () => {
    const rand = mulberry32(31);
    for (let k = 0; k < 40; k++) {
      const { options, B, T } = randomModel(rand, { bidirectional: true, batchFirst: true, large: 0, acts: ['sigmoid', 'tanh', 'relu', 'hardSigmoid', 'softsign', 'elu'], maxT: 5 });
      const m = new LSTM({ ...options, seed: k });
      const bytes = m.toSafetensors({ note: 'kept' });
      const back = LSTM.fromSafetensors(bytes);
      expect(optionsOf(back), `model ${k}`).toEqual(optionsOf(m));
      expect(loadSafetensors(bytes).metadata.note).toBe('kept');
      // PyTorch's names: safetensors.torch.load_file gives the state dict
      expect(Object.keys(loadSafetensors(bytes).tensors).sort()).toEqual(Object.keys(m.stateDict()).sort());
      const I = m.config.inputSize;
      const x = randomTensor(m.config.batchFirst ? [B, T, I] : [T, B, I], rand);
      expect(back.forward(x).output.data).toEqual(m.forward(x).output.data);
      m.dispose();
      back.dispose();
    }
  });

  it('a PyTorch file (names only) infers its options; hostile metadata is LSTM_FORMAT', () => {
    const bytes = new Uint8Array(readFileSync(path.join(FIXTURES, 'm01_sine_model.safetensors')));
    const m = LSTM.fromSafetensors(bytes, { prefix: 'lstm.' });
    expect(m.config).toMatchObject({ inputSize: 1, hiddenSize: 32, numLayers: 2 });
    expect(() => LSTM.fromSafetensors(bytes)).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS' }));
    const file = (options: string) => saveSafetensors(m.stateDict(), { format: 'lstm-native/1', options });
    const code = (b: Uint8Array, c: string, re: RegExp) => expect(() => LSTM.fromSafetensors(b)).toThrow(expect.objectContaining({ code: c, message: expect.stringMatching(re) }));
    code(file('{'), 'LSTM_FORMAT', /options metadata is not JSON/);
    code(file('[1]'), 'LSTM_FORMAT', /not an object/);
    code(file(JSON.stringify({ ...optionsOf(m), hiddenSize: -1 })), 'LSTM_FORMAT', /the file's options: hiddenSize/);
    code(file(JSON.stringify({ ...optionsOf(m), hiddenSize: 16 })), 'LSTM_WEIGHTS', /the file's options need 'weight_ih_l0' of shape \[64, 1\]; it holds one of \[128, 1\]/);
    // options asking for far more than the file holds are refused before anything is made
    // (200 layers of H=8000 would be 400 GB: the system would kill the process)
    const before = process.memoryUsage().rss;
    const t0 = performance.now();
    code(file(JSON.stringify({ inputSize: 1, hiddenSize: 8000, numLayers: 200 })), 'LSTM_WEIGHTS', /need 800 weight tensors; it holds \d+/);
    code(file(JSON.stringify({ inputSize: 1, hiddenSize: 8000, numLayers: 2 })), 'LSTM_WEIGHTS', /need 'weight_ih_l0' of shape \[32000, 1\]/);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 2 ** 20);
    // where it runs is the caller's choice: a file's backend and threads are ignored
    const chosen = LSTM.fromSafetensors(file(JSON.stringify({ ...optionsOf(m), backend: 'gpu', threads: 64 })), { backend: 'js' });
    expect(chosen.backend).toBe('js');
    expect(chosen.config.threads).not.toBe(64);
    m.dispose();
  });

  it('SequenceModel.fromCheckpoint makes the trained model again; a checkpoint without options says so', async () => {
    const model = new SequenceModel({ inputSize: 2, hiddenSize: 5, numLayers: 2, bidirectional: true, dropout: 0.2, outputSize: 3, outputMode: 'final', batchFirst: true, seed: 4, backend: 'js' });
    const x = randomTensor([6, 4, 2], mulberry32(3));
    const y = randomTensor([6, 3], mulberry32(4));
    await model.fit({ x, y }, { optimizer: new Adam(model.parameters(), { lr: 0.01 }), epochs: 2, batchSize: 3, seed: 1 });
    const ckpt = model.saveCheckpoint();
    const back = SequenceModel.fromCheckpoint(ckpt, { backend: 'js' });
    expect(back.outputMode).toBe('final');
    expect(optionsOf(back.lstm)).toEqual(optionsOf(model.lstm));
    expect(back.forward(x).output).toEqual(model.forward(x).output);
    // resuming: the optimizer's state comes from loadCheckpoint, and both train on alike
    const withOpt = model.saveCheckpoint(new Adam(model.parameters(), { lr: 0.01 }));
    const again = SequenceModel.fromCheckpoint(withOpt);
    const o = new Adam(again.parameters(), { lr: 1 });
    again.loadCheckpoint(withOpt, o);
    expect(o.lr).toBe(0.01);
    // a checkpoint whose options ask for another (or a far larger) model than its weights
    const meta = loadSafetensors(ckpt).metadata;
    const lying = (model: object) => saveSafetensors(loadSafetensors(ckpt).tensors, { ...meta, model: JSON.stringify(model) });
    const opts = JSON.parse(meta.model);
    expect(() => SequenceModel.fromCheckpoint(lying({ ...opts, hiddenSize: 6000, numLayers: 300 }))).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS', message: expect.stringMatching(/need 2400 weight tensors/) }));
    expect(() => SequenceModel.fromCheckpoint(lying({ ...opts, outputSize: 1e6 }))).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS', message: expect.stringMatching(/'head.weight' of 1000000 rows; it holds one of \[3, 10\]/) }));
    const old = saveSafetensors(model.stateDict(), { format: 'lstm-native-checkpoint/1' });
    expect(() => SequenceModel.fromCheckpoint(old)).toThrow(expect.objectContaining({ code: 'LSTM_FORMAT', message: expect.stringMatching(/does not hold the model's options/) }));
    expect(() => SequenceModel.fromCheckpoint(model.lstm.toSafetensors())).toThrow(expect.objectContaining({ code: 'LSTM_FORMAT', message: expect.stringMatching(/not an lstm-native checkpoint/) }));
    for (const m of [model, back, again]) m.dispose();
  });
});

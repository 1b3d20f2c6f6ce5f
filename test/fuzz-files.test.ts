// File fuzzing: mutations of valid safetensors, ONNX, torch.save, HDF5, Keras and numpy files through the loaders. Every
// input must load or end in LSTM_FORMAT (or another LstmError), with memory bounded.
// FUZZ_MUTATIONS scales it (npm run fuzz).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, LstmError, lib, loadSafetensors, mulberry32 } from './helpers';

const MUTATIONS = Number(process.env.FUZZ_MUTATIONS ?? 60_000);
// FUZZ_SEED picks other mutation streams (the API fuzzer takes it too); 0 by default.
const SEED = Number(process.env.FUZZ_SEED ?? 0);

function mutate(src: Uint8Array, rand: () => number): Uint8Array {
  const r = rand();
  const pos = Math.floor(rand() * src.length);
  if (r < 0.35) {
    const out = src.slice();
    const flips = 1 + Math.floor(rand() * 8);
    for (let i = 0; i < flips; i++) out[Math.floor(rand() * out.length)] ^= 1 << Math.floor(rand() * 8);
    return out;
  }
  if (r < 0.5) {
    const out = src.slice();
    const n = 1 + Math.floor(rand() * 16);
    for (let i = 0; i < n && pos + i < out.length; i++) out[pos + i] = [0x00, 0xff, 0x7f, 0x80, 0x30 + Math.floor(rand() * 10)][Math.floor(rand() * 5)];
    return out;
  }
  if (r < 0.6) return src.slice(0, pos); // truncated
  if (r < 0.7) {
    const extra = new Uint8Array(1 + Math.floor(rand() * 32)).map(() => Math.floor(rand() * 256));
    const out = new Uint8Array(src.length + extra.length);
    out.set(src.subarray(0, pos));
    out.set(extra, pos);
    out.set(src.subarray(pos), pos + extra.length);
    return out;
  }
  if (r < 0.8) {
    const len = Math.floor(rand() * 64);
    const out = new Uint8Array(src.length - Math.min(len, src.length - pos));
    out.set(src.subarray(0, pos));
    out.set(src.subarray(pos + len), pos);
    return out;
  }
  if (r < 0.9) {
    // a varint or length prefix pushed to something huge
    const out = src.slice();
    for (let i = 0; i < 5 && pos + i < out.length; i++) out[pos + i] = i < 4 ? 0xff : 0x0f;
    return out;
  }
  // a chunk duplicated
  const len = Math.min(src.length - pos, 1 + Math.floor(rand() * 128));
  const out = new Uint8Array(src.length + len);
  out.set(src.subarray(0, pos + len));
  out.set(src.subarray(pos), pos + len);
  return out;
}

/** Header mutations that keep the JSON valid: numbers and dtypes swapped for hostile ones. */
function mutateSafetensorsHeader(src: Uint8Array, rand: () => number): Uint8Array {
  const n = Number(new DataView(src.buffer, src.byteOffset).getBigUint64(0, true));
  let json = new TextDecoder().decode(src.subarray(8, 8 + n));
  const hostile = ['0', '-1', '1e308', '4294967296', '9007199254740993', '18446744073709551615', '1.5', '"7"', 'null', '[]', '600', '3000'];
  const numbers = [...json.matchAll(/\d+/g)];
  for (let k = 0; k < 1 + Math.floor(rand() * 3) && numbers.length; k++) {
    const m = numbers[Math.floor(rand() * numbers.length)];
    json = json.slice(0, m.index) + hostile[Math.floor(rand() * hostile.length)] + json.slice(m.index! + m[0].length);
  }
  if (rand() < 0.2) json = json.replace('"F32"', ['"F8_E4M3"', '"I64"', '"F16"', '"BOOL"', '1'][Math.floor(rand() * 5)]);
  const body = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + body.length + src.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  out.set(src.subarray(8 + n), 8 + body.length);
  return out;
}

function run(load: (b: Uint8Array) => unknown, inputs: () => Uint8Array, count: number) {
  let loaded = 0;
  let refused = 0;
  const rssBefore = process.memoryUsage().rss;
  let rssPeak = rssBefore;
  for (let i = 0; i < count; i++) {
    const bytes = inputs();
    try {
      load(bytes);
      loaded++;
    } catch (err) {
      if (!(err instanceof LstmError)) throw new Error(`case ${i}: ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
      refused++;
    }
    if ((i & 1023) === 0) rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
  }
  return { loaded, refused, rssGrowth: rssPeak - rssBefore };
}


/**
 * MUTATIONS inputs through a loader: every one loads or ends in an LstmError, at least the
 * given shares do each, and memory stays bounded.
 */
function expectFuzzed(load: (b: Uint8Array) => unknown, inputs: () => Uint8Array, minRefused: number, minLoaded: number): void {
  const r = run(load, inputs, MUTATIONS);
  expect(r.loaded + r.refused).toBe(MUTATIONS);
  expect(r.refused).toBeGreaterThan(MUTATIONS * minRefused);
  expect(r.loaded).toBeGreaterThan(MUTATIONS * minLoaded);
  expect(r.rssGrowth).toBeLessThan(256 * 1024 * 1024);
}

/** Whatever loads is usable: every tensor's data matches its shape. */
function expectConsistent(tensors: Record<string, { data: Float32Array; shape: number[] }>): void {
  for (const t of Object.values(tensors)) if (t.data.length !== t.shape.reduce((x, y) => x * y, 1)) throw new Error('inconsistent tensor');
}

/** A file that loaded also goes through a model loader: it may refuse (an LstmError), nothing else. */
function alsoThrough(load: () => unknown): void {
  try {
    load();
  } catch (err) {
    if (!(err instanceof LstmError)) throw err;
  }
}

const read = (f: string) => new Uint8Array(readFileSync(path.join(FIXTURES, f)));

describe('file fuzzing', () => {
  it(`${MUTATIONS} safetensors mutations`, () => {
    const files = ['t01_single.safetensors', 't06_packed_bidir.safetensors', 'o05_hardsigmoid.safetensors', 'r01_train_adam.safetensors'].map(read);
    const rand = mulberry32(2 * SEED + 1);
    const inputs = () => {
      const src = files[Math.floor(rand() * files.length)];
      return rand() < 0.3 ? mutateSafetensorsHeader(src, rand) : mutate(src, rand);
    };
    expectFuzzed((b) => expectConsistent(loadSafetensors(b).tensors), inputs, 1 / 4, 1 / 20);
  }, 600_000);

  it(`${MUTATIONS} ONNX mutations`, () => {
    const files = [
      'o01_forward_peephole.onnx',
      'o03_bidir_peephole_lens.onnx',
      'o05_hardsigmoid.onnx',
      'e02_export_stack3_bf.onnx',
      'torch-export/nostate_l2_bi_bf_dynamic.onnx', // zero states: ConstantOfShape, Slice of it
      'torch-export/states_opset9.onnx', // Slice by attributes
      'torch-export/packed_l2_bi_bf_state.onnx', // a batch sorted by lengths, and sorted back
      'torch-export/unfolded_l2_bi_tm.onnx', // weights folded here from Slice / Concat / Unsqueeze
    ].map(read);
    const rand = mulberry32(2 * SEED + 2);
    expectFuzzed((b) => lib.loadOnnx(b, { backend: 'js' }), () => mutate(files[Math.floor(rand() * files.length)], rand), 1 / 4, 1 / 50);
  }, 600_000);

  it(`${MUTATIONS} mutations of model files and checkpoints (options in the metadata) through LSTM.fromSafetensors and SequenceModel.fromCheckpoint`, () => {
    // Numbers in the metadata's options (hiddenSize, numLayers...) become hostile ones: a
    // file must not make a model larger than the weights it holds.
    const m1 = new lib.LSTM({ inputSize: 3, hiddenSize: 4, numLayers: 2, bidirectional: true, projSize: 2, seed: 1 });
    const m2 = new lib.LSTM({ inputSize: 2, hiddenSize: 5, peephole: 'diagonal', clip: 1.5, gateActivation: 'hardSigmoid', seed: 2 });
    const seq = new lib.SequenceModel({ inputSize: 2, hiddenSize: 3, numLayers: 2, outputSize: 2, outputMode: 'final', seed: 3 });
    const files = [m1.toSafetensors(), m2.toSafetensors(), seq.saveCheckpoint()];
    for (const m of [m1, m2, seq]) m.dispose();
    const rand = mulberry32(2 * SEED + 5);
    const inputs = () => {
      const src = files[Math.floor(rand() * files.length)];
      return rand() < 0.7 ? mutateSafetensorsHeader(src, rand) : mutate(src, rand);
    };
    expectFuzzed((b) => {
      const loaded = loadSafetensors(b).metadata.format === 'lstm-native-checkpoint/1' ? lib.SequenceModel.fromCheckpoint(b, { backend: 'js' }) : lib.LSTM.fromSafetensors(b, { backend: 'js' });
      loaded.dispose();
    }, inputs, 1 / 4, 1 / 50);
  }, 600_000);

  it(`${MUTATIONS} ONNX mutations of LSTM + Linear graphs through SequenceModel.fromOnnx`, () => {
    const files = ['torch-export/with_head.onnx', 'torch-export/packed_with_head.onnx', 'torch-heads/last_uni2.onnx', 'torch-heads/cat_bi2.onnx', 'torch-heads/hn_uni1.onnx'].map(read);
    const rand = mulberry32(2 * SEED + 4);
    expectFuzzed((b) => lib.SequenceModel.fromOnnx(b, { backend: 'js' }).dispose(), () => mutate(files[Math.floor(rand() * files.length)], rand), 1 / 4, 1 / 50);
  }, 600_000);

  it(`${MUTATIONS} mutations of Keras model files (.h5 and .keras) through loadHdf5 and SequenceModel.fromKerasFile`, () => {
    // Four HDF5 layouts: superblock 0 with symbol-table groups, superblock 3 with link messages
    // and variable-length strings, a compact float64 dataset, and float16 weights only; and
    // Keras 3's zip of config.json and model.weights.h5.
    const files = ['k2_seq_dense.h5', 'k3_bidir_stack.h5', 'k2_final_backwards.h5', 'k2_weights_only.h5', 'dtypes.h5', 'k3_bidir_tagger.keras'].map((f) => read(`keras/${f}`));
    const rand = mulberry32(2 * SEED + 6);
    expectFuzzed(
      (b) => {
        // a .keras archive (a zip) loads whole or is refused; an HDF5 file must read, and
        // what reads also goes through fromKerasFile
        if (b[0] === 0x50) {
          lib.SequenceModel.fromKerasFile(b, { backend: 'js' }).dispose();
          return;
        }
        expectConsistent(lib.loadHdf5(b).tensors);
        alsoThrough(() => lib.SequenceModel.fromKerasFile(b, { backend: 'js' }).dispose());
      },
      () => mutate(files[Math.floor(rand() * files.length)], rand),
      1 / 20,
      1 / 50,
    );
  }, 600_000);

  it(`${MUTATIONS} mutations of HDF5 storage (chunked, filtered, dense) through loadHdf5`, () => {
    // Every chunk index (v1 and v2 B-trees, single chunk, fixed array paged or not,
    // extensible array), gzip, shuffle and fletcher32, fill values, dense links and
    // attributes; and a .keras archive re-zipped with deflate.
    const files = ['hdf5/fuzz_v3.h5', 'hdf5/fuzz_v4.h5', 'keras/deflated.keras'].map(read);
    const rand = mulberry32(2 * SEED + 7);
    expectFuzzed(
      (b) => {
        if (b[0] === 0x50) lib.SequenceModel.fromKerasFile(b, { backend: 'js' }).dispose();
        else expectConsistent(lib.loadHdf5(b).tensors);
      },
      () => mutate(files[Math.floor(rand() * files.length)], rand),
      1 / 20,
      1 / 50,
    );
  }, 600_000);

  it(`${MUTATIONS} numpy .npz and .npy mutations through loadNpz and loadNpy`, () => {
    // stored and deflated archives of every dtype and order; np.save files of versions 1 and 3
    const files = ['npy/dtypes.npz', 'npy/dtypes_compressed.npz', 'npy/v1.npy', 'npy/v3.npy'].map(read);
    const rand = mulberry32(2 * SEED + 8);
    expectFuzzed((b) => expectConsistent(b[0] === 0x93 ? { x: lib.loadNpy(b) } : lib.loadNpz(b).tensors), () => mutate(files[Math.floor(rand() * files.length)], rand), 1 / 4, 1 / 50);
  }, 600_000);

  it(`${MUTATIONS} torch.save mutations`, () => {
    const files = ['torch-save/lstm_state_dict.pt', 'torch-save/checkpoint.pth', 'torch-save/views_and_dtypes.pt', 'torch-save/legacy_checkpoint.pth', 'torch-save/legacy_views_and_dtypes.pt', 'torch-save/legacy_storage_view.pt', 'torch-save/net_whole.pt', 'torch-save/net_scripted.pt', 'torch-save/net.pt'].map(read);
    const rand = mulberry32(2 * SEED + 3);
    expectFuzzed(
      (b) => {
        expectConsistent(lib.loadTorch(b).tensors);
        // what loads also goes through fromTorch's search for an LSTM and its head
        alsoThrough(() => lib.SequenceModel.fromTorch(b, { backend: 'js' }).dispose());
      },
      () => mutate(files[Math.floor(rand() * files.length)], rand),
      1 / 10,
      1 / 50,
    );
  }, 600_000);
});

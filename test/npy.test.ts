// numpy files: loadNpy / loadNpz on what numpy writes (test/fixtures/npy/make.py: every dtype,
// both byte orders, Fortran order, np.savez and np.savez_compressed, format versions 1-3), the
// arrays it refuses, hostile headers, and saveNpz's bytes (numpy read them back when the file
// was made; the test pins them).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENGINES, FIXTURES, LSTM, LstmError, expectFormat, lib, withEngine } from './helpers';

const DIR = path.join(FIXTURES, 'npy');
const read = (f: string) => new Uint8Array(readFileSync(path.join(DIR, f)));
const expected = JSON.parse(readFileSync(path.join(DIR, 'expected.json'), 'utf8')) as Record<string, Record<string, { shape: number[]; data: number[] }>>;

function expectArrays(tensors: Record<string, { data: Float32Array; shape: number[] }>, want: Record<string, { shape: number[]; data: number[] }>): void {
  expect(Object.keys(tensors).sort()).toEqual(Object.keys(want).sort());
  for (const [k, w] of Object.entries(want)) {
    expect(tensors[k].shape, k).toEqual(w.shape);
    expect(Array.from(tensors[k].data), k).toEqual(w.data);
  }
}

/** A .npy file with the given header text (version 1.0) and data bytes. */
function npy(header: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(10 + h.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, h.length & 0xff, h.length >> 8]);
  out.set(h, 10);
  out.set(data, 10 + h.length);
  return out;
}

describe('loadNpy and loadNpz', () => {
  it('every dtype, byte order and memory order, from np.savez and np.savez_compressed', () => {
    expectArrays(lib.loadNpz(read('dtypes.npz')).tensors, expected['dtypes.npz']);
    expectArrays(lib.loadNpz(read('dtypes_compressed.npz')).tensors, expected['dtypes.npz']);
  });

  it('np.save in format versions 1.0, 2.0 and 3.0', () => {
    for (const f of ['v1.npy', 'v2.npy', 'v3.npy']) expectArrays({ '': lib.loadNpy(read(f)) }, expected[f]);
  });

  it('a PyTorch state dict saved with np.savez_compressed loads into an LSTM on every engine', () => {
    const { tensors } = lib.loadNpz(read('state_dict.npz'));
    expectArrays(tensors, expected['state_dict.npz']);
    for (const engine of ENGINES) {
      withEngine(engine, () => {
        const m = new LSTM(lib.inferOptions(tensors, { prefix: 'lstm.' })).loadStateDict(tensors, { prefix: 'lstm.' });
        expect(m.config).toMatchObject({ inputSize: 3, hiddenSize: 5, numLayers: 2, numDirections: 2 });
        expect(m.stateDict().weight_ih_l1_reverse.data).toEqual(tensors['lstm.weight_ih_l1_reverse'].data);
        m.dispose();
      });
    }
  });

  it("an .npz's object arrays are listed as unread, its numbers still read", () => {
    const f = lib.loadNpz(read('mixed.npz'));
    expectArrays(f.tensors, expected['mixed.npz']);
    expect(Object.keys(f.unread)).toEqual(['config']);
    expect(f.unread.config).toMatch(/an object array \(a pickle, which is never run here; save numbers\) cannot be read/);
    expect(lib.loadNpz(read('dtypes.npz')).unread).toEqual({});
  });

  it('object arrays (pickles), structured and complex dtypes are refused by name', () => {
    expectFormat(() => lib.loadNpy(read('object.npy')), /an object array \(a pickle, which is never run here; save numbers\) cannot be read/);
    expectFormat(() => lib.loadNpy(read('structured.npy')), /a structured dtype is not read/);
    expectFormat(() => lib.loadNpy(read('complex.npy')), /complex numbers cannot be read/);
  });

  it('hostile headers are data, never code; a short file, any cut, a wrong size: LSTM_FORMAT', () => {
    const f4 = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);
    expect(lib.loadNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }\n", f4))).toEqual({ data: new Float32Array([1, 2, 3, 4]), shape: [2, 2] });
    // Python 2's long integers, double quotes, no trailing comma
    expect(lib.loadNpy(npy('{"descr": "<f4", "fortran_order": True, "shape": (2L, 2L)}', f4))).toEqual({ data: new Float32Array([1, 3, 2, 4]), shape: [2, 2] });
    expectFormat(() => lib.loadNpy(npy("{'descr': __import__('os').system('x'), 'fortran_order': False, 'shape': (1,)}", f4)), /not numpy's dict literal \(a value expected/);
    expectFormat(() => lib.loadNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", f4)), /shape \[3, 2\] \(<f4\) needs 24 bytes, the file holds 16/);
    expectFormat(() => lib.loadNpy(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", f4)), /too large/);
    expectFormat(() => lib.loadNpy(npy("{'descr': '<f4', 'fortran_order': False}", f4)), /shape is missing/);
    expectFormat(() => lib.loadNpy(npy("{'descr': '<f4', 'fortran_order': 'no', 'shape': (1,)}", f4)), /fortran_order is missing or not True/);
    expectFormat(() => lib.loadNpy(new TextEncoder().encode('not numpy')), /no \\x93NUMPY magic string/);
    const file = read('v1.npy');
    for (let cut = 0; cut < file.length; cut++) {
      try {
        lib.loadNpy(file.subarray(0, cut));
        throw new Error(`a file cut at ${cut} loaded`);
      } catch (err) {
        expect(err).toBeInstanceOf(LstmError);
      }
    }
    const npz = read('dtypes_compressed.npz');
    for (let cut = 0; cut < npz.length; cut += 7) {
      try {
        lib.loadNpz(npz.subarray(0, cut));
      } catch (err) {
        expect(err).toBeInstanceOf(LstmError);
      }
    }
  });

  it('saveNpz writes what np.load reads (bytes pinned to a file numpy checked), and reads back', () => {
    const m = new LSTM({ inputSize: 2, hiddenSize: 3, numLayers: 1, projSize: 2, seed: 7, backend: 'js' });
    const sd: Record<string, { data: Float32Array; shape: number[] }> = m.stateDict();
    sd.scalar = { data: new Float32Array([1.5]), shape: [] };
    sd.empty = { data: new Float32Array(0), shape: [0, 4] };
    const bytes = lib.saveNpz(sd);
    expect(Buffer.from(bytes).equals(Buffer.from(read('saved.npz')))).toBe(true);
    expect(lib.loadNpz(bytes).tensors).toEqual(sd);
    expect(() => lib.saveNpz({ w: { data: [1], shape: [1] } } as never)).toThrow(expect.objectContaining({ code: 'LSTM_DTYPE' }));
    m.dispose();
  });
});

// Keras weights, PyTorch state dicts and the command line.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ENGINES, FIXTURES, LSTM, expectClose, fixture, lib, loadSafetensors, mulberry32, saveSafetensors, sineWaves, tfjsArtifacts, withEngine, type Tensor } from './helpers';

const require = createRequire(import.meta.url);

/** A Keras LSTM cell written out by hand (units = 1, input size 1): the reference. */
function kerasByHand(xs: number[], k: number[], r: number[], b: number[], gate: (v: number) => number): { ys: number[]; h: number; c: number } {
  let h = 0;
  let c = 0;
  const ys: number[] = [];
  for (const x of xs) {
    const z = [0, 1, 2, 3].map((g) => x * k[g] + h * r[g] + b[g]); // i, f, c, o
    const i = gate(z[0]);
    const f = gate(z[1]);
    c = f * c + i * Math.tanh(z[2]);
    h = gate(z[3]) * Math.tanh(c);
    ys.push(h);
  }
  return { ys, h, c };
}

// Keras' LSTM itself, as TensorFlow.js ports it (tfjs-layers on the cpu backend): random
// layers of every activation fromKeras takes, both directions, with and without bias,
// Bidirectional layers and stacks, and their outputs and states on random inputs. Computed
// once, checked on every engine.
interface KerasCase {
  what: string;
  weights: Parameters<typeof LSTM.fromKeras>[0];
  options: Parameters<typeof LSTM.fromKeras>[1];
  x: Tensor;
  output: Tensor;
  h: Tensor;
  c: Tensor;
}
let kerasCases: KerasCase[] | undefined;
function tfjsKerasCases(): KerasCase[] {
  if (kerasCases) return kerasCases;
  const tf = require('@tensorflow/tfjs-core') as typeof import('@tensorflow/tfjs-core');
  require('@tensorflow/tfjs-backend-cpu');
  const tfl = require('@tensorflow/tfjs-layers') as typeof import('@tensorflow/tfjs-layers');
  type TfTensor = import('@tensorflow/tfjs-core').Tensor;
  tf.setBackend('cpu');
  const acts = ['tanh', 'relu', 'sigmoid', 'hardSigmoid', 'softsign', 'linear', 'elu', 'softplus'] as const;
  const ours = (t: TfTensor, shape = t.shape): Tensor => ({ data: Float32Array.from(t.dataSync()), shape });
  const weightsOf = (ws: TfTensor[], useBias: boolean) => ({ kernel: ours(ws[0]), recurrentKernel: ours(ws[1]), bias: useBias ? ours(ws[2]) : undefined });
  kerasCases = [];
  for (let seed = 0; seed < 40; seed++) {
    const [U, I, T, B] = [1 + (seed % 5), 1 + (seed % 3), 1 + (seed % 6), 1 + (seed % 4)];
    const activation = acts[seed % acts.length];
    const recurrentActivation = (['sigmoid', 'hardSigmoid', 'tanh'] as const)[seed % 3];
    const kind = seed < 32 ? 'layer' : seed < 36 ? 'bidirectional' : 'stack';
    const goBackwards = kind === 'layer' && seed % 2 === 1;
    const useBias = seed % 5 !== 0;
    const lstm = () =>
      tfl.layers.lstm({
        units: U, activation, recurrentActivation, goBackwards, useBias, returnSequences: true, returnState: true,
        biasInitializer: 'randomNormal', recurrentInitializer: 'glorotNormal',
      });
    tf.tidy(() => {
      const x = tf.randomNormal([B, T, I], 0, 1, 'float32', seed);
      const state = (ts: TfTensor[]) => ({ data: Float32Array.from(ts.flatMap((t) => Array.from(t.dataSync()))), shape: [ts.length, B, U] });
      // The options as the layer's own config has them (tfjs names: 'hardSigmoid' is Keras 2's).
      const layer0 = lstm();
      const config = layer0.getConfig() as { units: number; activation: string; recurrentActivation: string; goBackwards: boolean };
      const options = { units: config.units, activation: config.activation, recurrentActivation: config.recurrentActivation, goBackwards: config.goBackwards };
      let c: Omit<KerasCase, 'x' | 'options'>;
      if (kind === 'bidirectional') {
        const bi = tfl.layers.bidirectional({ layer: layer0, mergeMode: 'concat' });
        const [y, hf, cf, hb, cb] = bi.apply(x) as TfTensor[];
        const ws = bi.getWeights();
        c = { what: 'Bidirectional', weights: { forward: weightsOf(ws.slice(0, 3), useBias), backward: weightsOf(ws.slice(useBias ? 3 : 2), useBias) }, output: ours(y), h: state([hf, hb]), c: state([cf, cb]) };
        options.goBackwards = false;
      } else if (kind === 'stack') {
        const layers = [layer0, lstm(), lstm()];
        let y = x;
        const hs: TfTensor[] = [];
        const cs: TfTensor[] = [];
        for (const l of layers) {
          const [out, h, cc] = l.apply(y) as TfTensor[];
          y = out;
          hs.push(h);
          cs.push(cc);
        }
        c = { what: 'stack of 3', weights: layers.map((l) => weightsOf(l.getWeights(), useBias)), output: ours(y), h: state(hs), c: state(cs) };
      } else {
        const [ys, h, cc] = layer0.apply(x) as TfTensor[];
        // Keras returns a goBackwards layer's outputs in processing order; ours stay aligned with the input.
        const y = ys.arraySync() as number[][][];
        const aligned = goBackwards ? y.map((row) => row.slice().reverse()) : y;
        c = { what: 'layer', weights: weightsOf(layer0.getWeights(), useBias), output: { data: Float32Array.from(aligned.flat(2)), shape: [B, T, U] }, h: state([h]), c: state([cc]) };
      }
      kerasCases!.push({ ...c, options, x: ours(x) });
    });
  }
  return kerasCases;
}

describe('LSTM.fromTfjs: a TensorFlow.js layers model (model.json and its weights)', () => {
  const lstmLayer = (tfl: typeof import('@tensorflow/tfjs-layers'), o: Record<string, unknown>) =>
    tfl.layers.lstm({ units: 4, returnSequences: true, recurrentInitializer: 'glorotNormal', biasInitializer: 'randomNormal', ...o } as never);
  const values = (t: import('@tensorflow/tfjs-core').Tensor) => Float32Array.from(t.dataSync());

  it('a Bidirectional layer and the LSTM after it, chosen by name; the pair is refused as a stack', async () => {
    const { tf, model, json, data } = await tfjsArtifacts((tfl) => {
      const m = tfl.sequential();
      m.add(tfl.layers.bidirectional({ layer: lstmLayer(tfl, { units: 3 }) as never, inputShape: [5, 2] }));
      m.add(lstmLayer(tfl, { name: 'second', recurrentActivation: 'sigmoid' }));
      m.add(tfl.layers.dense({ units: 1 }));
      return m;
    });
    const x = tf.randomNormal([2, 5, 2], 0, 1, 'float32', 1);
    const biOut = model.layers[0].apply(x) as import('@tensorflow/tfjs-core').Tensor;
    const secondOut = model.layers[1].apply(biOut) as import('@tensorflow/tfjs-core').Tensor;
    const biName = model.layers[0].name;
    expect(() => LSTM.fromTfjs(json, data)).toThrow(/do not stack into one LSTM/);
    const bi = LSTM.fromTfjs(json, data, { layers: [biName] });
    expect(bi.config).toMatchObject({ numDirections: 2, hiddenSize: 3, batchFirst: true });
    expectClose(bi.forward({ data: values(x), shape: [2, 5, 2] }).output, { data: values(biOut), shape: [2, 5, 6] }, 'Bidirectional');
    const second = LSTM.fromTfjs(JSON.stringify(json), data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer, { layers: ['second'] });
    expectClose(second.forward({ data: values(biOut), shape: [2, 5, 6] }).output, { data: values(secondOut), shape: [2, 5, 4] }, 'second');
  });

  it("Bidirectional merge_mode 'sum' and 'ave' fold into the next layer's kernel and the Dense head: tfjs-layers' predictions", async () => {
    for (const [first, second] of [['sum', 'ave'], ['ave', 'concat'], ['concat', 'sum']] as const) {
      const { tf, model, json, data } = await tfjsArtifacts((tfl) => {
        const m = tfl.sequential();
        m.add(tfl.layers.bidirectional({ layer: lstmLayer(tfl, { units: 3, recurrentActivation: 'sigmoid' }) as never, mergeMode: first, inputShape: [6, 2] }));
        m.add(tfl.layers.bidirectional({ layer: lstmLayer(tfl, { units: 3, recurrentActivation: 'sigmoid' }) as never, mergeMode: second }));
        m.add(tfl.layers.timeDistributed({ layer: tfl.layers.dense({ units: 2, biasInitializer: 'randomNormal' }) }));
        return m;
      });
      const x = tf.randomNormal([3, 6, 2], 0, 1, 'float32', 7);
      const want = values(model.predict(x) as import('@tensorflow/tfjs-core').Tensor);
      for (const engine of ENGINES) {
        const net = withEngine(engine, () => lib.SequenceModel.fromTfjs(json, data, { backend: engine.backend }));
        expect(net.lstm.config).toMatchObject({ numLayers: 2, numDirections: 2, inputSize: 2, hiddenSize: 3 });
        expectClose(net.forward({ data: values(x), shape: [3, 6, 2] }).output, { data: want, shape: [3, 6, 2] }, `${first}/${second} on ${engine.label}`);
        net.dispose();
      }
      // the LSTM alone cannot give a merged output; a concat at the top it can
      if (second === 'concat') LSTM.fromTfjs(json, data).dispose();
      else expect(() => LSTM.fromTfjs(json, data)).toThrow(/merges its directions by '(sum|ave)', which an LSTM alone cannot give/);
    }
    // 'mul' is not linear: refused
    const { json, data } = await tfjsArtifacts((tfl) => {
      const m = tfl.sequential();
      m.add(tfl.layers.bidirectional({ layer: lstmLayer(tfl, { units: 3 }) as never, mergeMode: 'mul', inputShape: [6, 2] }));
      m.add(tfl.layers.dense({ units: 1 }));
      return m;
    });
    expect(() => lib.SequenceModel.fromTfjs(json, data)).toThrow(/merges its directions by "mul"; this reader takes 'concat', and 'sum' or 'ave'/);
  });

  it('Dropout layers (identity at inference) neither split a stack nor hide the Dense head', async () => {
    const { tf, model, json, data } = await tfjsArtifacts((tfl) => {
      const m = tfl.sequential();
      m.add(lstmLayer(tfl, { inputShape: [7, 3], recurrentActivation: 'sigmoid' }));
      m.add(tfl.layers.dropout({ rate: 0.3 }));
      m.add(lstmLayer(tfl, { recurrentActivation: 'sigmoid' }));
      m.add(tfl.layers.gaussianNoise({ stddev: 0.5 }));
      m.add(lstmLayer(tfl, { recurrentActivation: 'sigmoid', returnSequences: false }));
      m.add(tfl.layers.dropout({ rate: 0.5 }));
      m.add(tfl.layers.dense({ units: 2, biasInitializer: 'randomNormal' }));
      return m;
    });
    const x = tf.randomNormal([4, 7, 3], 0, 1, 'float32', 9);
    const net = lib.SequenceModel.fromTfjs(json, data);
    expect(net.lstm.config).toMatchObject({ numLayers: 3, hiddenSize: 4 });
    expect(net.outputMode).toBe('final');
    expectClose(net.forward({ data: values(x), shape: [4, 7, 3] }).output, { data: values(model.predict(x) as import('@tensorflow/tfjs-core').Tensor), shape: [4, 2] }, 'through Dropout');
    net.dispose();
    LSTM.fromTfjs(json, data).dispose();
  });

  it('a stack of two LSTM layers, taken whole; go_backwards, relu and no bias on its own', async () => {
    const { tf, model, json, data } = await tfjsArtifacts((tfl) => {
      const m = tfl.sequential();
      m.add(lstmLayer(tfl, { inputShape: [6, 3] }));
      m.add(lstmLayer(tfl, {}));
      return m;
    });
    const x = tf.randomNormal([3, 6, 3], 0, 1, 'float32', 2);
    const stack = LSTM.fromTfjs(json, data);
    // the same two layers with a Dense of the same width between them are not a stack
    const split = await tfjsArtifacts((tfl) => {
      const m = tfl.sequential();
      m.add(lstmLayer(tfl, { inputShape: [6, 3], name: 'a' }));
      m.add(tfl.layers.dense({ units: 4 }));
      m.add(lstmLayer(tfl, { name: 'b' }));
      return m;
    });
    expect(() => LSTM.fromTfjs(split.json, split.data)).toThrow(/'a', 'b' are not consecutive/);
    expect(LSTM.fromTfjs(split.json, split.data, { layers: ['b'] }).config.inputSize).toBe(4);
    expect(stack.config).toMatchObject({ numLayers: 2, hiddenSize: 4 });
    expectClose(stack.forward({ data: values(x), shape: [3, 6, 3] }).output, { data: values(model.predict(x) as never), shape: [3, 6, 4] }, 'stack');

    const back = await tfjsArtifacts((tfl) => {
      const m = tfl.sequential();
      m.add(lstmLayer(tfl, { inputShape: [6, 3], goBackwards: true, activation: 'relu', recurrentActivation: 'sigmoid', useBias: false }));
      return m;
    });
    const one = LSTM.fromTfjs(back.json, back.data);
    expect(one.config).toMatchObject({ direction: 'reverse', bias: false });
    // Keras returns a go_backwards layer's outputs in processing order; ours stay aligned.
    const ys = (back.model.predict(x) as import('@tensorflow/tfjs-core').Tensor).arraySync() as number[][][];
    expectClose(one.forward({ data: values(x), shape: [3, 6, 3] }).output, { data: Float32Array.from(ys.map((r) => r.slice().reverse()).flat(2)), shape: [3, 6, 4] }, 'go_backwards');
  });

  it('SequenceModel.fromTfjs: the LSTM layers and the linear Dense after them (plain or TimeDistributed)', async () => {
    for (const wrap of [false, true]) {
      const { tf, model, json, data } = await tfjsArtifacts((tfl) => {
        const m = tfl.sequential();
        m.add(tfl.layers.bidirectional({ layer: lstmLayer(tfl, { units: 3 }) as never, inputShape: [5, 2] }));
        const dense = tfl.layers.dense({ units: 2, biasInitializer: 'randomNormal' });
        m.add(wrap ? tfl.layers.timeDistributed({ layer: dense }) : dense);
        return m;
      });
      const x = tf.randomNormal([3, 5, 2], 0, 1, 'float32', 4);
      const seq = lib.SequenceModel.fromTfjs(json, data);
      expectClose(seq.forward({ data: values(x), shape: [3, 5, 2] }).output, { data: values(model.predict(x) as never), shape: [3, 5, 2] }, `head (TimeDistributed ${wrap})`);
      seq.dispose();
    }
    const refuse = async (build: Parameters<typeof tfjsArtifacts>[0], re: RegExp) => {
      const { json, data } = await tfjsArtifacts(build);
      expect(() => lib.SequenceModel.fromTfjs(json, data)).toThrow(expect.objectContaining({ code: 'LSTM_FORMAT' }));
      expect(() => lib.SequenceModel.fromTfjs(json, data)).toThrow(re);
    };
    await refuse((tfl) => tfl.sequential({ layers: [lstmLayer(tfl, { inputShape: [5, 2] }), tfl.layers.dense({ units: 2, activation: 'softmax' })] }), /activation "softmax"; the head here is linear: pass \{ logits: true \}/);
    await refuse((tfl) => tfl.sequential({ layers: [lstmLayer(tfl, { inputShape: [5, 2] })] }), /no Dense layer right after/);
  });

  it('SequenceModel.fromTfjs with { logits: true }: a classifier\'s softmax or sigmoid head as its logits', async () => {
    for (const activation of ['softmax', 'sigmoid'] as const) {
      const { tf, model, json, data } = await tfjsArtifacts((tfl) =>
        tfl.sequential({ layers: [lstmLayer(tfl, { inputShape: [5, 2], returnSequences: false }), tfl.layers.dense({ units: 3, activation, biasInitializer: 'randomNormal' })] }),
      );
      const x = tf.randomNormal([4, 5, 2], 0, 1, 'float32', 11);
      const probs = values(model.predict(x) as never);
      const net = lib.SequenceModel.fromTfjs(json, data, { logits: true });
      const z = net.forward({ data: values(x), shape: [4, 5, 2] }).output.data;
      // the activation applied to the logits gives tfjs' probabilities
      const got = new Float32Array(z.length);
      for (let b = 0; b < 4; b++) {
        const row = Array.from(z.subarray(3 * b, 3 * b + 3));
        const e = row.map((v) => Math.exp(v - Math.max(...row)));
        for (let j = 0; j < 3; j++) got[3 * b + j] = activation === 'softmax' ? e[j] / e.reduce((p, q) => p + q, 0) : 1 / (1 + Math.exp(-row[j]));
      }
      expectClose({ data: got, shape: [4, 3] }, { data: probs, shape: [4, 3] }, `${activation} of the logits`);
      net.dispose();
      expect(() => lib.SequenceModel.fromTfjs(json, data, { logits: 'yes' as never })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    }
  });

  it('SequenceModel.fromTfjs: a Dense on the final output (return_sequences false) is outputMode final', async () => {
    // one direction (forwards and go_backwards), a stack ending in one, and a Bidirectional
    const builds: [string, (tfl: typeof import('@tensorflow/tfjs-layers')) => import('@tensorflow/tfjs-layers').Sequential][] = [
      ['one layer', (tfl) => tfl.sequential({ layers: [lstmLayer(tfl, { inputShape: [5, 2], returnSequences: false }), tfl.layers.dense({ units: 2, biasInitializer: 'randomNormal' })] })],
      ['go_backwards', (tfl) => tfl.sequential({ layers: [lstmLayer(tfl, { inputShape: [5, 2], returnSequences: false, goBackwards: true }), tfl.layers.dense({ units: 2 })] })],
      ['a stack', (tfl) => tfl.sequential({ layers: [lstmLayer(tfl, { inputShape: [5, 2] }), lstmLayer(tfl, { returnSequences: false }), tfl.layers.dense({ units: 3 })] })],
      ['Bidirectional', (tfl) => tfl.sequential({ layers: [tfl.layers.bidirectional({ layer: lstmLayer(tfl, { units: 3, returnSequences: false }) as never, inputShape: [5, 2] }), tfl.layers.dense({ units: 2 })] })],
    ];
    for (const [what, build] of builds) {
      const { tf, model, json, data } = await tfjsArtifacts(build);
      const x = tf.randomNormal([3, 5, 2], 0, 1, 'float32', 6);
      const want = model.predict(x) as import('@tensorflow/tfjs-core').Tensor;
      const seq = lib.SequenceModel.fromTfjs(json, data);
      expect(seq.outputMode, what).toBe('final');
      expectClose(seq.forward({ data: values(x), shape: [3, 5, 2] }).output, { data: values(want), shape: want.shape }, what);
      seq.dispose();
    }
  });

  it("the converter's quantized weights (uint8 with scale and min, float16), and bad files", async () => {
    const { json, data } = await tfjsArtifacts((tfl) => {
      const m = tfl.sequential();
      m.add(lstmLayer(tfl, { inputShape: [4, 2], units: 3 }));
      return m;
    });
    // Quantize every weight as tensorflowjs_converter does: uint8 for the kernels, float16 for the bias.
    const specs = json.weightsManifest[0].weights as { name: string; shape: number[]; dtype: string; quantization?: object }[];
    const floats = new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
    const parts: Uint8Array[] = [];
    const dequantized: Record<string, Float32Array> = {};
    let at = 0;
    for (const spec of specs) {
      const n = spec.shape.reduce((a, b) => a * b, 1);
      const w = floats.subarray(at, at + n);
      at += n;
      if (spec.name.endsWith('/bias')) {
        const half = new Uint16Array(n);
        const back = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          const b = lib.saveSafetensors({ v: { data: w.subarray(i, i + 1), shape: [1], dtype: 'F16' } });
          half[i] = new DataView(b.buffer, b.byteOffset + b.length - 2).getUint16(0, true);
          back[i] = lib.loadSafetensors(b).tensors.v.data[0];
        }
        spec.quantization = { dtype: 'float16' };
        parts.push(new Uint8Array(half.buffer));
        dequantized[spec.name] = back;
      } else {
        const min = Math.min(...w);
        const scale = (Math.max(...w) - min) / 255;
        const q = Uint8Array.from(w, (v) => Math.round((v - min) / scale));
        spec.quantization = { dtype: 'uint8', scale, min };
        parts.push(q);
        dequantized[spec.name] = Float32Array.from(q, (v) => min + scale * v);
      }
    }
    const qdata = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      qdata.set(p, o);
      o += p.length;
    }
    const m = LSTM.fromTfjs(json, qdata);
    const byName = (suffix: string) => dequantized[specs.find((s) => s.name.endsWith(suffix))!.name];
    const want = LSTM.fromKeras(
      { kernel: { data: byName('/kernel'), shape: [2, 12] }, recurrentKernel: { data: byName('/recurrent_kernel'), shape: [3, 12] }, bias: { data: byName('/bias'), shape: [12] } },
      { units: 3, recurrentActivation: 'hard_sigmoid', hardSigmoid: 'keras2' },
    );
    expect(m.stateDict()).toEqual(want.stateDict());
    // bad files
    const code = (fn: () => unknown, c: string, re: RegExp) => {
      expect(fn).toThrow(expect.objectContaining({ code: c }));
      expect(fn).toThrow(re);
    };
    code(() => LSTM.fromTfjs('{', data), 'LSTM_FORMAT', /not JSON/);
    code(() => LSTM.fromTfjs({ modelTopology: {} }, data), 'LSTM_FORMAT', /no layers/);
    code(() => LSTM.fromTfjs(json, qdata.subarray(0, 10)), 'LSTM_FORMAT', /describes \d+ bytes of weights, 10 were given/);
    code(() => LSTM.fromTfjs(json, qdata, { layers: ['nope'] }), 'LSTM_FORMAT', /no LSTM layer named "nope"/);
    code(() => LSTM.fromTfjs(json, qdata, { layers: [] }), 'LSTM_OPTION', /non-empty array/);
    code(() => LSTM.fromTfjs(json, 'x' as never), 'LSTM_FORMAT', /Uint8Array or ArrayBuffer/);
    // hostile model.json: any node replaced by any value loads or ends in an LstmError
    const rand = mulberry32(12);
    const odd = [null, 0, -1, 1e9, 'x', [], {}, [1, 2], { dtype: 'uint8' }, NaN, true];
    const nodes = (v: unknown, path: (string | number)[] = []): (string | number)[][] =>
      v !== null && typeof v === 'object' ? [path, ...Object.entries(v).flatMap(([k, x]) => nodes(x, [...path, Array.isArray(v) ? Number(k) : k]))] : [path];
    const paths = nodes(json).filter((p) => p.length > 0);
    let refused = 0;
    for (let i = 0; i < 600; i++) {
      const copy = JSON.parse(JSON.stringify(json));
      const path = paths[Math.floor(rand() * paths.length)];
      let at = copy;
      for (const k of path.slice(0, -1)) at = at[k];
      at[path[path.length - 1]] = odd[Math.floor(rand() * odd.length)];
      try {
        LSTM.fromTfjs(copy, qdata).dispose();
      } catch (err) {
        expect(err, JSON.stringify(path)).toBeInstanceOf(lib.LstmError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(50);
  });
});

describe.each(ENGINES)('Keras on $label', (engine) => {
  it("fromKeras matches Keras' own LSTM (tfjs-layers): 32 random layers, 4 Bidirectional, 4 stacks of 3", () => {
    const cases = tfjsKerasCases();
    for (const [i, c] of cases.entries()) {
      const m = withEngine(engine, () => LSTM.fromKeras(c.weights, { ...c.options, backend: engine.backend }));
      const r = m.forward(c.x);
      const what = `case ${i} (${c.what}) ${JSON.stringify(c.options)}`;
      expectClose(r.output, c.output, `${what} output`);
      expectClose(r.hn, c.h, `${what} h`);
      expectClose(r.cn, c.c, `${what} c`);
      m.dispose();
    }
  });

  // Large enough that gate pre-activations land where the two hard sigmoids differ (2.5 < |z| < 3).
  const k = [2.2, -2.4, 0.8, 2.6];
  const r = [0.4, 0.9, -0.6, -1.1];
  const b = [0.3, 1.0, -0.2, 0.1];
  const xs = [1.2, -0.7, 2.1];
  const weights = {
    kernel: { data: new Float32Array(k), shape: [1, 4] },
    recurrentKernel: { data: new Float32Array(r), shape: [1, 4] },
    bias: { data: new Float32Array(b), shape: [4] },
  };
  const x = { data: new Float32Array(xs), shape: [1, 3, 1] }; // Keras layout [batch, time, features]

  it.each([
    ['keras2', (v: number) => Math.min(1, Math.max(0, 0.2 * v + 0.5))],
    ['keras3', (v: number) => Math.min(6, Math.max(0, v + 3)) / 6],
  ] as const)("hard_sigmoid as %s matches the hand-computed cell", (which, gate) => {
    const m = withEngine(engine, () => LSTM.fromKeras(weights, { units: 1, recurrentActivation: 'hard_sigmoid', hardSigmoid: which, backend: engine.backend }));
    const ref = kerasByHand(xs, k, r, b, gate);
    const out = m.forward(x);
    expectClose(out.output, { data: new Float32Array(ref.ys), shape: [1, 3, 1] }, `${which} output`, 1e-6, 1e-5);
    expectClose(out.cn, { data: new Float32Array([ref.c]), shape: [1, 1, 1] }, `${which} c`, 1e-6, 1e-5);
  });

  it('the two hard sigmoids really differ here, and the choice is required', () => {
    const a = kerasByHand(xs, k, r, b, (v) => Math.min(1, Math.max(0, 0.2 * v + 0.5)));
    const c = kerasByHand(xs, k, r, b, (v) => Math.min(6, Math.max(0, v + 3)) / 6);
    expect(Math.max(...a.ys.map((v, i) => Math.abs(v - c.ys[i])))).toBeGreaterThan(1e-2);
    expect(() => LSTM.fromKeras(weights, { units: 1, recurrentActivation: 'hard_sigmoid' })).toThrow(/keras2' or 'keras3/);
  });

  it('default sigmoid gates, no bias, and go_backwards', () => {
    const sig = (v: number) => 1 / (1 + Math.exp(-v));
    const m = withEngine(engine, () => LSTM.fromKeras({ kernel: weights.kernel, recurrentKernel: weights.recurrentKernel }, { units: 1, backend: engine.backend }));
    const ref = kerasByHand(xs, k, r, [0, 0, 0, 0], sig);
    expectClose(m.forward(x).output, { data: new Float32Array(ref.ys), shape: [1, 3, 1] }, 'no bias', 1e-6, 1e-5);
    const back = withEngine(engine, () => LSTM.fromKeras(weights, { units: 1, goBackwards: true, backend: engine.backend }));
    const refBack = kerasByHand([...xs].reverse(), k, r, b, sig);
    const out = back.forward(x);
    // Outputs stay aligned with the input steps (Keras returns them in processing order).
    expectClose(out.output, { data: new Float32Array(refBack.ys.reverse()), shape: [1, 3, 1] }, 'go_backwards', 1e-6, 1e-5);
    expectClose(out.hn, { data: new Float32Array([refBack.h]), shape: [1, 1, 1] }, 'go_backwards h', 1e-6, 1e-5);
  });

  it('bad Keras weights and activations', () => {
    expect(() => LSTM.fromKeras({ ...weights, kernel: { data: new Float32Array(3), shape: [1, 3] } }, { units: 1 })).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS' }));
    expect(() => LSTM.fromKeras(weights, { units: 1, activation: 'gelu' })).toThrow(expect.objectContaining({ code: 'LSTM_FORMAT' }));
    expect(() => LSTM.fromKeras(weights, { units: 0 })).toThrow(expect.objectContaining({ code: 'LSTM_OPTION' }));
    // stacks and Bidirectional layers
    const code = (fn: () => unknown, c: string, message: RegExp) => {
      expect(fn).toThrow(expect.objectContaining({ code: c }));
      expect(fn).toThrow(message);
    };
    const wide = { kernel: { data: new Float32Array(8), shape: [2, 4] }, recurrentKernel: weights.recurrentKernel, bias: weights.bias };
    code(() => LSTM.fromKeras([], { units: 1 }), 'LSTM_WEIGHTS', /at least one layer/);
    code(() => LSTM.fromKeras([weights, { forward: weights, backward: weights }], { units: 1 }), 'LSTM_WEIGHTS', /layer 1 is Bidirectional and layer 0 is not/);
    code(() => LSTM.fromKeras([weights, wide, weights], { units: 1 }), 'LSTM_WEIGHTS', /layer 1 kernel: expected \[1 \(the previous layer's output\), 4\], got \[2, 4\]/);
    code(() => LSTM.fromKeras([{ forward: weights, backward: weights }, { forward: weights, backward: weights }], { units: 1 }), 'LSTM_WEIGHTS', /layer 1 forward kernel: expected \[2/);
    code(() => LSTM.fromKeras({ forward: weights, backward: { ...weights, bias: undefined } }, { units: 1 }), 'LSTM_WEIGHTS', /backward bias: every layer and direction must have a bias, or none/);
    code(() => LSTM.fromKeras({ forward: weights, backward: weights }, { units: 1, goBackwards: true }), 'LSTM_OPTION', /runs both ways already/);
    code(() => LSTM.fromKeras(weights, { units: 1, recurrentActivation: 'hardSigmoid', hardSigmoid: 'keras3' }), 'LSTM_OPTION', /contradicts/);
    const bi = LSTM.fromKeras([{ forward: weights, backward: weights }, { forward: wide, backward: wide }], { units: 1 });
    expect(bi.config).toMatchObject({ numLayers: 2, direction: 'bidirectional', inputSize: 1, batchFirst: true });
  });
});

describe('PyTorch state dicts', () => {
  it('inferOptions reads layers, directions, sizes, projection and peepholes from the names', () => {
    for (const name of ['t03_bidir2', 't04_proj', 't05_nobias', 't09_proj_bidir_packed_bf', 'p01_seed_full_peephole', 'p02_diagonal_peephole']) {
      const { tensors, metadata } = fixture(name);
      const cfg = JSON.parse(metadata.config);
      const o = lib.inferOptions(tensors);
      expect(o).toMatchObject({ inputSize: cfg.input_size, hiddenSize: cfg.hidden_size, numLayers: cfg.num_layers, bias: cfg.bias, bidirectional: cfg.bidirectional, projSize: cfg.proj_size, peephole: cfg.peephole ?? 'none' });
    }
    const { tensors } = fixture('m01_sine_model');
    expect(lib.inferOptions(tensors, { prefix: 'lstm.' })).toMatchObject({ inputSize: 1, hiddenSize: 32, numLayers: 2 });
    expect(() => lib.inferOptions(tensors)).toThrow(expect.objectContaining({ code: 'LSTM_WEIGHTS' }));
  });

  it("a PyTorch-named state dict round-trips byte for byte (save -> load -> loadStateDict -> stateDict -> save)", () => {
    const { tensors } = fixture('m01_sine_model');
    const m = new LSTM({ inputSize: 1, hiddenSize: 32, numLayers: 2 });
    m.loadStateDict(tensors, { prefix: 'lstm.' });
    const first = saveSafetensors(m.stateDict());
    const again = new LSTM({ ...lib.inferOptions(loadSafetensors(first).tensors) });
    again.loadStateDict(loadSafetensors(first).tensors);
    expect(Buffer.from(saveSafetensors(again.stateDict())).equals(Buffer.from(first))).toBe(true);
    // every name is PyTorch's
    expect(Object.keys(loadSafetensors(first).tensors).sort()).toEqual(Object.keys(tensors).filter((k) => k.startsWith('lstm.')).map((k) => k.slice(5)).sort());
  });

  it('F16, BF16 and F64 tensors load as float32', () => {
    const m = new LSTM({ inputSize: 3, hiddenSize: 4 });
    const dict = m.stateDict();
    const bytes = saveSafetensors({
      weight_ih_l0: { ...dict.weight_ih_l0, dtype: 'F16' },
      weight_hh_l0: { ...dict.weight_hh_l0, dtype: 'BF16' },
      bias_ih_l0: { ...dict.bias_ih_l0, dtype: 'F64' },
      bias_hh_l0: dict.bias_hh_l0,
    });
    const loaded = loadSafetensors(bytes).tensors;
    m.loadStateDict(loaded);
    const sd = m.stateDict();
    expect(Array.from(sd.bias_ih_l0.data)).toEqual(Array.from(dict.bias_ih_l0.data));
    for (let i = 0; i < 48; i++) {
      expect(Math.abs(sd.weight_ih_l0.data[i] - dict.weight_ih_l0.data[i])).toBeLessThan(1e-3);
      expect(Math.abs(sd.weight_hh_l0.data[i] - dict.weight_hh_l0.data[i])).toBeLessThan(4e-3);
    }
  });
});

describe('command line', () => {
  const cli = path.resolve(__dirname, '../bin/lstm-native.cjs');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lstm-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });

  it('convert .onnx -> .safetensors -> .onnx keeps the model; info describes it', () => {
    const st = path.join(dir, 'e02.safetensors');
    const back = path.join(dir, 'e02.onnx');
    expect(run('convert', path.join(FIXTURES, 'e02_export_stack3_bf.onnx'), st).status).toBe(0);
    expect(run('convert', st, back).status).toBe(0);
    const info = JSON.parse(run('info', back).stdout);
    expect(info.options).toMatchObject({ inputSize: 6, hiddenSize: 10, numLayers: 3, batchFirst: true });
    // layer 0: 40*6 + 40*10 + 2*40; layers 1 and 2: 40*10 + 40*10 + 2*40
    expect(info.parameters).toBe(720 + 2 * 880);
    const { tensors } = fixture('e02_export_stack3_bf');
    const m = lib.loadOnnx(new Uint8Array(readFileSync(back)));
    expectClose(m.forward(tensors.input, { h0: tensors.h0, c0: tensors.c0 }).output, tensors.output, 'converted twice');
  });

  it('a PyTorch checkpoint with --prefix, and the errors', () => {
    const out = path.join(dir, 'm01.onnx');
    expect(run('convert', path.join(FIXTURES, 'm01_sine_model.safetensors'), out, '--prefix', 'lstm.').status).toBe(0);
    expect(JSON.parse(run('info', out).stdout).options.hiddenSize).toBe(32);
    const usage = run('convert', 'a.txt', 'b.onnx');
    expect(usage.status).toBe(2);
    expect(usage.stderr).toMatch(/expected a .onnx, .safetensors, .pt \/ .pth \/ .bin \(torch.save\), .npz \(numpy\), model.json \(TensorFlow.js\) or .keras \/ .h5 \(Keras\) file/);
    expect(run('convert', 'only-one.onnx').status).toBe(2);
    expect(run('info', path.join(dir, 'missing.onnx')).status).toBe(1);
    const proj = path.join(dir, 'proj.safetensors');
    const m = new LSTM({ inputSize: 2, hiddenSize: 4, projSize: 2 });
    require('node:fs').writeFileSync(proj, saveSafetensors(m.stateDict()));
    const refused = run('convert', proj, path.join(dir, 'proj.onnx'));
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/LSTM_FORMAT: .*no projection/);
  });

  it('Keras .h5 and .keras models convert and describe; --layers chooses; weights only needs --model-config', () => {
    const h5 = (f: string) => path.join(FIXTURES, 'keras', f);
    const described = JSON.parse(run('info', h5('k3_bidir_stack.h5')).stdout);
    expect(described.source).toBe('Keras model file (.h5)');
    expect(described.options).toMatchObject({ inputSize: 2, hiddenSize: 4, numLayers: 2, direction: 'bidirectional', batchFirst: true, gateActivation: { name: 'hardSigmoid', alpha: 1 / 6 } });
    expect(JSON.parse(run('info', h5('k3_bidir_stack.h5'), '--layers', 'bidirectional_1').stdout).options).toMatchObject({ inputSize: 8, numLayers: 1 });
    const out = path.join(dir, 'from-keras.onnx');
    expect(run('convert', h5('k2_seq_dense.h5'), out).status).toBe(0);
    const direct = LSTM.fromKerasFile(new Uint8Array(readFileSync(h5('k2_seq_dense.h5'))));
    const x = loadSafetensors(readFileSync(h5('expected.safetensors'))).tensors['k2_seq_dense.x'];
    expectClose(lib.loadOnnx(new Uint8Array(readFileSync(out))).forward(x).output, direct.forward(x).output, 'Keras .h5 -> .onnx');
    const weightsOnly = run('info', h5('k2_weights_only.h5'));
    expect(weightsOnly.status).toBe(1);
    expect(weightsOnly.stderr).toMatch(/LSTM_FORMAT: .*weights only/);
    // with its model.to_json() beside it
    const withConfig = run('info', h5('k2_weights_only.h5'), '--model-config', h5('k2_weights_only.json'));
    expect(JSON.parse(withConfig.stdout).options).toMatchObject({ inputSize: 2, hiddenSize: 3, numLayers: 2 });
    const k3Weights = path.join(dir, 'k3.safetensors');
    expect(run('convert', h5('k3_stack_final.weights.h5'), k3Weights, '--model-config', h5('k3_stack_final.json')).status).toBe(0);
    expect(lib.LSTM.fromSafetensors(new Uint8Array(readFileSync(k3Weights))).config).toMatchObject({ inputSize: 3, hiddenSize: 5, numLayers: 2 });
    expect(run('convert', out, path.join(dir, 'back.h5')).status).toBe(2);
    expect(run('convert', out, path.join(dir, 'back.keras')).status).toBe(2);
    const k3 = JSON.parse(run('info', h5('k3_stack_final.keras')).stdout);
    expect(k3.source).toBe('Keras model file (.keras)');
    expect(k3.options).toMatchObject({ inputSize: 3, hiddenSize: 5, numLayers: 2 });
  });

  it('a TensorFlow.js model.json (shards beside it) converts and describes; --layers chooses', async () => {
    const { json, data } = await tfjsArtifacts((tfl) => {
      const m = tfl.sequential();
      m.add(tfl.layers.lstm({ units: 4, returnSequences: true, inputShape: [5, 2], recurrentInitializer: 'glorotNormal', name: 'first' }));
      m.add(tfl.layers.lstm({ units: 3, returnSequences: true, recurrentInitializer: 'glorotNormal', name: 'second' }));
      return m;
    });
    const modelJson = path.join(dir, 'model.json');
    writeFileSync(modelJson, JSON.stringify(json));
    writeFileSync(path.join(dir, 'group1-shard1of1.bin'), data);
    const mixed = run('info', modelJson);
    expect(mixed.status).toBe(1);
    expect(mixed.stderr).toMatch(/do not stack into one LSTM/);
    expect(JSON.parse(run('info', modelJson, '--layers', 'second').stdout).options).toMatchObject({ inputSize: 4, hiddenSize: 3, batchFirst: true });
    const out = path.join(dir, 'from-tfjs.safetensors');
    expect(run('convert', modelJson, out, '--layers', 'first').status).toBe(0);
    const direct = LSTM.fromTfjs(json, data, { layers: ['first'] });
    expect(lib.loadSafetensors(readFileSync(out)).tensors.weight_ih_l0.data).toEqual(direct.stateDict().weight_ih_l0.data);
    expect(run('convert', out, path.join(dir, 'x.json')).status).toBe(2);
  });

  it('a torch.save checkpoint converts with --prefix, and back to a .pt', () => {
    const out = path.join(dir, 'from-pth.safetensors');
    const pth = path.join(FIXTURES, 'torch-save', 'checkpoint.pth');
    const missing = run('convert', pth, out);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/found one under prefix 'model\.lstm\.'/);
    expect(run('convert', pth, out, '--prefix', 'model.lstm.').status).toBe(0);
    const { tensors } = lib.loadSafetensors(readFileSync(out));
    const { tensors: src } = lib.loadTorch(new Uint8Array(readFileSync(pth)));
    for (const k of ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0']) expect(tensors[k].data, k).toEqual(src[`model.lstm.${k}`].data);
    expect(JSON.parse(run('info', pth, '--prefix', 'model.lstm.').stdout).options).toMatchObject({ inputSize: 2, hiddenSize: 4 });
    // and back to a .pt that holds the same state dict
    const pt = path.join(dir, 'back.pt');
    expect(run('convert', out, pt).status).toBe(0);
    const again = lib.loadTorch(new Uint8Array(readFileSync(pt))).tensors;
    for (const k of Object.keys(tensors)) expect(again[k].data, k).toEqual(tensors[k].data);
    expect(run('convert', pt, path.join(dir, 'y.pth')).status).toBe(2);
  });

  it('--stack-only converts the LSTM of a graph with a head after it; without it the head is named', () => {
    const file = path.join(FIXTURES, 'torch-export', 'with_head.onnx');
    const refused = run('convert', file, path.join(dir, 'head.safetensors'));
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/LSTM_FORMAT: .*'\/head\/Add' \(Add\).*--stack-only/);
    const out = path.join(dir, 'stack.safetensors');
    expect(run('convert', file, out, '--stack-only').status).toBe(0);
    const { tensors } = lib.loadSafetensors(readFileSync(out));
    const { tensors: params } = lib.loadSafetensors(readFileSync(path.join(FIXTURES, 'torch-export', 'with_head_params.safetensors')));
    for (const k of ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0', 'weight_ih_l1', 'weight_hh_l1']) expect(tensors[k].data, k).toEqual(params[`lstm.${k}`].data);
    expect(JSON.parse(run('info', file, '--stack-only').stdout).options).toMatchObject({ inputSize: 3, hiddenSize: 4, numLayers: 2, batchFirst: true });
  });

  it('a numpy .npz state dict converts with --prefix and describes; -> .npz writes one; train takes .npz data', () => {
    const npz = path.join(FIXTURES, 'npy', 'state_dict.npz');
    const described = JSON.parse(run('info', npz, '--prefix', 'lstm.').stdout);
    expect(described.source).toBe('numpy .npz (options inferred from PyTorch names)');
    expect(described.options).toMatchObject({ inputSize: 3, hiddenSize: 5, numLayers: 2, direction: 'bidirectional' });
    const onnx = path.join(dir, 'from-npz.onnx');
    expect(run('convert', npz, onnx, '--prefix', 'lstm.').status).toBe(0);
    const back = path.join(dir, 'back.npz');
    expect(run('convert', onnx, back).status).toBe(0);
    const original = lib.loadNpz(new Uint8Array(readFileSync(npz))).tensors;
    const written = lib.loadNpz(new Uint8Array(readFileSync(back))).tensors;
    expect(Object.keys(written).sort()).toEqual(Object.keys(original).map((k) => k.slice('lstm.'.length)).sort());
    for (const [k, t] of Object.entries(written)) expect(t.data, k).toEqual(original[`lstm.${k}`].data);
    // training data as np.savez(x=..., y=...) writes it
    const data = path.join(dir, 'sine.npz');
    writeFileSync(data, lib.saveNpz(sineWaves(40, 10, 12)));
    const trained = run('train', data, path.join(dir, 'from-npz.safetensors'), '--epochs', '1', '--hidden', '4', '--seed', '3');
    expect(trained.status, trained.stderr).toBe(0);
    expect(trained.stdout).toMatch(/trained after 1 epoch/);
    expect(run('train', data, path.join(dir, 'out.npz')).status).toBe(2);
  });

  it('train fits a model with a progress bar, writes a checkpoint that loads, resumes from it, and rejects bad flags', () => {
    const data = path.join(dir, 'sine.safetensors');
    writeFileSync(data, saveSafetensors(sineWaves(120, 20, 12)));
    const out = path.join(dir, 'sine-model.safetensors');
    const r = run('train', data, out, '--epochs', '6', '--hidden', '16', '--lr', '0.02', '--seed', '3');
    expect(r.status, r.stderr).toBe(0);
    // Not a terminal here: one progress line per epoch, with its bar, losses and speed.
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('epoch'));
    expect(lines).toHaveLength(6);
    expect(lines[5]).toMatch(/^epoch 6\/6 \[#+\] loss [\d.]+ val [\d.]+ \d+ seq\/s eta 0s$/);
    const valLoss = (l: string) => Number(/val ([\d.]+)/.exec(l)![1]);
    expect(valLoss(lines[5])).toBeLessThan(valLoss(lines[0]) / 2);
    expect(r.stdout).toMatch(/trained after 6 epoch\(s\)/);
    // The checkpoint is a SequenceModel checkpoint with its options in the metadata.
    const { tensors, metadata } = loadSafetensors(readFileSync(out));
    const options = JSON.parse(metadata.options);
    const model = new lib.SequenceModel(options);
    const optimizer = new lib.Adam(model.parameters(), { lr: 0.02 });
    model.loadCheckpoint(readFileSync(out), optimizer);
    expect(optimizer.stepCount).toBe(6 * Math.ceil(108 / 32));
    expect(Object.keys(tensors).some((k) => k.startsWith('optimizer.'))).toBe(true);
    // --resume continues from it.
    const r2 = run('train', data, path.join(dir, 'resumed.safetensors'), '--epochs', '1', '--hidden', '16', '--lr', '0.02', '--seed', '3', '--resume', out);
    expect(r2.status, r2.stderr).toBe(0);
    expect(valLoss(r2.stderr.split('\n').find((l) => l.startsWith('epoch'))!)).toBeLessThan(valLoss(lines[0]));
    // --dropout: a stacked model trained with it keeps it (and its masks' stream) in the checkpoint.
    const dropped = path.join(dir, 'dropout.safetensors');
    const rd = run('train', data, dropped, '--epochs', '1', '--hidden', '8', '--layers', '2', '--dropout', '0.2', '--seed', '3');
    expect(rd.status, rd.stderr).toBe(0);
    const dmeta = loadSafetensors(readFileSync(dropped)).metadata;
    expect(JSON.parse(dmeta.options)).toMatchObject({ numLayers: 2, dropout: 0.2 });
    expect(JSON.parse(dmeta.dropout_rng)).toHaveLength(4);
    expect(run('train', data, dropped, '--dropout', '1').stderr).toMatch(/--dropout: expected a number in \[0, 0\.95\]/);
    // --schedule cosine anneals the rate over the epochs: the progress lines show it, and the
    // checkpoint holds the last epoch's rate (cosine over 3 epochs from 0.02: 0.015, 0.005, 0)
    const cosine = path.join(dir, 'cosine.safetensors');
    const rc = run('train', data, cosine, '--epochs', '3', '--hidden', '8', '--lr', '0.02', '--seed', '3', '--schedule', 'cosine');
    expect(rc.status, rc.stderr).toBe(0);
    expect(rc.stderr.split('\n').filter((l) => l.startsWith('epoch')).map((l) => /lr ([\d.e-]+)/.exec(l)![1])).toEqual(['0.0200', '0.0150', '0.00500']);
    const cm = new lib.SequenceModel(JSON.parse(loadSafetensors(readFileSync(cosine)).metadata.options));
    const co = new lib.Adam(cm.parameters());
    cm.loadCheckpoint(readFileSync(cosine), co);
    expect(co.lr).toBeLessThan(1e-12);
    expect(run('train', data, cosine, '--schedule', 'warmup').stderr).toMatch(/--schedule: expected none, cosine, plateau or onecycle, got 'warmup'/);
    // --warmup 2 then cosine over the 2 epochs left: 0.002, 0.011 (LinearLR from a tenth),
    // then 0.02 and 0.01 (CosineAnnealingLR from the base rate, in a SequentialLR)
    const wr = run('train', data, cosine, '--epochs', '4', '--hidden', '8', '--lr', '0.02', '--seed', '3', '--warmup', '2', '--schedule', 'cosine');
    expect(wr.status, wr.stderr).toBe(0);
    expect(wr.stderr.split('\n').filter((l) => l.startsWith('epoch')).map((l) => /lr ([\d.e-]+)/.exec(l)![1])).toEqual(['0.00200', '0.0110', '0.0200', '0.0100']);
    // --schedule onecycle steps every batch (108 training sequences in batches of 32: 4 a
    // epoch): the checkpoint holds the rate and momentum of OneCycleLR after 12 steps
    const oc = run('train', data, cosine, '--epochs', '3', '--hidden', '8', '--lr', '0.02', '--seed', '3', '--schedule', 'onecycle', '--optimizer', 'sgd');
    expect(oc.status, oc.stderr).toBe(0);
    const om = new lib.SequenceModel(JSON.parse(loadSafetensors(readFileSync(cosine)).metadata.options));
    const oo = new lib.SGD(om.parameters(), { lr: 1 });
    om.loadCheckpoint(readFileSync(cosine), oo);
    const ref = new lib.OneCycleLR(new lib.SGD(om.parameters(), { lr: 1 }), { maxLr: 0.02, totalSteps: 12 });
    for (let i = 0; i < 12; i++) ref.step();
    expect(oo.lr).toBe(ref.lr);
    expect(oo.momentum).toBe((ref.optimizer as InstanceType<typeof lib.SGD>).momentum);
    expect(oo.lr).toBeLessThan(0.02 / 25);
    for (const [args, re] of [[['--warmup', '2', '--schedule', 'onecycle'], /onecycle warms up by itself/], [['--warmup', '1', '--schedule', 'plateau'], /plateau cannot follow/], [['--warmup', '10', '--epochs', '10'], /--warmup: expected fewer epochs than --epochs \(10\), got 10/]] as const) {
      const r = run('train', data, cosine, ...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(re);
    }
    // --early-stop: a rate that diverges stops after N epochs without a better validation loss
    const re = run('train', data, cosine, '--epochs', '30', '--hidden', '8', '--optimizer', 'sgd', '--lr', '3', '--seed', '1', '--early-stop', '2');
    expect(re.status, re.stderr).toBe(0);
    expect(re.stdout).toMatch(/trained after (\d+) epoch\(s\) \(stopped early; kept epoch (\d+), the best\)/);
    const [, ran, best] = /after (\d+) epoch\(s\) \(stopped early; kept epoch (\d+)/.exec(re.stdout)!.map(Number);
    expect(ran).toBe(best + 2);
    expect(run('train', data, cosine, '--early-stop', '0').stderr).toMatch(/--early-stop: expected an integer >= 1, got '0'/);
    // train's checkpoint converts whole (LSTM and head) and info shows it
    const inf = run('info', out);
    expect(inf.status, inf.stderr).toBe(0);
    expect(JSON.parse(inf.stdout)).toMatchObject({ source: expect.stringMatching(/checkpoint/), options: { hiddenSize: 16 }, head: { outputSize: 1, outputMode: 'sequence' } });
    const onnxOut = path.join(dir, 'sine-model.onnx');
    expect(run('convert', out, onnxOut).status).toBe(0);
    const trained = lib.SequenceModel.fromCheckpoint(readFileSync(out));
    const exported = lib.SequenceModel.fromOnnx(readFileSync(onnxOut));
    const probe = { data: Float32Array.from({ length: 2 * 20 }, (_, i) => Math.sin(i / 3)), shape: [2, 20, 1] };
    expectClose(exported.forward(probe).output, trained.forward(probe).output, 'train -> convert -> onnx');
    const ptOut = path.join(dir, 'sine-model.pt');
    expect(run('convert', out, ptOut).status).toBe(0);
    expect(Object.keys(lib.loadTorch(readFileSync(ptOut)).tensors).sort()).toEqual(Object.keys(trained.stateDict()).sort());
    // --output-mode last: one class per sequence (the sign of its sum), y [N]; the checkpoint's
    // options make the same model again
    const rand = mulberry32(21);
    const seqX = new Float32Array(60 * 6);
    const seqY = new Float32Array(60);
    for (let n = 0; n < 60; n++) {
      let sum = 0;
      for (let t = 0; t < 6; t++) sum += seqX[n * 6 + t] = rand() * 2 - 1;
      seqY[n] = sum > 0 ? 1 : 0;
    }
    const seqData = path.join(dir, 'sign.safetensors');
    writeFileSync(seqData, saveSafetensors({ x: { data: seqX, shape: [60, 6, 1] }, y: { data: seqY, shape: [60] } }));
    const signOut = path.join(dir, 'sign-model.safetensors');
    const rs = run('train', seqData, signOut, '--epochs', '2', '--hidden', '8', '--loss', 'crossEntropy', '--output-mode', 'last', '--seed', '4');
    expect(rs.status, rs.stderr).toBe(0);
    const sm = new lib.SequenceModel(JSON.parse(loadSafetensors(readFileSync(signOut)).metadata.options));
    expect(sm.outputMode).toBe('last');
    sm.loadCheckpoint(readFileSync(signOut));
    expect(sm.forward({ data: seqX, shape: [60, 6, 1] }).output.shape).toEqual([60, 2]);
    expect(run('train', seqData, signOut, '--output-mode', 'first').stderr).toMatch(/--output-mode: expected sequence, last or final, got 'first'/);
    expect(run('train', seqData, signOut, '--output-mode', 'final', '--loss', 'mse').stderr).toMatch(/y: expected \[N, O\] \(one target per sequence: --output-mode final\) for mse, got \[60\]/);
    expect(run('train', seqData, signOut, '--output-mode', 'final', '--tbptt', '2').status).toBe(2);
    // Usage errors exit 2 and say which flag; a data file without x/y exits 1.
    const bad = run('train', data, out, '--loss', 'hinge');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--loss: expected mse, l1, huber, bceWithLogits or crossEntropy, got 'hinge'/);
    writeFileSync(path.join(dir, 'empty.safetensors'), saveSafetensors({ z: { data: new Float32Array(1), shape: [1] } }));
    const noData = run('train', path.join(dir, 'empty.safetensors'), out);
    expect(noData.status).toBe(1);
    expect(noData.stderr).toMatch(/LSTM_FORMAT: .*expected tensors 'x'/);
  });
});

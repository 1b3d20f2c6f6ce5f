// The ONNX LSTM operator's weight layout and activation attributes, in both directions:
// W [D, 4H, I], R [D, 4H, H], B [D, 8H] in gate order i, o, f, c, and P [D, 3H] in
// order i, o, f — against PyTorch's [4H, *] tensors in gate order i, f, g, o.
import { resolveActivation, sameActivation, type Activation, type ActivationName, type ActivationSet, type ResolvedActivation } from './config.js';
import { LstmError, describe } from './errors.js';
import type { Tensor } from './tensor.js';

/** For each of our gate blocks (i, f, g, o), the ONNX block holding it. */
const ONNX_BLOCK_OF = [0, 2, 3, 1];

function reorderBlocks(src: Float32Array, off: number, H: number, rowLen: number, toOnnx: boolean): Float32Array {
  const out = new Float32Array(4 * H * rowLen);
  for (let g = 0; g < 4; g++) {
    const a = ONNX_BLOCK_OF[g] * H * rowLen;
    const b = g * H * rowLen;
    const [from, to] = toOnnx ? [b, a] : [a, b];
    out.set(src.subarray(off + from, off + from + H * rowLen), to);
  }
  return out;
}

export interface OnnxDirectionTensors {
  W: Float32Array;
  R: Float32Array;
  B?: Float32Array;
  P?: Float32Array;
}

/** One ONNX node's tensors as PyTorch state-dict entries for layer `layer`. */
export function onnxToStateDict(
  t: { W: Float32Array; R: Float32Array; B?: Float32Array; P?: Float32Array },
  D: number,
  H: number,
  I: number,
  layer: number,
): Record<string, Tensor> {
  const dict: Record<string, Tensor> = {};
  for (let d = 0; d < D; d++) {
    const sfx = `_l${layer}${d === 1 ? '_reverse' : ''}`;
    dict[`weight_ih${sfx}`] = { data: reorderBlocks(t.W, d * 4 * H * I, H, I, false), shape: [4 * H, I] };
    dict[`weight_hh${sfx}`] = { data: reorderBlocks(t.R, d * 4 * H * H, H, H, false), shape: [4 * H, H] };
    if (t.B) {
      dict[`bias_ih${sfx}`] = { data: reorderBlocks(t.B, d * 8 * H, H, 1, false), shape: [4 * H] };
      dict[`bias_hh${sfx}`] = { data: reorderBlocks(t.B, d * 8 * H + 4 * H, H, 1, false), shape: [4 * H] };
    }
    if (t.P) {
      const p = t.P.subarray(d * 3 * H, (d + 1) * 3 * H);
      dict[`weight_ci${sfx}`] = { data: p.slice(0, H), shape: [H] };
      dict[`weight_co${sfx}`] = { data: p.slice(H, 2 * H), shape: [H] };
      dict[`weight_cf${sfx}`] = { data: p.slice(2 * H, 3 * H), shape: [H] };
    }
  }
  return dict;
}

/** The inverse: one layer's state-dict entries as an ONNX node's W, R, B, P. */
export function stateDictToOnnx(dict: Record<string, Tensor>, D: number, H: number, I: number, layer: number, bias: boolean, peephole: boolean): OnnxDirectionTensors {
  const W = new Float32Array(D * 4 * H * I);
  const R = new Float32Array(D * 4 * H * H);
  const B = bias ? new Float32Array(D * 8 * H) : undefined;
  const P = peephole ? new Float32Array(D * 3 * H) : undefined;
  for (let d = 0; d < D; d++) {
    const sfx = `_l${layer}${d === 1 ? '_reverse' : ''}`;
    W.set(reorderBlocks(dict[`weight_ih${sfx}`].data, 0, H, I, true), d * 4 * H * I);
    R.set(reorderBlocks(dict[`weight_hh${sfx}`].data, 0, H, H, true), d * 4 * H * H);
    if (B) {
      B.set(reorderBlocks(dict[`bias_ih${sfx}`].data, 0, H, 1, true), d * 8 * H);
      B.set(reorderBlocks(dict[`bias_hh${sfx}`].data, 0, H, 1, true), d * 8 * H + 4 * H);
    }
    if (P) {
      P.set(dict[`weight_ci${sfx}`].data, d * 3 * H);
      P.set(dict[`weight_co${sfx}`].data, d * 3 * H + H);
      P.set(dict[`weight_cf${sfx}`].data, d * 3 * H + 2 * H);
    }
  }
  return { W, R, B, P };
}

/** ONNX activation names and whether each takes alpha / beta. */
const ONNX_ACTIVATION: Record<string, { name: ActivationName; alpha: boolean; beta: boolean; onnx: string }> = {
  sigmoid: { name: 'sigmoid', alpha: false, beta: false, onnx: 'Sigmoid' },
  tanh: { name: 'tanh', alpha: false, beta: false, onnx: 'Tanh' },
  relu: { name: 'relu', alpha: false, beta: false, onnx: 'Relu' },
  hardsigmoid: { name: 'hardSigmoid', alpha: true, beta: true, onnx: 'HardSigmoid' },
  leakyrelu: { name: 'leakyRelu', alpha: true, beta: false, onnx: 'LeakyRelu' },
  thresholdedrelu: { name: 'thresholdedRelu', alpha: true, beta: false, onnx: 'ThresholdedRelu' },
  scaledtanh: { name: 'scaledTanh', alpha: true, beta: true, onnx: 'ScaledTanh' },
  affine: { name: 'affine', alpha: true, beta: true, onnx: 'Affine' },
  elu: { name: 'elu', alpha: true, beta: false, onnx: 'Elu' },
  softsign: { name: 'softsign', alpha: false, beta: false, onnx: 'Softsign' },
  softplus: { name: 'softplus', alpha: false, beta: false, onnx: 'Softplus' },
};

/** A gate, cell or hidden activation as an option: one for every direction, or [forward, reverse]. */
export type DirectionalActivation = Activation | [Activation, Activation];

/**
 * ONNX activations (f, g, h per direction) with alpha/beta consumed in order by the
 * functions that take them, as ONNX Runtime reads them: the gate, cell and hidden options,
 * each a pair [forward, reverse] where a bidirectional node's two directions differ.
 */
export function activationsFromOnnx(names: unknown, alphas: readonly number[] | undefined, betas: readonly number[] | undefined, D: number, where = 'activations'): DirectionalActivation[] {
  const list = names ?? [];
  if (!Array.isArray(list) || (list.length !== 0 && list.length !== 3 * D)) {
    throw new LstmError('LSTM_FORMAT', `${where}: expected ${3 * D} names (f, g, h per direction), got ${describe(list)}`);
  }
  let ai = 0;
  let bi = 0;
  const resolved = (list.length ? list : Array(D).fill(['Sigmoid', 'Tanh', 'Tanh']).flat()).map((n: unknown, i: number): ResolvedActivation => {
    const a = typeof n === 'string' ? ONNX_ACTIVATION[n.toLowerCase()] : undefined;
    if (!a) throw new LstmError('LSTM_FORMAT', `${where}[${i}]: unsupported ONNX activation ${describe(n)}`);
    const act: { name: ActivationName; alpha?: number; beta?: number } = { name: a.name };
    if (a.alpha && alphas && ai < alphas.length) act.alpha = alphas[ai++];
    if (a.beta && betas && bi < betas.length) act.beta = betas[bi++];
    try {
      return resolveActivation(act, `${where}[${i}]`, 'sigmoid');
    } catch (err) {
      throw new LstmError('LSTM_FORMAT', (err as Error).message);
    }
  });
  const option = (a: ResolvedActivation): Activation => ({ name: a.name, alpha: a.alpha, beta: a.beta });
  return [0, 1, 2].map((k) => {
    const f = resolved[k];
    const r = resolved[k + 3];
    return D === 2 && !sameActivation(f, r) ? [option(f), option(r)] : option(f);
  });
}

/** Each direction's three activations as the ONNX attributes (f, g, h per direction). */
export function activationsToOnnx(directions: ActivationSet[]): { activations: string[]; alpha: number[]; beta: number[] } {
  const activations: string[] = [];
  const alpha: number[] = [];
  const beta: number[] = [];
  for (const set of directions) {
    for (const a of [set.gate, set.cell, set.hidden]) {
      const entry = Object.values(ONNX_ACTIVATION).find((e) => e.name === a.name)!;
      activations.push(entry.onnx);
      if (entry.alpha) alpha.push(a.alpha);
      if (entry.beta) beta.push(a.beta);
    }
  }
  return { activations, alpha, beta };
}

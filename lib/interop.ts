// Keras / TensorFlow.js weights, and LSTM options recovered from a PyTorch state dict.
import { resolveConfig, type Activation, type BackendChoice, type LSTMOptions } from './config.js';
import { paramSpecs } from './params.js';
import { LstmError, checkKnownKeys, describe, optionsArg } from './errors.js';
import { LSTM } from './lstm.js';
import { DTYPE_SIZE, decodeTensorBytes, loadSafetensors, saveSafetensors, type Dtype } from './io/safetensors.js';
import { isHdf5, loadHdf5, type Hdf5File } from './io/hdf5.js';
import { readZip, zipEntryBytes } from './io/torch.js';
import { MAX_ELEMENTS, checkTensor, sameShape, shapeStr, transpose2d, type Tensor } from './tensor.js';

export interface KerasWeights {
  /** [inputSize, 4*units], gate columns i, f, c, o. */
  kernel: Tensor;
  /** [units, 4*units]. */
  recurrentKernel: Tensor;
  /** [4*units]; absent when the layer has use_bias=False. */
  bias?: Tensor;
}

export interface KerasOptions {
  units: number;
  /** Keras `activation` (cell input and output): default 'tanh'. */
  activation?: string;
  /**
   * Keras `recurrent_activation` (gates): default 'sigmoid' (Keras 2.3+ and 3). tfjs-layers'
   * default is 'hardSigmoid' (its name; Keras 2's definition), so pass a tfjs layer's
   * getConfig() values rather than relying on this default.
   */
  recurrentActivation?: string;
  /** Which hard sigmoid 'hard_sigmoid' means: Keras 2 and tfjs clip(0.2x + 0.5, 0, 1), Keras 3 relu6(x + 3) / 6. */
  hardSigmoid?: 'keras2' | 'keras3';
  /** Keras go_backwards: the sequence runs from its last step (outputs stay aligned with the inputs, PyTorch style). */
  goBackwards?: boolean;
  /** Keras layers take [batch, time, features]; default true. */
  batchFirst?: boolean;
  backend?: BackendChoice;
}

function kerasActivation(name: unknown, which: string, hard: KerasOptions['hardSigmoid']): Activation {
  switch (name) {
    case 'tanh':
    case 'sigmoid':
    case 'relu':
    case 'softsign':
    case 'softplus':
      return name;
    case 'elu':
      return { name: 'elu', alpha: 1 };
    case 'linear':
      return { name: 'affine', alpha: 1, beta: 0 };
    case 'hardSigmoid': // tfjs-layers' name (its default recurrentActivation): Keras 2's clip(0.2x + 0.5, 0, 1)
      if (hard === 'keras3') throw new LstmError('LSTM_OPTION', `${which}: tfjs' 'hardSigmoid' is clip(0.2x + 0.5, 0, 1) (Keras 2); hardSigmoid: 'keras3' contradicts it`);
      return { name: 'hardSigmoid', alpha: 0.2, beta: 0.5 };
    case 'hard_sigmoid':
      if (hard === 'keras2') return { name: 'hardSigmoid', alpha: 0.2, beta: 0.5 };
      if (hard === 'keras3') return { name: 'hardSigmoid', alpha: 1 / 6, beta: 0.5 };
      throw new LstmError(
        'LSTM_OPTION',
        `${which}: 'hard_sigmoid' differs between Keras 2 / tfjs (clip(0.2x + 0.5, 0, 1)) and Keras 3 (relu6(x + 3) / 6): pass hardSigmoid: 'keras2' or 'keras3'`,
      );
    default:
      throw new LstmError('LSTM_FORMAT', `${which}: Keras activation ${describe(name)} is not supported (tanh, sigmoid, hard_sigmoid, hardSigmoid, relu, elu, linear, softsign, softplus)`);
  }
}

const transpose = (t: Tensor): Float32Array => transpose2d(t.data, t.shape[0], t.shape[1]);

/** A Keras `Bidirectional(LSTM(...))` layer's weights: get_weights() gives the forward layer's three, then the backward layer's. */
export interface KerasBidirectionalWeights {
  forward: KerasWeights;
  backward: KerasWeights;
}

/** One Keras LSTM layer, or a Bidirectional one. */
export type KerasLayerWeights = KerasWeights | KerasBidirectionalWeights;

/**
 * An LSTM from Keras (or tfjs) LSTM layers' weights: gate order i, f, c, o and one bias.
 * `weights` is one layer, a Bidirectional layer ({ forward, backward }), or an array of
 * them for a stack (layers with return_sequences=True feeding each other, all with the same
 * units, all bidirectional or none).
 */
export function fromKeras(weights: KerasLayerWeights | KerasLayerWeights[], options: KerasOptions): LSTM {
  const expected = '{ kernel, recurrentKernel, bias? }, { forward, backward } of those, or an array of layers';
  if (weights === null || typeof weights !== 'object') throw new LstmError('LSTM_WEIGHTS', `fromKeras: expected ${expected}, got ${describe(weights)}`);
  if (options === null || typeof options !== 'object') throw new LstmError('LSTM_OPTION', `fromKeras: expected options with units, got ${describe(options)}`);
  checkKnownKeys(options, 'fromKeras options', ['units', 'activation', 'recurrentActivation', 'hardSigmoid', 'goBackwards', 'batchFirst', 'backend']);
  const U = options.units;
  if (typeof U !== 'number' || !Number.isInteger(U) || U < 1) throw new LstmError('LSTM_OPTION', `units: expected a positive integer, got ${describe(U)}`);
  const stack = Array.isArray(weights) ? weights : [weights];
  if (stack.length === 0) throw new LstmError('LSTM_WEIGHTS', 'fromKeras: expected at least one layer, got an empty array');
  const isBidirectional = (w: KerasLayerWeights): w is KerasBidirectionalWeights => w !== null && typeof w === 'object' && 'forward' in w && 'backward' in w;
  const bidirectional = isBidirectional(stack[0]);
  if (bidirectional && options.goBackwards) throw new LstmError('LSTM_OPTION', 'goBackwards: a Bidirectional layer runs both ways already; goBackwards is for a one-direction layer');
  const D = bidirectional ? 2 : 1;
  const layers = stack.map((w, l) => {
    const where = Array.isArray(weights) ? `layer ${l} ` : '';
    if (w === null || typeof w !== 'object') throw new LstmError('LSTM_WEIGHTS', `fromKeras: ${where}expected ${expected}, got ${describe(w)}`);
    if (isBidirectional(w) !== bidirectional) throw new LstmError('LSTM_WEIGHTS', `fromKeras: ${where}is ${bidirectional ? 'not ' : ''}Bidirectional and layer 0 is${bidirectional ? '' : ' not'}: a stack's layers must all be Bidirectional, or none`);
    return isBidirectional(w) ? [w.forward, w.backward] : [w];
  });
  const inputSize = (l: number, kernel: Tensor) => (l === 0 ? kernel.shape[0] : D * U);
  let withBias: boolean | undefined;
  const dict: Record<string, Tensor> = {};
  layers.forEach((dirs, l) => {
    dirs.forEach((w, d) => {
      const where = `${Array.isArray(weights) ? `layer ${l} ` : ''}${bidirectional ? `${d ? 'backward' : 'forward'} ` : ''}`;
      if (w === null || typeof w !== 'object') throw new LstmError('LSTM_WEIGHTS', `fromKeras: ${where}expected { kernel, recurrentKernel, bias? }, got ${describe(w)}`);
      const kernel = checkTensor(w.kernel, `${where}kernel`);
      const I = inputSize(l, kernel);
      if (kernel.shape.length !== 2 || kernel.shape[1] !== 4 * U || kernel.shape[0] < 1 || kernel.shape[0] !== I) {
        throw new LstmError('LSTM_WEIGHTS', `${where}kernel: expected [${l === 0 ? 'inputSize' : `${I} (the previous layer's output)`}, ${4 * U}], got ${shapeStr(kernel.shape)}`);
      }
      const rec = checkTensor(w.recurrentKernel, `${where}recurrentKernel`);
      if (rec.shape.length !== 2 || rec.shape[0] !== U || rec.shape[1] !== 4 * U) {
        throw new LstmError('LSTM_WEIGHTS', `${where}recurrentKernel: expected [${U}, ${4 * U}], got ${shapeStr(rec.shape)}`);
      }
      const bias = w.bias === undefined || w.bias === null ? undefined : checkTensor(w.bias, `${where}bias`);
      if (bias && (bias.shape.length !== 1 || bias.shape[0] !== 4 * U)) throw new LstmError('LSTM_WEIGHTS', `${where}bias: expected [${4 * U}], got ${shapeStr(bias.shape)}`);
      if (withBias !== undefined && withBias !== (bias !== undefined)) throw new LstmError('LSTM_WEIGHTS', `${where}bias: every layer and direction must have a bias, or none (use_bias alike)`);
      withBias = bias !== undefined;
      const sfx = `_l${l}${d === 1 ? '_reverse' : ''}`;
      dict[`weight_ih${sfx}`] = { data: transpose(kernel), shape: [4 * U, I] };
      dict[`weight_hh${sfx}`] = { data: transpose(rec), shape: [4 * U, U] };
      if (bias) {
        dict[`bias_ih${sfx}`] = { data: bias.data.slice(), shape: [4 * U] };
        dict[`bias_hh${sfx}`] = { data: new Float32Array(4 * U), shape: [4 * U] };
      }
    });
  });
  const act = kerasActivation(options.activation ?? 'tanh', 'activation', options.hardSigmoid);
  const lstm = new LSTM({
    inputSize: dict.weight_ih_l0.shape[1],
    hiddenSize: U,
    numLayers: layers.length,
    bias: withBias,
    direction: bidirectional ? 'bidirectional' : options.goBackwards ? 'reverse' : 'forward',
    batchFirst: options.batchFirst ?? true,
    gateActivation: kerasActivation(options.recurrentActivation ?? 'sigmoid', 'recurrentActivation', options.hardSigmoid),
    cellActivation: act,
    hiddenActivation: act,
    backend: options.backend ?? 'auto',
    seed: 0,
  });
  try {
    return lstm.loadStateDict(dict);
  } catch (err) {
    lstm.dispose();
    throw err;
  }
}

/**
 * The LSTM options a PyTorch state dict implies: layers, directions, sizes, bias,
 * projection and peepholes from its names and shapes (activations and the like are
 * not in a state dict: PyTorch's defaults are assumed).
 */
export function inferOptions(tensors: Record<string, Tensor>, opts?: { prefix?: string }): LSTMOptions {
  const prefix = optionsArg(opts, 'inferOptions options', ['prefix']).prefix ?? '';
  if (tensors === null || typeof tensors !== 'object') throw new LstmError('LSTM_WEIGHTS', `inferOptions: expected an object of tensors, got ${describe(tensors)}`);
  const get = (name: string): Tensor | undefined => tensors[prefix + name];
  // nn.LSTMCell: one layer, one direction, names without the _l0 (loadStateDict takes them too).
  const cellW = get('weight_ih');
  const cellH = get('weight_hh');
  if (!get('weight_ih_l0') && cellW && cellH && cellW.shape.length === 2 && cellH.shape.length === 2 && cellH.shape[0] % 4 === 0) {
    return { inputSize: cellW.shape[1], hiddenSize: cellH.shape[0] / 4, numLayers: 1, bias: get('bias_ih') !== undefined };
  }
  const w0 = get('weight_ih_l0');
  const h0 = get('weight_hh_l0');
  if (!w0 || !h0 || w0.shape.length !== 2 || h0.shape.length !== 2 || h0.shape[0] % 4 !== 0) {
    // Say where the LSTMs are, e.g. a checkpoint's 'model.lstm.' or a SequenceModel's 'lstm.'.
    const found = Object.keys(tensors)
      .filter((k) => k.endsWith('weight_ih_l0') && tensors[`${k.slice(0, -'weight_ih_l0'.length)}weight_hh_l0`])
      .map((k) => `'${k.slice(0, -'weight_ih_l0'.length)}'`);
    const hint = found.length ? `; found one under prefix ${found.slice(0, 4).join(', ')}` : '';
    throw new LstmError('LSTM_WEIGHTS', `inferOptions: no LSTM state dict under prefix '${prefix}' (need ${prefix}weight_ih_l0 and ${prefix}weight_hh_l0)${hint}`);
  }
  let numLayers = 0;
  while (get(`weight_ih_l${numLayers}`)) numLayers++;
  const hr = get('weight_hr_l0');
  return {
    inputSize: w0.shape[1],
    hiddenSize: h0.shape[0] / 4,
    numLayers,
    bias: get('bias_ih_l0') !== undefined,
    bidirectional: get('weight_ih_l0_reverse') !== undefined,
    projSize: hr ? hr.shape[0] : 0,
    peephole: get('weight_ci_l0') ? 'diagonal' : get('weight_ch_l0') ? 'full' : 'none',
  };
}

/** A model's options as plain JSON (what `lstm.config` resolved them to), to store beside its weights. */
export function optionsOf(lstm: LSTM): LSTMOptions {
  const c = lstm.config;
  const one = (a: typeof c.gateActivation): Activation => ({ name: a.name, alpha: a.alpha, beta: a.beta });
  const r = c.reverseActivations;
  // [forward, reverse] where a bidirectional model's reverse direction has its own
  const act = (k: 'gate' | 'cell' | 'hidden'): Activation | [Activation, Activation] => {
    const f = c[`${k}Activation`];
    return r ? [one(f), one(r[k])] : one(f);
  };
  return {
    inputSize: c.inputSize,
    hiddenSize: c.hiddenSize,
    numLayers: c.numLayers,
    bias: c.bias,
    batchFirst: c.batchFirst,
    direction: c.direction,
    projSize: c.projSize,
    peephole: c.peephole,
    gateActivation: act('gate'),
    cellActivation: act('cell'),
    hiddenActivation: act('hidden'),
    clip: c.clip > 0 ? c.clip : undefined,
    coupledInputForget: c.coupledInputForget,
    dropout: c.dropout > 0 ? c.dropout : undefined,
  };
}

// ---------------------------------------------------------------- model files

/** The safetensors metadata format of a model file: PyTorch-named weights, the options beside them. */
export const MODEL_FORMAT = 'lstm-native/1';

/** The LSTM options a model file's metadata holds (MODEL_FORMAT), or null if it holds none. */
export function storedOptions(metadata: Record<string, string>, key = 'options'): Record<string, unknown> | null {
  if (metadata.format !== MODEL_FORMAT || metadata[key] === undefined) return null;
  let stored: unknown;
  try {
    stored = JSON.parse(metadata[key]);
  } catch {
    throw new LstmError('LSTM_FORMAT', `the file's ${key} metadata is not JSON`);
  }
  if (stored === null || typeof stored !== 'object' || Array.isArray(stored)) throw new LstmError('LSTM_FORMAT', `the file's ${key} metadata is not an object: ${describe(stored)}`);
  // Where it runs is the caller's choice, not the file's.
  const { backend: _backend, threads: _threads, ...rest } = stored as Record<string, unknown>;
  return rest;
}

/** new Model(options), a file's options: what they get wrong is the file's fault (LSTM_FORMAT). */
export function fromStoredOptions<T>(make: () => T): T {
  try {
    return make();
  } catch (err) {
    if (err instanceof LstmError && err.code === 'LSTM_OPTION') throw new LstmError('LSTM_FORMAT', `the file's options: ${err.message}`);
    throw err;
  }
}

/**
 * A file's own options must describe the weights it holds, and are checked against them
 * before anything is allocated: a few bytes of metadata could otherwise ask for a model of
 * any size (and the system's out-of-memory killer would end the process).
 */
export function checkStoredAgainstWeights(options: Record<string, unknown>, tensors: Record<string, Tensor>, prefix = ''): void {
  const cfg = fromStoredOptions(() => resolveConfig({ ...options, backend: 'js' }));
  const perDirection = 2 + (cfg.bias ? 2 : 0) + (cfg.projSize > 0 ? 1 : 0) + (cfg.peephole === 'diagonal' ? 3 : cfg.peephole === 'full' ? 1 : 0);
  const want = cfg.numLayers * cfg.numDirections * perDirection;
  const held = Object.keys(tensors).filter((k) => k.startsWith(prefix)).length;
  if (want > held) throw new LstmError('LSTM_WEIGHTS', `the file's options (${cfg.numLayers} layers, ${cfg.direction}) need ${want} weight tensors; it holds ${held}${prefix ? ` under '${prefix}'` : ''}`);
  for (const spec of paramSpecs(cfg)) {
    const t = tensors[prefix + spec.name];
    if (!t || !sameShape(t.shape, spec.shape)) {
      throw new LstmError('LSTM_WEIGHTS', `the file's options need '${prefix}${spec.name}' of shape ${shapeStr(spec.shape)}; it holds ${t ? `one of ${shapeStr(t.shape)}` : 'none'}`);
    }
  }
}

/**
 * An LSTM from a safetensors file: its options from the metadata toSafetensors (and the
 * command line) write, else inferred from PyTorch's names (a file of safetensors.torch's
 * save_file(lstm.state_dict()), under `prefix`); then its weights.
 */
export function lstmFromSafetensors(bytes: Uint8Array, opts?: { prefix?: string; strict?: boolean; backend?: BackendChoice }): LSTM {
  const o = optionsArg(opts, 'fromSafetensors options', ['prefix', 'strict', 'backend']) as { prefix?: string; strict?: boolean; backend?: BackendChoice };
  const { tensors, metadata } = loadSafetensors(bytes);
  const stored = storedOptions(metadata);
  if (stored) checkStoredAgainstWeights(stored, tensors, o.prefix);
  const options = stored ?? inferOptions(tensors, { prefix: o.prefix });
  return withWeights(fromStoredOptions(() => new LSTM({ ...(options as LSTMOptions), backend: o.backend ?? 'auto' })), tensors, o);
}

/** A new LSTM with the state dict's weights loaded, or disposed again if they do not load. */
function withWeights(lstm: LSTM, tensors: Record<string, Tensor>, o: { prefix?: string; strict?: boolean }): LSTM {
  try {
    return lstm.loadStateDict(tensors, { prefix: o.prefix, strict: o.strict });
  } catch (err) {
    lstm.dispose();
    throw err;
  }
}

/**
 * An LSTM from a PyTorch state dict as any loader gives it (loadSafetensors, loadNpz,
 * loadTorch): its options inferred from the names under `prefix`, then its weights.
 */
export function lstmFromStateDict(tensors: Record<string, Tensor>, opts?: { prefix?: string; strict?: boolean; backend?: BackendChoice }): LSTM {
  const o = optionsArg(opts, 'fromStateDict options', ['prefix', 'strict', 'backend']) as { prefix?: string; strict?: boolean; backend?: BackendChoice };
  return withWeights(new LSTM({ ...inferOptions(tensors, { prefix: o.prefix }), backend: o.backend ?? 'auto' }), tensors, o);
}

/** The LSTM as a model file: its weights under PyTorch's names, its options in the metadata. */
export function lstmToSafetensors(lstm: LSTM, metadata: Record<string, string> = {}): Uint8Array {
  return saveSafetensors(lstm.stateDict(), { ...metadata, format: MODEL_FORMAT, options: JSON.stringify(optionsOf(lstm)) });
}

// ---------------------------------------------------------------- TensorFlow.js model.json

/** Options of LSTM.fromTfjs. */
export interface TfjsOptions {
  /**
   * The LSTM (or Bidirectional) layers to take, by name, in order: one, or several that stack
   * (same units, return_sequences). Default: the model's only LSTM layer, or all of them when
   * they stack.
   */
  layers?: string[];
  /** What 'hard_sigmoid' means; default Keras 3's when the file says it was made by Keras 3, else Keras 2 / tfjs. */
  hardSigmoid?: 'keras2' | 'keras3';
  batchFirst?: boolean;
  backend?: BackendChoice;
  /**
   * SequenceModel.fromTfjs / fromKerasFile: take a Dense head with an activation (a
   * classifier's 'sigmoid' or 'softmax') as its output before the activation, the logits
   * bceWithLogits and crossEntropy train on; apply the activation to predictions yourself.
   * Without it such a head is LSTM_FORMAT, so the activation is never dropped unasked.
   */
  logits?: boolean;
}

const TFJS_OPTIONS = ['layers', 'hardSigmoid', 'batchFirst', 'backend', 'logits'];

interface TfjsLayer {
  class_name?: string;
  config?: Record<string, unknown> & { name?: string; layer?: TfjsLayer; layers?: TfjsLayer[] };
}

interface TfjsWeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; scale?: number; min?: number };
}

/**
 * An LSTM from a TensorFlow.js layers model: its model.json (object or text) and its weights
 * (the shards of weightsManifest, concatenated in order). Float32 weights and the
 * converter's quantized ones (uint8 / uint16 with scale and min, float16) are read.
 */
export function fromTfjs(modelJson: unknown, weightData: Uint8Array | ArrayBuffer, opts?: TfjsOptions): LSTM {
  return readTfjs(modelJson, weightData, opts, false).lstm;
}

/** Options of LSTM.fromKerasFile: fromTfjs' and the model config a weights-only file lacks. */
export interface KerasFileOptions extends TfjsOptions {
  /**
   * The model's config, for a file of weights alone (Keras 2's save_weights .h5, Keras 3's
   * .weights.h5): model.to_json()'s text or object, or a .keras archive's config.json.
   */
  modelConfig?: unknown;
}

/** A Dense layer on every step after the LSTM layers, as SequenceModel's head: weight [O, F] as PyTorch's Linear. */
export interface TfjsHead {
  weight: Float32Array;
  bias: Float32Array | null;
  inFeatures: number;
  outFeatures: number;
  /** The last LSTM layer returns only its final output (return_sequences false): the head reads that. */
  perSequence: boolean;
}

/** fromTfjs, and the Dense layer right after the LSTM layers (SequenceModel.fromTfjs builds on it). */
export function fromTfjsWithHead(modelJson: unknown, weightData: Uint8Array | ArrayBuffer, opts?: TfjsOptions): { lstm: LSTM; head: TfjsHead } {
  const { lstm, head } = readTfjs(modelJson, weightData, opts, true);
  return { lstm, head: head! };
}

function readTfjs(modelJson: unknown, weightData: Uint8Array | ArrayBuffer, opts: TfjsOptions | undefined, withHead: boolean): { lstm: LSTM; head: TfjsHead | null } {
  const options = optionsArg(opts, 'fromTfjs options', TFJS_OPTIONS);
  const fail = (msg: string) => new LstmError('LSTM_FORMAT', `fromTfjs: ${msg}`);
  let json: unknown = modelJson;
  if (typeof json === 'string') {
    try {
      json = JSON.parse(json);
    } catch (err) {
      throw fail(`model.json is not JSON (${(err as Error).message})`);
    }
  }
  if (json === null || typeof json !== 'object') throw fail(`expected model.json's object, got ${describe(modelJson)}`);
  const { modelTopology, weightsManifest, generatedBy, convertedBy } = json as { modelTopology?: { model_config?: TfjsLayer } & TfjsLayer; weightsManifest?: { weights?: TfjsWeightSpec[] }[]; generatedBy?: unknown; convertedBy?: unknown };
  const all = topologyLayers(modelTopology, fail);
  if (!Array.isArray(weightsManifest)) throw fail('model.json has no weightsManifest');
  const bytes = weightData instanceof Uint8Array ? weightData : weightData instanceof ArrayBuffer ? new Uint8Array(weightData) : null;
  if (!bytes) throw fail(`expected the weights as a Uint8Array or ArrayBuffer, got ${describe(weightData)}`);

  // The weights by name, decoded from their place in the concatenated shards.
  const specs = new Map<string, { spec: TfjsWeightSpec; offset: number }>();
  let offset = 0;
  // tfjs dtypes as stored (an int32 or bool weight of another layer still takes its bytes).
  const STORED: Record<string, Dtype> = { float32: 'F32', int32: 'I32', bool: 'BOOL', uint8: 'U8', uint16: 'U16', float16: 'F16' };
  for (const group of weightsManifest) {
    const listed = group?.weights ?? [];
    if (!Array.isArray(listed)) throw fail(`a weightsManifest group's weights is ${describe(listed)}, not a list`);
    for (const spec of listed) {
      if (!spec || typeof spec.name !== 'string' || !Array.isArray(spec.shape) || !spec.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw fail(`a weight entry is malformed: ${describe(spec)}`);
      const stored = spec.quantization?.dtype ?? spec.dtype;
      const size = Object.hasOwn(STORED, stored) ? DTYPE_SIZE[STORED[stored]] : 0;
      if (!size) throw fail(`weight '${spec.name}' is stored as ${describe(stored)}`);
      const n = spec.shape.reduce((a, b) => a * b, 1);
      if (n > MAX_ELEMENTS) throw fail(`weight '${spec.name}' of shape ${shapeStr(spec.shape)} is too large`);
      specs.set(spec.name, { spec, offset });
      offset += n * size;
    }
  }
  if (offset > bytes.length) throw fail(`weightsManifest describes ${offset} bytes of weights, ${bytes.length} were given`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const read = (name: string): Tensor => {
    const { spec, offset: at } = specs.get(name)!;
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const q = spec.quantization;
    const stored = STORED[String(q ? q.dtype : spec.dtype)];
    if (!(q ? ['F16', 'U8', 'U16'] : ['F32']).includes(stored)) throw fail(`weight '${name}' is stored as ${describe(q ? q.dtype : spec.dtype)}; float32, or quantized uint8 / uint16 / float16, is read`);
    const data = decodeTensorBytes(view, at, n, stored);
    if (stored === 'U8' || stored === 'U16') {
      // the converter's affine quantization: value = min + scale * q
      const scale = q?.scale ?? NaN;
      const min = q?.min ?? NaN;
      if (!Number.isFinite(scale) || !Number.isFinite(min)) throw fail(`weight '${name}': quantization without a finite scale and min`);
      for (let i = 0; i < n; i++) data[i] = min + scale * data[i];
    }
    return { data, shape: spec.shape.slice() };
  };
  const madeBy = `${String(generatedBy ?? '')} ${String(convertedBy ?? '')}`;
  return kerasModel(all, { names: [...specs.keys()], read }, madeBy, options, withHead, fail);
}

/**
 * An LSTM from a Keras model file: Keras 3's `model.save('m.keras')` (a zip of config.json
 * and model.weights.h5), or the .h5 of Keras 2's `model.save('m.h5')` and Keras 3's legacy h5
 * format (the model config in the root's model_config, each layer's weights under
 * model_weights). Layers are chosen as in fromTfjs.
 */
export function fromKerasFile(bytes: Uint8Array, opts?: KerasFileOptions): LSTM {
  return readKerasFile(bytes, opts, false).lstm;
}

/** fromKerasFile, and the Dense layer right after the LSTM layers (SequenceModel.fromKerasFile builds on it). */
export function fromKerasFileWithHead(bytes: Uint8Array, opts?: KerasFileOptions): { lstm: LSTM; head: TfjsHead } {
  const { lstm, head } = readKerasFile(bytes, opts, true);
  return { lstm, head: head! };
}

function readKerasFile(bytes: Uint8Array, opts: KerasFileOptions | undefined, withHead: boolean): { lstm: LSTM; head: TfjsHead | null } {
  const options = optionsArg(opts, 'fromKerasFile options', [...TFJS_OPTIONS, 'modelConfig']);
  const fail = (msg: string) => new LstmError('LSTM_FORMAT', `fromKerasFile: ${msg}`);
  if (!(bytes instanceof Uint8Array)) throw fail(`expected the file's bytes as a Uint8Array, got ${describe(bytes)}`);
  let given: unknown = options.modelConfig;
  if (typeof given === 'string') {
    try {
      given = JSON.parse(given);
    } catch (err) {
      throw new LstmError('LSTM_OPTION', `modelConfig: not JSON (${(err as Error).message})`);
    }
  }
  if (given !== undefined && (given === null || typeof given !== 'object')) throw new LstmError('LSTM_OPTION', `modelConfig: expected model.to_json()'s text or object, got ${describe(options.modelConfig)}`);
  // Keras 3's own format is a zip (PK) holding the config and an .h5 of the weights.
  if (!isHdf5(bytes) && bytes[0] === 0x50 && bytes[1] === 0x4b) return readKerasArchive(bytes, options, withHead, fail);
  const file = loadHdf5(bytes);
  const root = file.attributes[''] ?? {};
  const noConfig = 'pass the model config as options.modelConfig (model.to_json(), or a .keras archive\'s config.json)';
  if (root.layer_names === undefined && root.layer_names0 === undefined && Object.keys(file.tensors).some((p) => p.startsWith('layers/'))) {
    // Keras 3's model.save_weights('m.weights.h5'): the .keras archive's weights file alone
    if (given === undefined) throw fail(`the file holds Keras 3 weights only (model.save_weights), no config to give the layers' options: ${noConfig}`);
    const all = topologyLayers(given, fail);
    return kerasModel(all, kerasV3Weights(file, all), 'keras 3', options, withHead, fail);
  }
  let topology = given;
  if (topology === undefined) {
    if (typeof root.model_config !== 'string') {
      throw fail(root.layer_names !== undefined || root.layer_names0 !== undefined
        ? `the file holds weights only (model.save_weights), no model_config to give the layers' options: ${noConfig}; or read it with loadHdf5 and pass the weights to LSTM.fromKeras`
        : 'the root has no model_config attribute: not a Keras model file');
    }
    try {
      topology = JSON.parse(root.model_config);
    } catch (err) {
      throw fail(`model_config is not JSON (${(err as Error).message})`);
    }
  }
  const all = topologyLayers(topology, fail);
  const group = file.attributes.model_weights ? 'model_weights/' : '';
  // A list of names; Keras splits one past HDF5's 64 KiB header limit into name0, name1, ...
  const listed = (attrs: Record<string, unknown> | undefined, name: string): string[] => {
    const one = (v: unknown): string[] => (typeof v === 'string' ? [v] : Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : []);
    if (!attrs) return [];
    if (name in attrs) return one(attrs[name]);
    const parts: string[] = [];
    for (let k = 0; `${name}${k}` in attrs; k++) for (const v of one(attrs[`${name}${k}`])) parts.push(v);
    return parts;
  };
  const layerNames = listed(file.attributes[group.slice(0, -1)], 'layer_names');
  if (layerNames.length === 0) throw fail(`no layer_names attribute on '${group || '/'}': not a Keras model file`);
  // Each layer's weights under the names Keras gave them (':0' dropped, under the layer's name).
  // A weight listed but not read fails only the layer that needs it.
  const tensors = new Map<string, Tensor>();
  const unread = new Map<string, string>();
  for (const layer of layerNames) {
    for (const w of listed(file.attributes[`${group}${layer}`], 'weight_names')) {
      const path = `${group}${layer}/${w}`;
      const t = file.tensors[path];
      if (!t) {
        if (!unread.has(layer)) {
          // the path itself, or the group above it, left out by the reader
          const parts = path.split('/');
          const at = ['', ...parts.map((_, i) => parts.slice(0, i + 1).join('/'))].find((q) => Object.hasOwn(file.unread, q));
          unread.set(layer, `layer '${layer}' lists the weight '${w}', which ${at !== undefined ? `is not read: '${at || '/'}': ${file.unread[at]}` : 'the file does not hold'}`);
        }
        continue;
      }
      const name = w.replace(/:\d+$/, '');
      tensors.set(name.startsWith(`${layer}/`) ? name : `${layer}/${name}`, t);
    }
  }
  const version = root.keras_version ?? file.attributes[group.slice(0, -1)]?.keras_version;
  return kerasModel(all, { names: [...tensors.keys()], read: (n) => tensors.get(n)!, unread }, `keras ${String(version ?? '')}`, options, withHead, fail);
}

/** Keras' naming.to_snake_case: 'TimeDistributed' -> 'time_distributed', 'LSTM' -> 'lstm'. */
function snakeCase(name: string): string {
  return name
    .replace(/\W+/g, '')
    .replace(/(.)([A-Z][a-z]+)/g, '$1_$2')
    .replace(/([a-z])([A-Z])/g, '$1_$2')
    .toLowerCase();
}

/**
 * A Keras 3 `.keras` file: config.json (the model serialized), metadata.json and
 * model.weights.h5, whose groups saving_lib names by walking the model: the k-th layer of a
 * class under 'layers/<snake_case class>' (k = 0) or 'layers/<snake_case class>_<k>', its
 * variables in '<attribute path>/vars/<i>' in the order the layer made them.
 */
function readKerasArchive(bytes: Uint8Array, options: KerasFileOptions, withHead: boolean, fail: (msg: string) => LstmError): { lstm: LSTM; head: TfjsHead | null } {
  const entries = readZip(bytes, 'fromKerasFile: .keras file');
  const entry = (name: string): Uint8Array => {
    const e = entries.get(name);
    if (!e) throw fail(`the .keras archive has no ${name} (it holds ${[...entries.keys()].map((k) => `'${k}'`).join(', ') || 'nothing'})`);
    return zipEntryBytes(bytes, e, 'fromKerasFile: .keras file');
  };
  const json = (name: string): unknown => {
    try {
      return JSON.parse(new TextDecoder().decode(entry(name)));
    } catch (err) {
      if (err instanceof LstmError) throw err;
      throw fail(`${name} is not JSON (${(err as Error).message})`);
    }
  };
  const config = json('config.json') as TfjsLayer;
  const all = topologyLayers(config, fail);
  const metadata = entries.has('metadata.json') ? (json('metadata.json') as { keras_version?: unknown } | null) : null;
  const weightsFile = entries.has('model.weights.h5') ? 'model.weights.h5' : [...entries.keys()].find((k) => k.endsWith('.weights.h5'));
  if (!weightsFile) throw fail(`the .keras archive has no model.weights.h5 (it holds ${[...entries.keys()].map((k) => `'${k}'`).join(', ')})`);
  const file = loadHdf5(entry(weightsFile));
  return kerasModel(all, kerasV3Weights(file, all), `keras ${String(metadata?.keras_version ?? '3')}`, options, withHead, fail);
}

/**
 * Keras 3's weights file (a .keras archive's model.weights.h5, or save_weights' .weights.h5):
 * each layer's variables found where saving_lib puts them, named as fromTfjs finds them.
 */
function kerasV3Weights(file: Hdf5File, all: TfjsLayer[]): KerasWeightSource {
  // The variables by layer group ('layers/lstm_1'), then by the path inside it ('cell'), then by index.
  const byLayer = new Map<string, Map<string, Map<string, Tensor>>>();
  for (const [p, t] of Object.entries(file.tensors)) {
    const m = /^(layers\/[^/]+)\/(?:(.*)\/)?vars\/([^/]+)$/.exec(p);
    if (!m) continue;
    const groups = byLayer.get(m[1]) ?? new Map<string, Map<string, Tensor>>();
    const vars = groups.get(m[2] ?? '') ?? new Map<string, Tensor>();
    vars.set(m[3], t);
    groups.set(m[2] ?? '', vars);
    byLayer.set(m[1], groups);
  }
  // What the reader left out, by layer group; '' or 'layers' stands for every layer.
  const unreadAt = new Map<string, [string, string]>();
  for (const [p, why] of Object.entries(file.unread)) {
    const key = p === '' || p === 'layers' ? '' : /^layers\/[^/]+/.exec(p)?.[0];
    if (key !== undefined && !unreadAt.has(key)) unreadAt.set(key, [p, why]);
  }
  // Each layer's variables: '<layer>/<path>/kernel' ...
  const tensors = new Map<string, Tensor>();
  const unreadLayers = new Map<string, string>();
  const used = new Map<string, number>();
  for (const layer of all) {
    const cls = snakeCase(String(layer?.class_name ?? ''));
    const k = used.has(cls) ? used.get(cls)! + 1 : 0;
    used.set(cls, k);
    const at = `layers/${k === 0 ? cls : `${cls}_${k}`}`;
    const name = String(layer?.config?.name);
    for (const [group, named] of byLayer.get(at) ?? []) {
      const vars = ['0', '1', '2'].slice(0, named.size).map((i) => named.get(i));
      if (named.size > 3 || vars.some((v) => v === undefined)) {
        unreadLayers.set(name, `'${at}/${group ? `${group}/` : ''}vars' holds variables ${[...named.keys()].map((v) => `'${v}'`).join(', ')}, not the two or three (from '0') of a Dense or an LSTM cell`);
        continue;
      }
      // an LSTM cell made kernel, recurrent_kernel, bias; a Dense kernel, bias
      const roles = /(^|\/)cell$/.test(group) ? ['kernel', 'recurrent_kernel', 'bias'] : ['kernel', 'bias', 'extra'];
      vars.forEach((t, i) => tensors.set(`${name}/${group ? `${group}/` : ''}${roles[i]}`, t!));
    }
    const unread = unreadAt.get('') ?? unreadAt.get(at);
    if (unread) unreadLayers.set(name, `layer '${name}': '${unread[0] || '/'}' is not read: ${unread[1]}`);
  }
  return { names: [...tensors.keys()], read: (n) => tensors.get(n)!, unread: unreadLayers };
}

/** The layers of a Keras model config (Sequential or Functional; tfjs' modelTopology, or an .h5 file's model_config). */
function topologyLayers(topology: unknown, fail: (msg: string) => LstmError): TfjsLayer[] {
  const t = topology as ({ model_config?: TfjsLayer } & TfjsLayer) | null | undefined;
  const top = t?.model_config ?? t;
  // Keras before 2.2.3 wrote a Sequential's config as the list of its layers
  const all = Array.isArray(top?.config) ? top.config : top?.config?.layers;
  if (!Array.isArray(all)) throw fail('the model config has no layers (a layers model is needed, not a graph model)');
  return all;
}

/** A model file's weights: their names (Keras' weight paths, 'lstm/lstm_cell/kernel') and how to read one. */
interface KerasWeightSource {
  names: string[];
  read(name: string): Tensor;
  /** Layers (by name) whose weights the file lists but this reader could not read, and why. */
  unread?: Map<string, string>;
}

/** Keras layers that pass their input through unchanged at inference. */
const INFERENCE_IDENTITY = new Set(['Dropout', 'SpatialDropout1D', 'GaussianDropout', 'GaussianNoise', 'AlphaDropout', 'ActivityRegularization']);

/** The factor a Bidirectional's merge puts on each direction: null for concat. */
function mergeScale(merge: unknown): number | null {
  return merge === 'sum' ? 1 : merge === 'ave' ? 0.5 : null;
}

/** A Keras kernel [F, N] read by [fw; bw] instead of s·(fw + bw): [s·K; s·K], [2F, N]. */
function doubledRows(k: Tensor, scale: number): Tensor {
  const half = k.data.length;
  const data = new Float32Array(2 * half);
  for (let i = 0; i < half; i++) data[i] = data[half + i] = k.data[i] * scale;
  return { data, shape: [2 * k.shape[0], ...k.shape.slice(1)] };
}

/**
 * The LSTM layers (and with withHead, the Dense after them) of a Keras model config, their
 * weights from `source`. madeBy says which Keras wrote the file (for 'hard_sigmoid').
 */
function kerasModel(layers: TfjsLayer[], source: KerasWeightSource, madeBy: string, options: TfjsOptions, withHead: boolean, fail: (msg: string) => LstmError): { lstm: LSTM; head: TfjsHead | null } {
  const read = source.read;
  // Layers that are the identity at inference (Dropout and its kind) stand between others
  // without separating them: LSTM, Dropout, LSTM stacks, and a Dropout before the Dense
  // leaves it the head.
  const all = layers.filter((l) => !INFERENCE_IDENTITY.has(String(l?.class_name)));
  // The LSTM layers: plain, or an LSTM inside a Bidirectional.
  const inner = (l: TfjsLayer) => (l?.class_name === 'Bidirectional' ? l.config?.layer : l);
  const isLstm = (l: TfjsLayer) => inner(l)?.class_name === 'LSTM';
  const lstmLayers = all.filter(isLstm);
  const names = lstmLayers.map((l) => String(l.config?.name));
  let chosen: TfjsLayer[];
  if (options.layers !== undefined) {
    if (!Array.isArray(options.layers) || options.layers.length === 0) throw new LstmError('LSTM_OPTION', `layers: expected a non-empty array of layer names, got ${describe(options.layers)}`);
    chosen = options.layers.map((n) => {
      const l = lstmLayers.find((x) => x.config?.name === n);
      if (!l) throw fail(`no LSTM layer named ${describe(n)} (the model's: ${names.join(', ') || 'none'})`);
      return l;
    });
  } else {
    if (lstmLayers.length === 0) throw fail('the model has no LSTM layer');
    chosen = lstmLayers;
  }
  const cfgOf = (l: TfjsLayer) => (inner(l)?.config ?? {}) as Record<string, unknown>;
  const first = cfgOf(chosen[0]);
  const units = first.units;
  const kind = (l: TfjsLayer) => JSON.stringify([l.class_name, cfgOf(l).units, cfgOf(l).activation, cfgOf(l).recurrent_activation, !!cfgOf(l).go_backwards]);
  // A stack is consecutive layers: nothing (a Dense, a Dropout) may sit between them.
  const at = chosen.map((l) => all.indexOf(l));
  if (at.some((i, k) => k > 0 && i !== at[k - 1] + 1)) {
    throw fail(`layers ${chosen.map((l) => `'${l.config?.name}'`).join(', ')} are not consecutive in the model (another layer sits between them); pass options.layers with one of them, or a run that stacks`);
  }
  if (chosen.length > 1 && chosen.some((l) => kind(l) !== kind(chosen[0]) || cfgOf(l).return_sequences === false && l !== chosen[chosen.length - 1])) {
    throw fail(`layers ${chosen.map((l) => `'${l.config?.name}'`).join(', ')} do not stack into one LSTM (units, activations, direction or return_sequences differ); pass options.layers with one of them, or a run that stacks`);
  }
  // A Bidirectional's two directions, each an LSTM of the same kind, are concatenated here.
  // Keras' merge_mode 'sum' and 'ave' are linear: their output is [fw; bw] times [s·I; s·I]
  // (s = 1 or 1/2), so the layer that reads it (the next LSTM's kernel, or the Dense head)
  // takes the merge into its weights, exactly. 'mul' and None (two outputs) are refused.
  const merges = chosen.map((l) => (l.class_name === 'Bidirectional' ? ((l.config ?? {}) as Record<string, unknown>).merge_mode ?? 'concat' : 'concat'));
  for (const l of chosen) {
    if (l.class_name !== 'Bidirectional') continue;
    const c = (l.config ?? {}) as Record<string, unknown>;
    const merge = c.merge_mode ?? 'concat';
    if (merge !== 'concat' && merge !== 'sum' && merge !== 'ave') {
      throw fail(`Bidirectional layer '${String(c.name)}' merges its directions by ${describe(merge)}; this reader takes 'concat', and 'sum' or 'ave' folded into the weights of the layer after it`);
    }
    if (merge !== 'concat' && l === chosen[chosen.length - 1] && !withHead) {
      throw fail(`Bidirectional layer '${String(c.name)}' merges its directions by '${merge}', which an LSTM alone cannot give (it concatenates them); SequenceModel.fromKerasFile / fromTfjs take the merge into the Dense head after it`);
    }
    const back = (c.backward_layer as TfjsLayer | undefined)?.config as Record<string, unknown> | undefined;
    for (const key of ['units', 'activation', 'recurrent_activation', 'use_bias']) {
      if (back && key in back && JSON.stringify(back[key]) !== JSON.stringify(cfgOf(l)[key])) {
        throw fail(`Bidirectional layer '${String(c.name)}': its backward_layer's ${key} (${describe(back[key])}) differs from the forward layer's (${describe(cfgOf(l)[key])}); both directions here share them`);
      }
    }
  }
  // One layer's weights: names under the layer's (forward_ / backward_ for a Bidirectional's two).
  const weightsOf = (prefix: string, which?: 'forward' | 'backward'): KerasWeights => {
    const unread = source.unread?.get(prefix);
    if (unread) throw fail(unread);
    const mine = source.names.filter((n) => n.startsWith(`${prefix}/`) && (!which || n.slice(prefix.length).includes(which)));
    const pick = (suffix: string) => mine.find((n) => n.endsWith(`/${suffix}`));
    const kernel = pick('kernel');
    const recurrent = pick('recurrent_kernel');
    if (!kernel || !recurrent) throw fail(`no kernel and recurrent_kernel weights under '${prefix}/'${which ? ` for the ${which} direction` : ''}`);
    const bias = pick('bias');
    return { kernel: read(kernel), recurrentKernel: read(recurrent), bias: bias ? read(bias) : undefined };
  };
  const weights = chosen.map((l, i): KerasLayerWeights => {
    const prefix = String(l.config?.name);
    if (l.class_name !== 'Bidirectional') return weightsOf(prefix);
    const pair = { forward: weightsOf(prefix, 'forward'), backward: weightsOf(prefix, 'backward') };
    // the layer before merged its directions: this one reads [fw; bw] through a doubled kernel
    const scale = mergeScale(i > 0 ? merges[i - 1] : 'concat');
    if (scale === null) return pair;
    return { forward: { ...pair.forward, kernel: doubledRows(pair.forward.kernel, scale) }, backward: { ...pair.backward, kernel: doubledRows(pair.backward.kernel, scale) } };
  });
  // The head: a Dense (or TimeDistributed Dense) right after the last LSTM layer, linear, on
  // every step (return_sequences), as SequenceModel's Linear head is, or on the layer's final
  // output (return_sequences false: SequenceModel's outputMode 'final').
  let head: TfjsHead | null = null;
  if (withHead) {
    const lastCfg = cfgOf(chosen[chosen.length - 1]);
    const next = all[at[at.length - 1] + 1] as TfjsLayer | undefined;
    const dense = next?.class_name === 'TimeDistributed' ? next.config?.layer : next;
    if (!next || dense?.class_name !== 'Dense') throw fail(`no Dense layer right after '${chosen[chosen.length - 1].config?.name}' to be the head; LSTM.fromTfjs reads the LSTM alone`);
    const denseCfg = (dense.config ?? {}) as Record<string, unknown>;
    if (options.logits !== undefined && typeof options.logits !== 'boolean') throw new LstmError('LSTM_OPTION', `logits: expected a boolean, got ${describe(options.logits)}`);
    if ((denseCfg.activation ?? 'linear') !== 'linear' && !options.logits) {
      throw fail(`the Dense layer '${next.config?.name}' has activation ${describe(denseCfg.activation)}; the head here is linear: pass { logits: true } to take its output before the activation, and apply ${describe(denseCfg.activation)} to the predictions yourself`);
    }
    const name = String(next.config?.name);
    const unread = source.unread?.get(name);
    if (unread) throw fail(unread);
    const mine = source.names.filter((n) => n.startsWith(`${name}/`));
    const kernel = mine.find((n) => n.endsWith('/kernel'));
    if (!kernel) throw fail(`no kernel weight under '${name}/'`);
    const stored = read(kernel);
    if (stored.shape.length !== 2) throw fail(`the Dense kernel '${kernel}' has shape ${shapeStr(stored.shape)}`);
    const lastScale = mergeScale(merges[merges.length - 1]);
    const k = lastScale === null ? stored : doubledRows(stored, lastScale);
    const [F, O] = k.shape;
    const weight = transpose(k); // [F, O] to Linear's [O, F]
    const biasName = mine.find((n) => n.endsWith('/bias'));
    const bias = biasName ? read(biasName) : null;
    if (bias && (bias.shape.length !== 1 || bias.shape[0] !== O)) throw fail(`the Dense bias '${biasName}' has shape ${shapeStr(bias.shape)}, expected [${O}]`);
    head = { weight, bias: bias ? bias.data : null, inFeatures: F, outFeatures: O, perSequence: lastCfg.return_sequences === false };
  }
  const lstm = fromKeras(weights.length === 1 ? weights[0] : weights, {
    units: Number(units),
    activation: String(first.activation ?? 'tanh'),
    recurrentActivation: String(first.recurrent_activation ?? 'sigmoid'),
    hardSigmoid: options.hardSigmoid ?? (/keras v?3/i.test(madeBy) ? 'keras3' : 'keras2'),
    goBackwards: chosen[0].class_name !== 'Bidirectional' && !!first.go_backwards,
    // Keras 2's time_major=True takes [time, batch, features]
    batchFirst: options.batchFirst ?? (first.time_major === true ? false : undefined),
    backend: options.backend,
  });
  if (head && head.inFeatures !== lstm.config.numDirections * lstm.config.outSize) {
    lstm.dispose();
    throw fail(`the Dense head takes ${head.inFeatures} features, the LSTM gives ${lstm.config.numDirections * lstm.config.outSize}`);
  }
  return { lstm, head };
}

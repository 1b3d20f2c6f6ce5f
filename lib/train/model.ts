// Layers, losses and a sequence model that trains in-process: an LSTM stack with a
// Linear head on every step or on each sequence's end (outputMode), PyTorch state-dict
// names (lstm.*, head.weight, head.bias).
import { checkBool, checkEnum, type BackendChoice, type LSTMOptions } from '../config.js';
import { LstmError, type LstmErrorCode, checkKnownKeys, describe, isErrorCode } from '../errors.js';
import { loadOnnxWithHead } from '../io/onnx.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import { LSTM, rejectOut, type ForwardOptions, type LengthsLike } from '../lstm.js';
import { Rng, randomSeed } from '../rng.js';
import { checkTensor, sameShape, shapeSize, shapeStr, type Tensor } from '../tensor.js';
import { clipGradNorm, type Optimizer, type Parameter } from './optim.js';
import { ReduceLROnPlateau, isBuiltinScheduler, type LRScheduler, type SchedulerState } from './schedule.js';
import { nextTask, startFitWorker } from '../platform.js';
import { MODEL_FORMAT, checkStoredAgainstWeights, fromKerasFileWithHead, fromStoredOptions, fromTfjsWithHead, inferOptions, optionsOf, storedOptions, type KerasFileOptions, type TfjsOptions } from '../interop.js';
import { loadTorch } from '../io/torch.js';
import type { FitWorkerData } from './fit-worker.js';

/** y = x W^T + b over the last axis (torch.nn.Linear), initialised U(-1/sqrt(in), 1/sqrt(in)). */
export class Linear {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: Float32Array;
  readonly bias: Float32Array | null;

  constructor(options: { inFeatures: number; outFeatures: number; bias?: boolean; seed?: number }) {
    const { inFeatures, outFeatures } = options;
    for (const [k, v] of Object.entries({ inFeatures, outFeatures })) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new LstmError('LSTM_OPTION', `${k}: expected a positive integer, got ${describe(v)}`);
    }
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const rng = new Rng(options.seed ?? randomSeed());
    const k = 1 / Math.sqrt(inFeatures);
    this.weight = new Float32Array(outFeatures * inFeatures);
    rng.fillUniform(this.weight, -k, k);
    this.bias = options.bias === false ? null : new Float32Array(outFeatures);
    if (this.bias) rng.fillUniform(this.bias, -k, k);
  }

  /** x [..., in] -> [..., out]. */
  forward(x: Tensor): Tensor {
    const t = checkTensor(x, 'x');
    const In = this.inFeatures;
    if (t.shape.length < 1 || t.shape[t.shape.length - 1] !== In) throw new LstmError('LSTM_SHAPE', `x: expected [..., ${In}], got ${shapeStr(t.shape)}`);
    const rows = t.data.length / In;
    const out = new Float32Array(rows * this.outFeatures);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < this.outFeatures; o++) {
        let s = this.bias ? this.bias[o] : 0;
        const w = o * In;
        for (let i = 0; i < In; i++) s += this.weight[w + i] * t.data[r * In + i];
        out[r * this.outFeatures + o] = s;
      }
    }
    return { data: out, shape: [...t.shape.slice(0, -1), this.outFeatures] };
  }

  /** Given x and dL/dy, accumulate dW and db into the given buffers and return dL/dx. */
  backward(x: Float32Array, dy: Float32Array, dW: Float32Array, db: Float32Array | null): Float32Array {
    const In = this.inFeatures;
    const Out = this.outFeatures;
    const rows = x.length / In;
    const dx = new Float32Array(x.length);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < Out; o++) {
        const g = dy[r * Out + o];
        if (g === 0) continue;
        if (db) db[o] += g;
        const w = o * In;
        for (let i = 0; i < In; i++) {
          dW[w + i] += g * x[r * In + i];
          dx[r * In + i] += g * this.weight[w + i];
        }
      }
    }
    return dx;
  }
}

/** Which positions of a [T, B] (or [B, T]) grid count: 1 inside each sequence's length. */
function positionMask(T: number, B: number, batchFirst: boolean, lengths: Int32Array | null): Float32Array {
  const mask = new Float32Array(T * B).fill(1);
  if (lengths) {
    for (let t = 0; t < T; t++)
      for (let b = 0; b < B; b++) if (t >= lengths[b]) mask[batchFirst ? b * T + t : t * B + b] = 0;
  }
  return mask;
}

export interface LossResult {
  loss: number;
  /** dLoss/dPrediction, shaped as the prediction. */
  grad: Float32Array;
  /**
   * What the mean divided by: the valid elements (crossEntropy: the valid positions, each at
   * its class's weight). Summing loss * denominator over batches gives the data set's mean.
   */
  denominator: number;
}

export interface LossOptions {
  lengths?: LengthsLike;
  batchFirst?: boolean;
  /** crossEntropy only: a weight per class (torch's weight), e.g. against imbalanced classes. */
  classWeights?: ArrayLike<number>;
  /** crossEntropy only: mix this share of a uniform distribution into the targets (torch's label_smoothing). */
  labelSmoothing?: number;
  /** crossEntropy only: positions whose class is this add nothing (torch's ignore_index, e.g. -100). */
  ignoreIndex?: number;
}

/** The valid-position mask a loss applies, from `lengths` over a [T, B, *] or [B, T, *] prediction. */
function lossMask(shape: number[], options: LossOptions): Float32Array | null {
  if (options === null || typeof options !== 'object') throw new LstmError('LSTM_OPTION', `loss options: expected an object, got ${describe(options)}`);
  checkKnownKeys(options, 'loss options', ['lengths', 'batchFirst', 'classWeights', 'labelSmoothing', 'ignoreIndex']);
  if (options.lengths === undefined || shape.length !== 3) return null;
  const [a, b] = shape;
  const bf = options.batchFirst ?? false;
  return positionMask(bf ? b : a, bf ? a : b, bf, toLengths(options.lengths, bf ? a : b));
}

function toLengths(v: LengthsLike | undefined, B: number): Int32Array | null {
  if (v === undefined || v === null) return null;
  const src = (typeof v === 'object' && 'data' in v ? (v as { data: ArrayLike<number | bigint> }).data : v) as ArrayLike<number | bigint>;
  if (src.length !== B) throw new LstmError('LSTM_SHAPE', `lengths: expected ${B} entries, got ${src.length}`);
  return Int32Array.from({ length: B }, (_, i) => Number(src[i]));
}

/** A loss of one element, and its derivative in the prediction. */
type ElementLoss = (p: number, y: number) => [number, number];

/** Mean of an elementwise loss over every valid element (reduction 'mean'). pred/target [T, B, F] (or [B, T, F]). */
function elementwise(f: ElementLoss, pred: Tensor, target: Tensor, options: LossOptions): LossResult {
  const p = checkTensor(pred, 'pred');
  const y = checkTensor(target, 'target');
  if (!sameShape(p.shape, y.shape)) throw new LstmError('LSTM_SHAPE', `target: expected ${shapeStr(p.shape)} (the prediction's shape), got ${shapeStr(y.shape)}`);
  const F = p.shape[p.shape.length - 1] ?? 1;
  const positions = F > 0 ? p.data.length / F : 0;
  const mask = lossMask(p.shape, options);
  let count = 0;
  for (let i = 0; i < positions; i++) if (!mask || mask[i] !== 0) count += F;
  const grad = new Float32Array(p.data.length);
  if (count === 0) return { loss: 0, grad, denominator: 0 };
  let sum = 0;
  for (let i = 0; i < positions; i++) {
    if (mask && mask[i] === 0) continue;
    for (let k = i * F; k < (i + 1) * F; k++) {
      const [v, d] = f(p.data[k], y.data[k]);
      sum += v;
      grad[k] = d / count;
    }
  }
  return { loss: sum / count, grad, denominator: count };
}

const squared: ElementLoss = (p, y) => [(p - y) ** 2, 2 * (p - y)];
const absolute: ElementLoss = (p, y) => [Math.abs(p - y), Math.sign(p - y)];
const huberOne: ElementLoss = (p, y) => {
  const d = p - y;
  const a = Math.abs(d);
  return a < 1 ? [0.5 * d * d, d] : [a - 0.5, Math.sign(d)];
};
const logistic: ElementLoss = (z, y) => [Math.max(z, 0) - z * y + Math.log1p(Math.exp(-Math.abs(z))), 1 / (1 + Math.exp(-z)) - y];

/** Mean squared error over every valid element (torch mse_loss, reduction 'mean'). pred/target [T, B, F] (or [B, T, F]). */
export function mse(pred: Tensor, target: Tensor, options: LossOptions = {}): LossResult {
  return elementwise(squared, pred, target, options);
}

/** Mean absolute error (torch l1_loss; the gradient at 0 is 0, as torch's sign). */
export function l1Loss(pred: Tensor, target: Tensor, options: LossOptions = {}): LossResult {
  return elementwise(absolute, pred, target, options);
}

/** Huber loss with delta 1 (torch huber_loss, equal to smooth_l1_loss with beta 1): squared near the target, absolute far from it. */
export function huberLoss(pred: Tensor, target: Tensor, options: LossOptions = {}): LossResult {
  return elementwise(huberOne, pred, target, options);
}

/** Binary cross entropy of logits against targets in [0, 1] (torch binary_cross_entropy_with_logits), computed stably. */
export function bceWithLogits(logits: Tensor, target: Tensor, options: LossOptions = {}): LossResult {
  return elementwise(logistic, logits, target, options);
}

/**
 * Cross entropy of logits [..., C] against class indices [...] (torch cross_entropy, mean
 * over valid positions), with torch's class weights (the mean then weighs each position by
 * its class's weight), label smoothing and ignore_index as options.
 */
export function crossEntropy(logits: Tensor, classes: Tensor | ArrayLike<number>, options: LossOptions = {}): LossResult {
  const z = checkTensor(logits, 'logits');
  const C = z.shape[z.shape.length - 1];
  const positions = z.data.length / C;
  const idx = ArrayBuffer.isView(classes) || Array.isArray(classes) ? (classes as ArrayLike<number>) : checkTensor(classes, 'classes').data;
  if (idx.length !== positions) throw new LstmError('LSTM_SHAPE', `classes: expected ${positions} indices (one per position of ${shapeStr(z.shape)}), got ${idx.length}`);
  const { weights, smoothing, ignore } = crossEntropyOptions(options, C);
  const mask = lossMask(z.shape, options);
  // The mean's denominator: the valid positions, each counted at its class's weight.
  let norm = 0;
  for (let i = 0; i < positions; i++) {
    if (mask && mask[i] === 0) continue;
    const k = idx[i];
    if (ignore !== undefined && k === ignore) continue;
    if (!Number.isInteger(k) || k < 0 || k >= C) throw new LstmError('LSTM_SHAPE', `classes[${i}]: expected an integer in 0..${C - 1}, got ${describe(k)}`);
    norm += weights ? weights[k] : 1;
  }
  const grad = new Float32Array(z.data.length);
  if (norm === 0) return { loss: 0, grad, denominator: 0 };
  let weightSum = 0; // sum of every class's weight: the smoothing term's
  for (let c = 0; c < C; c++) weightSum += weights ? weights[c] : 1;
  let loss = 0;
  for (let i = 0; i < positions; i++) {
    if (mask && mask[i] === 0) continue;
    const k = idx[i];
    if (ignore !== undefined && k === ignore) continue;
    let max = -Infinity;
    for (let c = 0; c < C; c++) max = Math.max(max, z.data[i * C + c]);
    let sum = 0;
    for (let c = 0; c < C; c++) sum += Math.exp(z.data[i * C + c] - max);
    const logSum = Math.log(sum) + max;
    const wk = weights ? weights[k] : 1;
    // -(1 - s) w_k log p_k - (s / C) sum_c w_c log p_c
    let smooth = 0;
    if (smoothing > 0) for (let c = 0; c < C; c++) smooth += (weights ? weights[c] : 1) * (logSum - z.data[i * C + c]);
    loss += (1 - smoothing) * wk * (logSum - z.data[i * C + k]) + (smoothing / C) * smooth;
    for (let c = 0; c < C; c++) {
      const p = Math.exp(z.data[i * C + c] - logSum);
      const wc = weights ? weights[c] : 1;
      grad[i * C + c] = ((1 - smoothing) * wk * (p - (c === k ? 1 : 0)) + (smoothing / C) * (weightSum * p - wc)) / norm;
    }
  }
  return { loss: loss / norm, grad, denominator: norm };
}

/**
 * Class weights checked and copied into a plain array: finite numbers >= 0, exactly C of
 * them when the number of classes is known (else at most 2^20).
 */
function classWeightList(w: unknown, C?: number): number[] {
  const a = w as ArrayLike<unknown> | null;
  const lengthOk = a !== null && typeof a === 'object' && typeof a.length === 'number' && (C === undefined ? Number.isSafeInteger(a.length) && a.length <= 1 << 20 : a.length === C);
  if (!lengthOk) throw new LstmError('LSTM_OPTION', C === undefined ? `classWeights: expected an array of numbers, got ${describe(w)}` : `classWeights: expected ${C} numbers (one per class), got ${describe(w)}`);
  const out: number[] = [];
  for (let c = 0; c < a.length; c++) {
    const v = a[c];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new LstmError('LSTM_OPTION', `classWeights[${c}]: expected a finite number >= 0, got ${describe(v)}`);
    out.push(v);
  }
  return out;
}

/** crossEntropy's own options, checked. */
function crossEntropyOptions(o: LossOptions, C: number): { weights: Float64Array | null; smoothing: number; ignore: number | undefined } {
  const weights = o.classWeights === undefined ? null : Float64Array.from(classWeightList(o.classWeights, C));
  const smoothing = o.labelSmoothing ?? 0;
  if (typeof smoothing !== 'number' || !(smoothing >= 0 && smoothing <= 1)) throw new LstmError('LSTM_OPTION', `labelSmoothing: expected a number in [0, 1], got ${describe(smoothing)}`);
  const ignore = o.ignoreIndex;
  if (ignore !== undefined && (typeof ignore !== 'number' || !Number.isSafeInteger(ignore))) throw new LstmError('LSTM_OPTION', `ignoreIndex: expected an integer, got ${describe(ignore)}`);
  return { weights, smoothing, ignore };
}

/** The loss's own options (crossEntropy's: class weights, label smoothing, ignore_index), as trainStep, evaluate and fit take them. */
export type LossSettings = Pick<LossOptions, 'classWeights' | 'labelSmoothing' | 'ignoreIndex'>;

/** Only the LossSettings of an options object (so they cannot change lengths or layout). */
function lossSettings(o: { lossOptions?: LossSettings } | undefined): LossSettings {
  const l = o?.lossOptions;
  if (l === undefined) return {};
  if (l === null || typeof l !== 'object') throw new LstmError('LSTM_OPTION', `lossOptions: expected { classWeights?, labelSmoothing?, ignoreIndex? }, got ${describe(l)}`);
  return { classWeights: l.classWeights, labelSmoothing: l.labelSmoothing, ignoreIndex: l.ignoreIndex };
}

/** 'crossEntropy' takes class indices; the others targets shaped as the predictions. */
export type LossName = 'mse' | 'l1' | 'huber' | 'bceWithLogits' | 'crossEntropy';

const ELEMENTWISE: Record<Exclude<LossName, 'crossEntropy'>, (pred: Tensor, target: Tensor, options: LossOptions) => LossResult> = {
  mse,
  l1: l1Loss,
  huber: huberLoss,
  bceWithLogits,
};

/** A loss option checked (default mse). */
function lossName(v: unknown): LossName {
  if (v === undefined) return 'mse';
  if (v === 'crossEntropy' || (typeof v === 'string' && Object.hasOwn(ELEMENTWISE, v))) return v as LossName;
  throw new LstmError('LSTM_OPTION', `loss: expected one of ${[...Object.keys(ELEMENTWISE), 'crossEntropy'].map((k) => `'${k}'`).join(', ')}, got ${describe(v)}`);
}

/** The named loss of predictions against targets (class indices for crossEntropy). */
function lossOf(name: LossName, pred: Tensor, target: Tensor | ArrayLike<number>, options: LossOptions): LossResult {
  return name === 'crossEntropy' ? crossEntropy(pred, target, options) : ELEMENTWISE[name](pred, target as Tensor, options);
}

/** Training data, samples first: x [N, T, I]; y [N, T, O] (for crossEntropy: [N, T] class indices). */
export interface FitData {
  x: Tensor;
  y: Tensor;
  /** Valid length of each sample (1..T). */
  lengths?: ArrayLike<number>;
}

export interface FitProgress {
  epoch: number;
  epochs: number;
  step: number;
  stepsPerEpoch: number;
  loss: number;
  valLoss?: number;
  /** The learning rate this step used. */
  lr: number;
  samplesPerSecond: number;
}

export interface FitOptions {
  optimizer: Optimizer;
  /**
   * A learning-rate schedule for `optimizer` (StepLR, MultiStepLR, ExponentialLR,
   * CosineAnnealingLR, LinearLR, ConstantLR, PolynomialLR, CosineAnnealingWarmRestarts,
   * OneCycleLR, SequentialLR, ReduceLROnPlateau), stepped after every epoch as in PyTorch's
   * examples (or every mini-batch: schedulerStep); ReduceLROnPlateau with the epoch's
   * validation loss, else its training loss.
   */
  scheduler?: LRScheduler;
  /**
   * 'epoch' (default): step the scheduler after each epoch; 'batch': after each mini-batch's
   * update (all its tbptt windows), as OneCycleLR is meant to be stepped, with totalSteps =
   * epochs * ceil(N / batchSize). ReduceLROnPlateau steps per epoch only.
   */
  schedulerStep?: 'epoch' | 'batch';
  /**
   * Stop when the validation loss (else the training loss) has not improved by more than
   * minDelta (default 0) for `patience` epochs, and by default (restoreBest) put back the
   * weights of the best epoch.
   */
  earlyStopping?: { patience: number; minDelta?: number; restoreBest?: boolean };
  epochs?: number;
  batchSize?: number;
  shuffle?: boolean;
  /** Seeds the shuffling (reproducible runs). */
  seed?: number;
  loss?: LossName;
  /** crossEntropy's classWeights, labelSmoothing and ignoreIndex, for training and validation. */
  lossOptions?: LossSettings;
  clipGradNorm?: number;
  validation?: FitData;
  /** Truncated BPTT: train on windows of this many steps, carrying the state across them. */
  tbptt?: number;
  onProgress?: (p: FitProgress) => void;
  signal?: AbortSignal;
  /**
   * Train on a worker thread, keeping the main thread free (default: true where that
   * helps: a native-engine model in Node with an SGD, Adam, AdamW, RMSprop or Adagrad
   * optimizer, and none or one of this library's schedulers). The model, optimizer and
   * scheduler are updated in place when training ends (or is aborted).
   */
  worker?: boolean;
}

export interface FitResult {
  /** Mean training loss (and validation loss) per completed epoch, and the learning rate it trained with (its first step's). */
  history: { loss: number; valLoss?: number; lr: number }[];
  /** True when the signal stopped training early. */
  aborted: boolean;
  /** With earlyStopping: whether it stopped training, and the epoch (from 1) whose loss was best. */
  stoppedEarly?: boolean;
  bestEpoch?: number;
}

/** earlyStopping's options, checked. */
function earlyStoppingOf(v: unknown): { patience: number; minDelta: number; restoreBest: boolean } | null {
  if (v === undefined) return null;
  const o = v as { patience?: unknown; minDelta?: unknown; restoreBest?: unknown };
  if (v === null || typeof v !== 'object' || !Number.isSafeInteger(o.patience) || (o.patience as number) < 1) {
    throw new LstmError('LSTM_OPTION', `earlyStopping: expected { patience: a positive integer, minDelta?, restoreBest? }, got ${describe(v)}`);
  }
  const minDelta = o.minDelta ?? 0;
  if (typeof minDelta !== 'number' || !Number.isFinite(minDelta) || minDelta < 0) throw new LstmError('LSTM_OPTION', `earlyStopping.minDelta: expected a finite number >= 0, got ${describe(o.minDelta)}`);
  const restoreBest = checkBool(o.restoreBest, 'earlyStopping.restoreBest', true);
  return { patience: o.patience as number, minDelta, restoreBest };
}

const FIT_KEYS = ['optimizer', 'scheduler', 'schedulerStep', 'earlyStopping', 'epochs', 'batchSize', 'shuffle', 'seed', 'loss', 'lossOptions', 'clipGradNorm', 'validation', 'tbptt', 'onProgress', 'signal', 'worker'];

/**
 * fit's options, each checked before training starts on either path (a typo, a callback
 * that is not one, or a value a worker cannot receive is an LstmError, never a TypeError or
 * DataCloneError).
 */
function checkFitOptions(o: FitOptions): void {
  if (o === null || typeof o !== 'object') throw new LstmError('LSTM_OPTION', `fit options: expected an object, got ${describe(o)}`);
  for (const k of Object.keys(o)) {
    if (!FIT_KEYS.includes(k)) throw new LstmError('LSTM_OPTION', `fit: unknown option '${k}' (options: ${FIT_KEYS.join(', ')})`);
  }
  if (!o.optimizer) throw new LstmError('LSTM_OPTION', 'fit: options.optimizer is required');
  checkOptimizer(o.optimizer);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw new LstmError('LSTM_OPTION', `onProgress: expected a function, got ${describe(o.onProgress)}`);
  const sig = o.signal as unknown as { aborted?: unknown; addEventListener?: unknown } | undefined;
  if (sig !== undefined && (sig === null || typeof sig !== 'object' || typeof sig.aborted !== 'boolean' || typeof sig.addEventListener !== 'function')) {
    throw new LstmError('LSTM_OPTION', `signal: expected an AbortSignal, got ${describe(o.signal)}`);
  }
  checkBool(o.shuffle, 'shuffle', true);
  if (o.seed !== undefined && (typeof o.seed !== 'number' || !Number.isSafeInteger(o.seed) || o.seed < 0)) throw new LstmError('LSTM_OPTION', `seed: expected a non-negative integer, got ${describe(o.seed)}`);
  for (const k of ['epochs', 'batchSize', 'tbptt'] as const) {
    const v = o[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 1)) throw new LstmError('LSTM_OPTION', `${k}: expected a positive integer, got ${describe(v)}`);
  }
  if (o.clipGradNorm !== undefined && (typeof o.clipGradNorm !== 'number' || !Number.isFinite(o.clipGradNorm) || o.clipGradNorm < 0)) {
    throw new LstmError('LSTM_OPTION', `clipGradNorm: expected a finite number >= 0, got ${describe(o.clipGradNorm)}`);
  }
}

/** An optimizer: one of this library's, or an object with its step() and lr (a subclass of Optimizer). */
function checkOptimizer(o: unknown): void {
  const opt = o as { step?: unknown; lr?: unknown } | null;
  if (opt === null || typeof opt !== 'object' || typeof opt.step !== 'function' || typeof opt.lr !== 'number') {
    throw new LstmError('LSTM_OPTION', `optimizer: expected an optimizer (SGD, Adam, AdamW, RMSprop, Adagrad), got ${describe(o)}`);
  }
}

/** lossOptions as plain values (class weights copied and checked): what a worker can receive. */
function plainLossSettings(o: FitOptions): LossSettings | undefined {
  if (o.lossOptions === undefined) return undefined;
  const l = lossSettings(o);
  const classWeights = l.classWeights === undefined ? undefined : classWeightList(l.classWeights);
  for (const k of ['labelSmoothing', 'ignoreIndex'] as const) {
    if (l[k] !== undefined && typeof l[k] !== 'number') throw new LstmError('LSTM_OPTION', `${k}: expected a number, got ${describe(l[k])}`);
  }
  return { classWeights, labelSmoothing: l.labelSmoothing, ignoreIndex: l.ignoreIndex };
}

/** A data set as plain values (the tensors as checked, lengths as numbers): what a worker can receive. */
function plainFitData(d: FitData, name: string): FitData {
  const x = checkTensor(d.x, `${name}.x`);
  const y = checkTensor(d.y, `${name}.y`);
  let lengths: number[] | undefined;
  if (d.lengths !== undefined) {
    lengths = Array.from(d.lengths as ArrayLike<unknown>, (v, i) => {
      if (typeof v !== 'number') throw new LstmError('LSTM_SHAPE', `${name}.lengths[${i}]: expected a number, got ${describe(v)}`);
      return v;
    });
  }
  return { x, y, lengths };
}

/** Whether fit steps the scheduler after every mini-batch (schedulerStep 'batch'). */
function schedulerPerBatch(options: FitOptions): boolean {
  const perBatch = checkEnum(options.schedulerStep, 'schedulerStep', ['epoch', 'batch'] as const, 'epoch') === 'batch';
  if (perBatch && options.scheduler instanceof ReduceLROnPlateau) throw new LstmError('LSTM_OPTION', "schedulerStep: ReduceLROnPlateau needs the epoch's loss, so it steps per epoch only");
  return perBatch;
}

function checkFitData(d: FitData, name: string, loss: LossName, mode: OutputMode): { N: number; T: number; I: number; O: number } {
  if (d === null || typeof d !== 'object') throw new LstmError('LSTM_SHAPE', `${name}: expected { x, y, lengths? }, got ${describe(d)}`);
  const x = checkTensor(d.x, `${name}.x`);
  const y = checkTensor(d.y, `${name}.y`);
  if (x.shape.length !== 3) throw new LstmError('LSTM_SHAPE', `${name}.x: expected [N, T, I], got ${shapeStr(x.shape)}`);
  const [N, T, I] = x.shape;
  const classes = loss === 'crossEntropy';
  // Per step: y [N, T, O] or [N, T] classes; per sequence (outputMode 'last' / 'final'): [N, O] or [N].
  const lead = mode === 'sequence' ? [N, T] : [N];
  const want = classes ? lead : [...lead, -1];
  const ok = y.shape.length === want.length && want.every((v, i) => v === -1 || y.shape[i] === v);
  if (!ok) throw new LstmError('LSTM_SHAPE', `${name}.y: expected ${classes ? `${shapeStr(lead)} class indices` : `[${lead.join(', ')}, O]`}${mode === 'sequence' ? '' : ` (one target per sequence: outputMode '${mode}')`}, got ${shapeStr(y.shape)}`);
  if (d.lengths !== undefined && d.lengths.length !== N) throw new LstmError('LSTM_SHAPE', `${name}.lengths: expected ${N} entries, got ${d.lengths.length}`);
  return { N, T, I, O: classes ? 1 : y.shape[y.shape.length - 1] };
}

/** The targets of samples idx: steps [t0, t1) of y [N, T, O] (per step), or y [N, O] rows (per sequence). */
function gatherTargets(y: Float32Array, T: number, O: number, idx: number[], t0: number, t1: number, batchFirst: boolean, mode: OutputMode): Float32Array {
  if (mode === 'sequence') return gather(y, T, O, idx, t0, t1, batchFirst);
  const out = new Float32Array(idx.length * O);
  idx.forEach((s, b) => out.set(y.subarray(s * O, (s + 1) * O), b * O));
  return out;
}

/** Rows `idx` of a samples-first [N, T, F] array, time steps [t0, t1), in the model's layout. */
function gather(src: Float32Array, T: number, F: number, idx: number[], t0: number, t1: number, batchFirst: boolean): Float32Array {
  const n = t1 - t0;
  const B = idx.length;
  const out = new Float32Array(B * n * F);
  idx.forEach((s, b) => {
    for (let t = t0; t < t1; t++) {
      const from = (s * T + t) * F;
      const to = batchFirst ? (b * n + (t - t0)) * F : ((t - t0) * B + b) * F;
      out.set(src.subarray(from, from + F), to);
    }
  });
  return out;
}

/**
 * What the head reads: 'sequence' (default) every step's output, a prediction per step;
 * 'last' the output at each sequence's last (valid) step, one prediction per sequence, as
 * PyTorch's fc(out[:, -1]) (with lengths: out[lengths - 1]); 'final' the last layer's final
 * hidden states, both directions side by side, as fc(hn[-1]) or fc(torch.cat((hn[-2],
 * hn[-1]), 1)) for a bidirectional one, and Keras' return_sequences=False. 'last' and
 * 'final' are the same for a forward model (not for a reverse or bidirectional one, whose
 * reverse direction ends at the first step).
 */
export type OutputMode = 'sequence' | 'last' | 'final';

export interface SequenceModelOptions extends LSTMOptions {
  outputSize: number;
  outputMode?: OutputMode;
}

export interface TrainStepOptions extends ForwardOptions {
  optimizer: Optimizer;
  loss?: LossName;
  /** crossEntropy's classWeights, labelSmoothing and ignoreIndex. */
  lossOptions?: LossSettings;
  clipGradNorm?: number;
}

/** LSTM stack + Linear head on every step, or on each sequence's end (outputMode). */
export class SequenceModel {
  readonly lstm: LSTM;
  readonly head: Linear;
  readonly outputMode: OutputMode;
  private readonly grads = new Map<string, Float32Array>();
  private params: Parameter[] | null = null;

  constructor(options: SequenceModelOptions) {
    if (options === null || typeof options !== 'object') throw new LstmError('LSTM_OPTION', `options: expected an object, got ${describe(options)}`);
    const { outputSize, outputMode, ...lstmOptions } = options;
    this.outputMode = checkEnum(outputMode, 'outputMode', ['sequence', 'last', 'final'] as const, 'sequence');
    this.lstm = new LSTM(lstmOptions);
    this.head = new Linear({ inFeatures: this.lstm.config.numDirections * this.lstm.config.outSize, outFeatures: outputSize, seed: lstmOptions.seed === undefined ? undefined : lstmOptions.seed + 1 });
  }

  /**
   * A model from an ONNX file of an LSTM stack with a Linear head on its output sequence,
   * as torch.onnx.export writes nn.LSTM followed by nn.Linear (MatMul, then Add) and as
   * exportOnnx writes a SequenceModel, or on each sequence's end (outputMode 'last' for
   * fc(out[:, -1]), 'final' for fc(hn[-1]) and fc(torch.cat((hn[-2], hn[-1]), 1)): a Gather
   * of the last step or of Y_h's last rows, then Gemm). forward then gives the file's output.
   */
  static fromOnnx(bytes: Uint8Array, options: { backend?: BackendChoice } = {}): SequenceModel {
    const { lstm, head } = loadOnnxWithHead(bytes, options);
    return SequenceModel.withHead(lstm, head, options.backend, head.reads);
  }

  /**
   * A model from a TensorFlow.js layers model whose LSTM layers are followed by a linear
   * Dense layer on every step (see LSTM.fromTfjs for the files and for choosing layers).
   */
  static fromTfjs(modelJson: unknown, weightData: Uint8Array | ArrayBuffer, options: TfjsOptions = {}): SequenceModel {
    const { lstm, head } = fromTfjsWithHead(modelJson, weightData, options);
    return SequenceModel.withHead(lstm, head, options.backend, head.perSequence ? 'final' : 'sequence');
  }

  /**
   * A model from a Keras model file (.keras or .h5) whose LSTM layers are followed by a linear Dense
   * layer (see LSTM.fromKerasFile and LSTM.fromTfjs).
   */
  static fromKerasFile(bytes: Uint8Array, options: KerasFileOptions = {}): SequenceModel {
    const { lstm, head } = fromKerasFileWithHead(bytes, options);
    return SequenceModel.withHead(lstm, head, options.backend, head.perSequence ? 'final' : 'sequence');
  }

  /**
   * A model from a PyTorch file of an nn.LSTM followed by an nn.Linear on every step — a
   * state dict, a checkpoint, the model saved whole or a TorchScript archive (see loadTorch).
   * The LSTM and the head are found by their names and shapes (or give their prefixes,
   * e.g. { lstm: 'rnn.', head: 'fc.' }). batchFirst comes from a model saved whole, else from
   * options (default false: a state dict does not record it). The file does not say which
   * outputs the head reads (that is the module's forward code): outputMode says it, e.g.
   * 'last' for fc(out[:, -1]) (default 'sequence').
   */
  static fromTorch(bytes: Uint8Array, options: StateDictModelOptions = {}): SequenceModel {
    checkStateDictOptions(options, 'fromTorch');
    const { tensors, values } = loadTorch(bytes);
    const lstm = options.lstm ?? findLstm(tensors, 'fromTorch', 'the file');
    // a module saved whole records batch_first; a state dict does not
    const saved = values[`${lstm}batch_first`];
    return modelFromStateDict(tensors, { ...options, lstm, batchFirst: options.batchFirst ?? (typeof saved === 'boolean' ? saved : undefined) }, 'fromTorch', 'the file');
  }

  /**
   * A model from the state dict of an nn.LSTM followed by an nn.Linear on every step, as any
   * loader gives it: loadSafetensors (PyTorch's safetensors.torch.save_file(model.state_dict())),
   * loadNpz, loadTorch. The LSTM and the head are found as fromTorch finds them (or give
   * their prefixes); batchFirst (default false) and outputMode (default 'sequence') say what
   * the module's forward code did.
   */
  static fromStateDict(tensors: Record<string, Tensor>, options: StateDictModelOptions = {}): SequenceModel {
    if (tensors === null || typeof tensors !== 'object' || Array.isArray(tensors) || ArrayBuffer.isView(tensors)) {
      throw new LstmError('LSTM_OPTION', `fromStateDict: expected an object of tensors by name, got ${describe(tensors)}`);
    }
    checkStateDictOptions(options, 'fromStateDict');
    for (const [name, t] of Object.entries(tensors)) checkTensor(t, name);
    return modelFromStateDict(tensors, options, 'fromStateDict', 'the state dict');
  }

  /** A SequenceModel holding `lstm`'s weights (then disposed) and the given head. */
  private static withHead(lstm: LSTM, head: { weight: Float32Array; bias: Float32Array | null; outFeatures: number }, backend: BackendChoice | undefined, outputMode: OutputMode = 'sequence'): SequenceModel {
    try {
      const model = new SequenceModel({ ...optionsOf(lstm), outputSize: head.outFeatures, outputMode, backend: backend ?? 'auto' });
      model.lstm.loadStateDict(lstm.stateDict());
      model.head.weight.set(head.weight);
      // A head without a bias (Linear(bias=False), Dense(use_bias=False)) keeps a zero one: the same outputs.
      if (model.head.bias) {
        if (head.bias) model.head.bias.set(head.bias);
        else model.head.bias.fill(0);
      }
      return model;
    } finally {
      lstm.dispose();
    }
  }

  /** Every parameter with its gradient buffer, PyTorch-named (lstm.*, head.*). */
  parameters(): Parameter[] {
    if (this.params) return this.params;
    const lstmParams = this.lstm.parameters('lstm.');
    const head: Parameter[] = [{ name: 'head.weight', value: this.head.weight, grad: new Float32Array(this.head.weight.length), shape: [this.head.outFeatures, this.head.inFeatures] }];
    if (this.head.bias) head.push({ name: 'head.bias', value: this.head.bias, grad: new Float32Array(this.head.bias.length), shape: [this.head.outFeatures] });
    this.params = [...lstmParams, ...head];
    for (const p of this.params) this.grads.set(p.name, p.grad);
    return this.params;
  }

  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(this.lstm.stateDict())) out[`lstm.${k}`] = v;
    out['head.weight'] = { data: this.head.weight.slice(), shape: [this.head.outFeatures, this.head.inFeatures] };
    if (this.head.bias) out['head.bias'] = { data: this.head.bias.slice(), shape: [this.head.outFeatures] };
    return out;
  }

  /**
   * Load lstm.* and head.* (or, for a PyTorch model whose modules have other names, e.g.
   * `self.rnn` and `self.fc`, `{ lstm: 'rnn.', head: 'fc.' }`), all under `prefix`.
   */
  loadStateDict(tensors: Record<string, Tensor>, options: { prefix?: string; strict?: boolean; lstm?: string; head?: string } = {}): this {
    const prefix = options.prefix ?? '';
    const strict = options.strict ?? true;
    const lstmName = options.lstm ?? 'lstm.';
    const headName = options.head ?? 'head.';
    for (const [k, v] of Object.entries({ lstm: lstmName, head: headName })) {
      if (typeof v !== 'string') throw new LstmError('LSTM_OPTION', `${k}: expected a name prefix such as '${k}.', got ${describe(v)}`);
    }
    const hw = tensors[`${prefix}${headName}weight`];
    const hb = tensors[`${prefix}${headName}bias`];
    const wantW = [this.head.outFeatures, this.head.inFeatures];
    for (const [t, want, name] of [[hw, wantW, `${headName}weight`], [hb, [this.head.outFeatures], `${headName}bias`]] as const) {
      if (t === undefined) {
        if (strict && (name === `${headName}weight` || this.head.bias)) throw new LstmError('LSTM_WEIGHTS', `missing tensors: ${prefix}${name}`);
        continue;
      }
      const c = checkTensor(t, `tensors['${prefix}${name}']`);
      if (!sameShape(c.shape, want)) throw new LstmError('LSTM_WEIGHTS', `tensors['${prefix}${name}']: expected shape ${shapeStr(want)}, got ${shapeStr(c.shape)}`);
    }
    const lstmPart: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(tensors)) if (k.startsWith(`${prefix}${lstmName}`)) lstmPart[k.slice(prefix.length)] = v;
    this.lstm.loadStateDict(lstmPart, { prefix: lstmName, strict });
    if (hw) this.head.weight.set(hw.data);
    if (hb && this.head.bias) this.head.bias.set(hb.data);
    return this;
  }

  /**
   * Predictions on every step: [T, B, outputSize] (or batch-first / unbatched like the
   * LSTM); with outputMode 'last' or 'final', one per sequence: [B, outputSize] ([outputSize]
   * unbatched).
   */
  forward(x: Tensor, options: ForwardOptions = {}): { output: Tensor; hn: Tensor; cn: Tensor } {
    // out would receive the LSTM's output, not the predictions returned.
    rejectOut(options, 'SequenceModel.forward');
    const r = this.lstm.forward(x, options);
    return { output: this.head.forward(this.headInput(r, options.lengths).features), hn: r.hn, cn: r.cn };
  }

  /**
   * forward off the main thread: the LSTM runs as LSTM.forwardAsync does (a libuv worker on
   * the native engine), the head after it; the same numbers as forward.
   */
  async forwardAsync(x: Tensor, options: ForwardOptions = {}): Promise<{ output: Tensor; hn: Tensor; cn: Tensor }> {
    rejectOut(options, 'SequenceModel.forwardAsync');
    const lengths = options?.lengths;
    const r = await this.lstm.forwardAsync(x, options);
    return { output: this.head.forward(this.headInput(r, lengths).features), hn: r.hn, cn: r.cn };
  }

  /**
   * What the head reads from a run (outputMode): the output itself, or per sequence the
   * output at its last valid step ('last') or the last layer's final states ('final'), as
   * [B, F] ([F] unbatched); with `scatter`, which puts a gradient of those features back
   * where they came from, as backward's upstream.
   */
  private headInput(r: { output: Tensor; hn: Tensor }, lengthsArg: LengthsLike | undefined): { features: Tensor; scatter: (d: Float32Array) => { output?: Tensor; hn?: Tensor } } {
    if (this.outputMode === 'sequence') return { features: r.output, scatter: (d) => ({ output: { data: d, shape: r.output.shape } }) };
    const c = this.lstm.config;
    const F = c.numDirections * c.outSize;
    const unbatched = r.output.shape.length === 2;
    const bf = c.batchFirst && !unbatched;
    const T = unbatched || !bf ? r.output.shape[0] : r.output.shape[1];
    const B = unbatched ? 1 : bf ? r.output.shape[0] : r.output.shape[1];
    const shape = unbatched ? [F] : [B, F];
    // Offsets of the B feature rows in the output ('last') or, per direction, in hn ('final').
    const rows: number[] = [];
    if (this.outputMode === 'last') {
      const lengths = toLengths(lengthsArg, B);
      for (let b = 0; b < B; b++) {
        const t = (lengths ? lengths[b] : T) - 1;
        if (!(t >= 0 && t < T)) throw new LstmError('LSTM_SHAPE', `lengths[${b}]: expected an integer in 1..${T}, got ${lengths![b]}`);
        rows.push((bf ? b * T + t : t * B + b) * F);
      }
    } else {
      const D = c.numDirections;
      const H = c.outSize;
      for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) rows.push((((c.numLayers - 1) * D + d) * B + b) * H);
    }
    const width = this.outputMode === 'last' ? F : c.outSize;
    const source = this.outputMode === 'last' ? r.output : r.hn;
    const features = new Float32Array(B * F);
    rows.forEach((at, i) => features.set(source.data.subarray(at, at + width), i * width));
    return {
      features: { data: features, shape },
      scatter: (d) => {
        const up = new Float32Array(source.data.length);
        rows.forEach((at, i) => up.set(d.subarray(i * width, (i + 1) * width), at));
        return this.outputMode === 'last' ? { output: { data: up, shape: source.shape } } : { hn: { data: up, shape: source.shape } };
      },
    };
  }

  /** Free the LSTM's engine memory (native or wasm) now; later calls are LSTM_DISPOSED. */
  dispose(): void {
    this.lstm.dispose();
  }

  /** One optimisation step on a batch; returns the loss before the update. */
  trainStep(x: Tensor, target: Tensor, options: TrainStepOptions): number {
    return this.trainStepState(x, target, options).loss;
  }

  /** trainStep that also returns the final states (truncated BPTT carries them on). */
  trainStepState(x: Tensor, target: Tensor, options: TrainStepOptions): { loss: number; hn: Tensor; cn: Tensor } {
    if (!options || !options.optimizer) throw new LstmError('LSTM_OPTION', 'trainStep: options.optimizer is required');
    checkOptimizer(options.optimizer);
    checkKnownKeys(options, 'trainStep options', ['optimizer', 'loss', 'lossOptions', 'clipGradNorm', 'h0', 'c0', 'lengths', 'dropout', 'out']);
    const params = this.parameters();
    const { h0, c0, lengths, dropout, out } = options as TrainStepOptions & { dropout?: boolean; out?: unknown };
    const run = this.lstm.forwardTrain(x, { h0, c0, lengths, dropout, ...(out === undefined ? {} : { out }) } as never);
    const input = this.headInput(run, options.lengths);
    const pred = this.head.forward(input.features);
    // Per sequence, every prediction counts; per step, those within each length.
    const lossOpts = { ...lossSettings(options), ...(this.outputMode === 'sequence' ? { lengths: options.lengths, batchFirst: this.lstm.config.batchFirst } : {}) };
    const { loss, grad } = lossOf(lossName(options.loss), pred, target, lossOpts);
    for (const p of params) p.grad.fill(0);
    const dFeatures = this.head.backward(input.features.data, grad, this.grads.get('head.weight')!, this.grads.get('head.bias') ?? null);
    const g = run.backward(input.scatter(dFeatures));
    for (const [name, t] of Object.entries(g.params)) this.grads.get(`lstm.${name}`)!.set(t.data);
    if (options.clipGradNorm !== undefined) clipGradNorm(params, options.clipGradNorm);
    options.optimizer.step();
    return { loss, hn: run.hn, cn: run.cn };
  }

  /** Zero states for step(): { h [L, batch, Hout], c [L, batch, H] } (LSTM.initialState). */
  initialState(batch = 1): { h: Tensor; c: Tensor } {
    return this.lstm.initialState(batch);
  }

  /** Zero some rows' state (all by default) in place: see LSTM.resetState. */
  resetState(state: { h: Tensor; c: Tensor }, rows?: ArrayLike<number>): { h: Tensor; c: Tensor } {
    return this.lstm.resetState(state, rows);
  }

  /** Advance one time step for streaming (see LSTM.step); returns the head's output [B, outputSize]. */
  step(x: Tensor, state: { h: Tensor; c: Tensor }): Tensor {
    return this.head.forward(this.lstm.step(x, state));
  }

  /**
   * Autoregressive forecast, for a one-direction model whose predictions are its next inputs
   * (outputSize = inputSize): run the context x as forward does (full length, from h0/c0 or
   * zeros), then feed each prediction back in as the next input. Returns the `horizon`
   * predictions after the context: [horizon, B, O] ([B, horizon, O] batch-first, [horizon, O]
   * for an unbatched context).
   */
  forecast(x: Tensor, horizon: number, options: { h0?: Tensor; c0?: Tensor } = {}): Tensor {
    const c = this.lstm.config;
    if (c.direction !== 'forward') throw new LstmError('LSTM_OPTION', `forecast: a ${c.direction} model cannot run on past its input`);
    const O = this.head.outFeatures;
    if (O !== c.inputSize) throw new LstmError('LSTM_OPTION', `forecast: the predictions (${O} values) must be the next inputs (inputSize ${c.inputSize})`);
    if (typeof horizon !== 'number' || !Number.isSafeInteger(horizon) || horizon < 1) throw new LstmError('LSTM_OPTION', `horizon: expected a positive integer, got ${describe(horizon)}`);
    if (options === null || typeof options !== 'object') throw new LstmError('LSTM_OPTION', `forecast options: expected { h0?, c0? }, got ${describe(options)}`);
    const r = this.forward(x, { h0: options.h0, c0: options.c0 }); // checks x and the states
    const shape = r.output.shape;
    const perStep = this.outputMode === 'sequence';
    const unbatched = perStep ? shape.length === 2 : shape.length === 1;
    const bf = c.batchFirst && !unbatched;
    const T = perStep ? (bf ? shape[1] : shape[0]) : 1;
    const B = unbatched ? 1 : perStep && !bf ? shape[1] : shape[0];
    shapeSize([horizon, B, O], 'forecast output'); // at most MAX_ELEMENTS, as every tensor
    const out = new Float32Array(horizon * B * O); // [horizon, B, O]
    for (let b = 0; b < B; b++) {
      // the prediction after the context: its last step's ('last', 'final': the only one)
      const row = bf ? b * T + (T - 1) : (T - 1) * B + b;
      out.set(r.output.data.subarray(row * O, (row + 1) * O), b * O);
    }
    const L = c.numLayers;
    const state = {
      h: { data: r.hn.data, shape: [L, B, c.outSize] },
      c: { data: r.cn.data, shape: [L, B, c.hiddenSize] },
    };
    for (let k = 1; k < horizon; k++) {
      const next = this.step({ data: out.subarray((k - 1) * B * O, k * B * O), shape: [B, O] }, state);
      out.set(next.data, k * B * O);
    }
    if (unbatched) return { data: out, shape: [horizon, O] };
    if (!bf) return { data: out, shape: [horizon, B, O] };
    const t = new Float32Array(out.length);
    for (let k = 0; k < horizon; k++) for (let b = 0; b < B; b++) t.set(out.subarray((k * B + b) * O, (k * B + b + 1) * O), (b * horizon + k) * O);
    return { data: t, shape: [B, horizon, O] };
  }

  /** The mean loss over a data set, without training: over every valid element, whatever the batch size (as one batch of it all gives). */
  evaluate(data: FitData, options: { loss?: LossName; lossOptions?: LossSettings; batchSize?: number } = {}): number {
    const loss = lossName(options.loss);
    const { N, T, I, O } = checkFitData(data, 'data', loss, this.outputMode);
    const bf = this.lstm.config.batchFirst;
    const batch = options.batchSize ?? 64;
    let total = 0;
    let weight = 0;
    for (let s = 0; s < N; s += batch) {
      const idx = Array.from({ length: Math.min(batch, N - s) }, (_, i) => s + i);
      const B = idx.length;
      const x = { data: gather(data.x.data, T, I, idx, 0, T, bf), shape: bf ? [B, T, I] : [T, B, I] };
      const lengths = data.lengths ? idx.map((i) => data.lengths![i]) : undefined;
      const pred = this.forward(x, { lengths }).output;
      const y = gatherTargets(data.y.data, T, O, idx, 0, T, bf, this.outputMode);
      const r = lossOf(loss, pred, loss === 'crossEntropy' ? y : { data: y, shape: pred.shape }, { ...lossSettings(options), ...(this.outputMode === 'sequence' ? { lengths, batchFirst: bf } : {}) });
      // the whole set's mean: each batch's loss at what its mean divided by
      total += r.loss * r.denominator;
      weight += r.denominator;
    }
    return weight > 0 ? total / weight : 0;
  }

  /**
   * Train on a data set: mini-batches (shuffled with a seed), optional validation and
   * truncated BPTT. It yields to the event loop between steps, so timers, I/O and an
   * AbortSignal stay live while it trains; progress goes to onProgress after each step.
   */
  async fit(data: FitData, options: FitOptions): Promise<FitResult> {
    checkFitOptions(options);
    if (options.scheduler !== undefined && (options.scheduler === null || typeof options.scheduler !== 'object' || options.scheduler.optimizer !== options.optimizer)) {
      throw new LstmError('LSTM_OPTION', `scheduler: expected a scheduler made for options.optimizer, got ${describe(options.scheduler)}`);
    }
    if (options.worker !== undefined && typeof options.worker !== 'boolean') throw new LstmError('LSTM_OPTION', `worker: expected a boolean, got ${describe(options.worker)}`);
    if ((options.worker ?? true) && this.lstm.backend === 'native' && ['sgd', 'adam', 'adamw', 'rmsprop', 'adagrad'].includes(String(options.optimizer.config?.name)) && (!options.scheduler || isBuiltinScheduler(options.scheduler))) {
      return this.fitOnWorker(data, options);
    }
    const loss = lossName(options.loss);
    const { N, T, I, O } = checkFitData(data, 'data', loss, this.outputMode);
    if (options.validation) checkFitData(options.validation, 'validation', loss, this.outputMode);
    const early = earlyStoppingOf(options.earlyStopping);
    const perBatch = schedulerPerBatch(options);
    const { scheduler } = options;
    let best = { loss: Infinity, epoch: 0, weights: null as Record<string, Tensor> | null };
    const epochs = options.epochs ?? 1;
    const batchSize = options.batchSize ?? 32;
    const window = options.tbptt ?? T; // (checkFitOptions checked all three)
    if (options.tbptt !== undefined && data.lengths) throw new LstmError('LSTM_OPTION', 'tbptt: truncated BPTT with per-sample lengths is not supported; pad or split the sequences instead');
    if (options.tbptt !== undefined && this.lstm.config.numDirections === 2) throw new LstmError('LSTM_OPTION', 'tbptt: a bidirectional LSTM cannot carry its state across windows');
    if (options.tbptt !== undefined && this.outputMode !== 'sequence') throw new LstmError('LSTM_OPTION', `tbptt: with outputMode '${this.outputMode}' only the last window has a target`);
    const bf = this.lstm.config.batchFirst;
    const rng = new Rng(options.seed ?? randomSeed());
    const order = Array.from({ length: N }, (_, i) => i);
    const stepsPerEpoch = Math.ceil(N / batchSize);
    const history: FitResult['history'] = [];
    const started = performance.now();
    let seen = 0;
    for (let epoch = 1; epoch <= epochs; epoch++) {
      if (options.shuffle ?? true) {
        for (let i = N - 1; i > 0; i--) {
          const j = rng.nextU32() % (i + 1);
          [order[i], order[j]] = [order[j], order[i]];
        }
      }
      let epochLoss = 0;
      const epochLr = options.optimizer.lr;
      for (let step = 0; step < stepsPerEpoch; step++) {
        const lr = options.optimizer.lr;
        if (options.signal?.aborted) return { history, aborted: true, ...(early ? { stoppedEarly: false, bestEpoch: best.epoch } : {}) };
        const idx = order.slice(step * batchSize, (step + 1) * batchSize);
        const B = idx.length;
        const lengths = data.lengths ? idx.map((i) => data.lengths![i]) : undefined;
        let h0: Tensor | undefined;
        let c0: Tensor | undefined;
        let stepLoss = 0;
        let windows = 0;
        for (let t0 = 0; t0 < T; t0 += window) {
          const t1 = Math.min(T, t0 + window);
          const n = t1 - t0;
          const x = { data: gather(data.x.data, T, I, idx, t0, t1, bf), shape: bf ? [B, n, I] : [n, B, I] };
          const yData = gatherTargets(data.y.data, T, O, idx, t0, t1, bf, this.outputMode);
          const perStep = this.outputMode === 'sequence';
          const y = { data: yData, shape: loss !== 'crossEntropy' ? (!perStep ? [B, O] : bf ? [B, n, O] : [n, B, O]) : !perStep ? [B] : bf ? [B, n] : [n, B] };
          const r = this.trainStepState(x, y, { optimizer: options.optimizer, loss, lossOptions: options.lossOptions, clipGradNorm: options.clipGradNorm, lengths, h0, c0 });
          stepLoss += r.loss;
          windows++;
          h0 = r.hn;
          c0 = r.cn;
        }
        epochLoss += stepLoss / windows;
        seen += B;
        if (perBatch) scheduler?.step();
        options.onProgress?.({
          epoch,
          epochs,
          step: step + 1,
          stepsPerEpoch,
          loss: stepLoss / windows,
          lr,
          samplesPerSecond: seen / ((performance.now() - started) / 1000),
        });
        await new Promise<void>((resolve) => nextTask(resolve));
      }
      const entry: FitResult['history'][number] = { loss: epochLoss / stepsPerEpoch, lr: epochLr };
      if (options.validation) {
        entry.valLoss = this.evaluate(options.validation, { loss, lossOptions: options.lossOptions, batchSize });
        options.onProgress?.({ epoch, epochs, step: stepsPerEpoch, stepsPerEpoch, loss: entry.loss, valLoss: entry.valLoss, lr: epochLr, samplesPerSecond: seen / ((performance.now() - started) / 1000) });
      }
      history.push(entry);
      if (scheduler && !perBatch) scheduler.step(scheduler instanceof ReduceLROnPlateau ? (entry.valLoss ?? entry.loss) : undefined);
      if (early) {
        const watched = entry.valLoss ?? entry.loss;
        if (watched < best.loss - early.minDelta) {
          best = { loss: watched, epoch, weights: early.restoreBest ? this.stateDict() : null };
        } else if (epoch - best.epoch >= early.patience) {
          if (best.weights) this.loadStateDict(best.weights);
          return { history, aborted: false, stoppedEarly: true, bestEpoch: best.epoch };
        }
      }
    }
    return { history, aborted: false, ...(early ? { stoppedEarly: false, bestEpoch: best.epoch } : {}) };
  }

  /** fit() on a worker thread: same arguments, same result, the main thread stays free. */
  private fitOnWorker(data: FitData, options: FitOptions): Promise<FitResult> {
    const loss = lossName(options.loss);
    // Everything the worker would reject is rejected here, with the same errors.
    checkFitData(data, 'data', loss, this.outputMode);
    if (options.validation) checkFitData(options.validation, 'validation', loss, this.outputMode);
    const early = earlyStoppingOf(options.earlyStopping);
    schedulerPerBatch(options);
    if (options.signal?.aborted) return Promise.resolve({ history: [], aborted: true, ...(early ? { stoppedEarly: false, bestEpoch: 0 } : {}) });
    const { optimizer, scheduler, onProgress, signal } = options;
    // Only plain, checked values go to the worker (the caller's objects may hold anything).
    const fit: FitWorkerData['fit'] = {
      epochs: options.epochs,
      batchSize: options.batchSize,
      shuffle: options.shuffle,
      seed: options.seed,
      loss,
      lossOptions: plainLossSettings(options),
      clipGradNorm: options.clipGradNorm,
      validation: options.validation ? plainFitData(options.validation, 'validation') : undefined,
      tbptt: options.tbptt,
      earlyStopping: early ?? undefined,
      schedulerStep: options.schedulerStep,
    };
    const job: FitWorkerData = {
      options: { ...optionsOf(this.lstm), outputSize: this.head.outFeatures, outputMode: this.outputMode, backend: 'native', threads: this.lstm.config.threads },
      checkpoint: this.saveCheckpoint(optimizer),
      optimizer: optimizer.config,
      scheduler: scheduler ? { config: scheduler.config, state: scheduler.state() } : undefined,
      data: plainFitData(data, 'data'),
      fit,
    };
    return new Promise<FitResult>((resolve, reject) => {
      let settled = false;
      const onAbort = (): void => handle?.post('abort');
      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const handle = startFitWorker(
        job,
        (m) => {
          const msg = m as { type: string; progress?: FitProgress; result?: FitResult; checkpoint?: Uint8Array; scheduler?: SchedulerState; code?: string; message?: string };
          if (msg.type === 'progress') {
            if (signal?.aborted) return; // steps the worker finished before the abort reached it
            try {
              onProgress?.(msg.progress!);
            } catch (err) {
              handle?.terminate();
              finish(() => reject(err));
            }
          } else if (msg.type === 'done') {
            finish(() => {
              try {
                this.loadCheckpoint(msg.checkpoint!, optimizer);
                if (scheduler && msg.scheduler) scheduler.loadState(msg.scheduler);
                resolve(msg.result!);
              } catch (err) {
                reject(err);
              }
            });
          } else if (msg.type === 'error') {
            const code = msg.code as LstmErrorCode | undefined;
            finish(() => reject(code && isErrorCode(code) ? new LstmError(code, msg.message ?? '') : new Error(msg.message)));
          }
        },
        (err) => finish(() => reject(err)),
      );
      if (!handle) {
        finish(() => resolve(this.fit(data, { ...options, worker: false })));
        return;
      }
      signal?.addEventListener('abort', onAbort);
    });
  }

  /**
   * Model and optimizer state as one safetensors file, with the model's options in its
   * metadata (fromCheckpoint makes the model again from it alone).
   */
  saveCheckpoint(optimizer?: Optimizer, metadata: Record<string, string> = {}): Uint8Array {
    const tensors: Record<string, Tensor> = this.stateDict();
    const model = { ...optionsOf(this.lstm), outputSize: this.head.outFeatures, outputMode: this.outputMode };
    const meta: Record<string, string> = { ...metadata, format: 'lstm-native-checkpoint/1', model: JSON.stringify(model) };
    // Where the dropout masks' stream stands, so a resumed run draws the masks it would have.
    if (this.lstm.config.dropout > 0) meta.dropout_rng = JSON.stringify(this.lstm.dropoutState);
    if (optimizer) {
      meta.optimizer = JSON.stringify({ ...optimizer.config, stepCount: optimizer.stepCount });
      for (const [name, bufs] of optimizer.state) {
        for (const [key, buf] of Object.entries(bufs)) tensors[`optimizer.${name}.${key}`] = { data: buf.slice(), shape: [buf.length] };
      }
    }
    return saveSafetensors(tensors, meta);
  }

  /**
   * The model a checkpoint holds, made from the options saveCheckpoint wrote beside its
   * weights (or, from the command line's train, its options), with those weights (and
   * dropout's stream). To resume training, make the optimizer for its parameters and
   * loadCheckpoint(bytes, optimizer).
   */
  static fromCheckpoint(bytes: Uint8Array, options: { backend?: BackendChoice } = {}): SequenceModel {
    if (options === null || typeof options !== 'object') throw new LstmError('LSTM_OPTION', `fromCheckpoint options: expected an object, got ${describe(options)}`);
    checkKnownKeys(options, 'fromCheckpoint options', ['backend']);
    const { tensors, metadata } = loadSafetensors(bytes);
    if (metadata.format !== 'lstm-native-checkpoint/1') throw new LstmError('LSTM_FORMAT', 'fromCheckpoint: not an lstm-native checkpoint');
    const stored = storedOptions({ ...metadata, format: MODEL_FORMAT }, metadata.model !== undefined ? 'model' : 'options');
    if (!stored) throw new LstmError('LSTM_FORMAT', "fromCheckpoint: the checkpoint does not hold the model's options (saved before they were written); make the model and call loadCheckpoint");
    // Its options must describe the weights it holds before a model of their size is made.
    const { outputSize, outputMode: _mode, ...lstmOptions } = stored;
    checkStoredAgainstWeights(lstmOptions, tensors, 'lstm.');
    const hw = tensors['head.weight'];
    if (!hw || hw.shape.length !== 2 || hw.shape[0] !== outputSize) throw new LstmError('LSTM_WEIGHTS', `the file's options need 'head.weight' of ${describe(outputSize)} rows; it holds ${hw ? `one of ${shapeStr(hw.shape)}` : 'none'}`);
    const model = fromStoredOptions(() => new SequenceModel({ ...(stored as unknown as SequenceModelOptions), backend: options.backend ?? 'auto' }));
    try {
      return model.restore(tensors, metadata);
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  /** Restore what saveCheckpoint wrote (the optimizer must have the same kind and parameters). */
  loadCheckpoint(bytes: Uint8Array, optimizer?: Optimizer): this {
    const { tensors, metadata } = loadSafetensors(bytes);
    if (metadata.format !== 'lstm-native-checkpoint/1') throw new LstmError('LSTM_FORMAT', 'loadCheckpoint: not an lstm-native checkpoint');
    return this.restore(tensors, metadata, optimizer);
  }

  /** loadCheckpoint from the decoded file (fromCheckpoint has decoded it already). */
  private restore(tensors: Record<string, Tensor>, metadata: Record<string, string>, optimizer?: Optimizer): this {
    const model: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(tensors)) if (!k.startsWith('optimizer.')) model[k] = v;
    this.loadStateDict(model);
    if (metadata.dropout_rng !== undefined && this.lstm.config.dropout > 0) {
      let state: unknown;
      try {
        state = JSON.parse(metadata.dropout_rng);
      } catch {
        state = metadata.dropout_rng;
      }
      if (!Array.isArray(state)) throw new LstmError('LSTM_FORMAT', `loadCheckpoint: dropout_rng is not four 32-bit words: ${describe(metadata.dropout_rng)}`);
      this.lstm.dropoutState = state;
    }
    if (optimizer) {
      const saved = metadata.optimizer ? JSON.parse(metadata.optimizer) : null;
      if (!saved || saved.name !== optimizer.config.name) throw new LstmError('LSTM_FORMAT', `loadCheckpoint: the checkpoint holds ${saved ? saved.name : 'no'} optimizer state, not ${String(optimizer.config.name)}`);
      optimizer.state.clear();
      for (const [k, v] of Object.entries(tensors)) {
        if (!k.startsWith('optimizer.')) continue;
        const rest = k.slice('optimizer.'.length);
        const dot = rest.lastIndexOf('.');
        const name = rest.slice(0, dot);
        const bufs: Record<string, Float32Array> = optimizer.state.get(name) ?? {};
        bufs[rest.slice(dot + 1)] = v.data.slice();
        optimizer.state.set(name, bufs);
      }
      optimizer.stepCount = saved.stepCount ?? 0;
      // The learning rate it had (a schedule may have moved it), and the momentum or betas
      // (OneCycleLR cycles them), as torch's optimizer.load_state_dict restores param_groups.
      if (typeof saved.lr === 'number') optimizer.lr = saved.lr;
      const cycled = optimizer as unknown as { momentum?: number; betas?: [number, number] };
      if (typeof saved.momentum === 'number' && 'momentum' in optimizer) cycled.momentum = saved.momentum;
      if (Array.isArray(saved.betas) && 'betas' in optimizer) cycled.betas = saved.betas;
    }
    return this;
  }
}

/** SequenceModel.fromTorch's and fromStateDict's options. */
export interface StateDictModelOptions {
  /** The LSTM's name prefix, e.g. 'rnn.' (found by its names when there is one LSTM). */
  lstm?: string;
  /** The head's name prefix, e.g. 'fc.' (found as the one Linear reading the LSTM's features). */
  head?: string;
  batchFirst?: boolean;
  outputMode?: OutputMode;
  backend?: BackendChoice;
}

function checkStateDictOptions(options: StateDictModelOptions, fn: string): void {
  if (options === null || typeof options !== 'object') throw new LstmError('LSTM_OPTION', `${fn} options: expected an object, got ${describe(options)}`);
  for (const k of ['lstm', 'head'] as const) {
    if (options[k] !== undefined && typeof options[k] !== 'string') throw new LstmError('LSTM_OPTION', `${k}: expected a name prefix such as 'rnn.', got ${describe(options[k])}`);
  }
  if (options.batchFirst !== undefined && typeof options.batchFirst !== 'boolean') throw new LstmError('LSTM_OPTION', `batchFirst: expected a boolean, got ${describe(options.batchFirst)}`);
  checkKnownKeys(options, `${fn} options`, ['lstm', 'head', 'batchFirst', 'outputMode', 'backend']);
}

/** The one name found, or LSTM_WEIGHTS listing the candidates (or saying there are none). */
function oneOf(found: string[], what: string, option: string, fn: string, where: string): string {
  if (found.length === 1) return found[0];
  const list = found.map((f) => `'${f}'`).join(', ');
  throw new LstmError('LSTM_WEIGHTS', `${fn}: ${found.length ? `${found.length} candidates for the ${what} (${list}); pass options.${option} with one of them` : `no ${what} in ${where}; pass options.${option} if it is there under another name`}`);
}

/** The prefix of the state dict's one LSTM: the names before weight_ih_l0 / weight_hh_l0. */
function findLstm(tensors: Record<string, Tensor>, fn: string, where: string): string {
  const names = Object.keys(tensors);
  return oneOf(names.filter((k) => k.endsWith('weight_ih_l0') && tensors[`${k.slice(0, -'weight_ih_l0'.length)}weight_hh_l0`]).map((k) => k.slice(0, -'weight_ih_l0'.length)), 'LSTM', 'lstm', fn, where);
}

/** An LSTM and the Linear head reading its features, found in a state dict by names and shapes. */
function modelFromStateDict(tensors: Record<string, Tensor>, options: StateDictModelOptions, fn: string, where: string): SequenceModel {
  const lstm = options.lstm ?? findLstm(tensors, fn, where);
  const lstmOptions = inferOptions(tensors, { prefix: lstm });
  const width = (lstmOptions.bidirectional ? 2 : 1) * (lstmOptions.projSize || lstmOptions.hiddenSize);
  // the Linear that reads the LSTM's output: a [O, width] tensor named ...weight (no LSTM parameter is)
  const head =
    options.head ??
    oneOf(
      Object.keys(tensors)
        .filter((k) => k.endsWith('weight') && tensors[k].shape.length === 2 && tensors[k].shape[1] === width)
        .map((k) => k.slice(0, -'weight'.length)),
      `Linear head reading ${width} features`,
      'head',
      fn,
      where,
    );
  const hw = tensors[`${head}weight`];
  if (!hw || hw.shape.length !== 2) throw new LstmError('LSTM_WEIGHTS', `${fn}: no 2-D '${head}weight' for the head`);
  const model = new SequenceModel({ ...lstmOptions, batchFirst: options.batchFirst ?? false, outputSize: hw.shape[0], outputMode: options.outputMode, backend: options.backend ?? 'auto' });
  // nn.Linear(bias=False): a zero bias gives the same outputs
  const bias = tensors[`${head}bias`] ?? { data: new Float32Array(hw.shape[0]), shape: [hw.shape[0]] };
  try {
    return model.loadStateDict({ ...tensors, [`${head}bias`]: bias }, { lstm, head });
  } catch (err) {
    model.dispose();
    throw err;
  }
}

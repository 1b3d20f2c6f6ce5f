import { cpuCount, env as hostEnv } from './platform.js';
import { LstmError, describe } from './errors.js';

/** Activation names accepted everywhere (the ONNX LSTM set, in camelCase). */
export type ActivationName =
  | 'sigmoid'
  | 'tanh'
  | 'relu'
  | 'hardSigmoid'
  | 'leakyRelu'
  | 'thresholdedRelu'
  | 'scaledTanh'
  | 'affine'
  | 'elu'
  | 'softsign'
  | 'softplus';

export type Activation = ActivationName | { name: ActivationName; alpha?: number; beta?: number };

/** Activation as both engines see it: a kind index and its two parameters. */
export interface ResolvedActivation {
  name: ActivationName;
  kind: number;
  alpha: number;
  beta: number;
}

/** Kind indices are part of the native ABI (native/kernels/activations.h): keep in sync. */
export const ACTIVATIONS: Record<ActivationName, { kind: number; alpha: number; beta: number }> = {
  sigmoid: { kind: 0, alpha: 0, beta: 0 },
  tanh: { kind: 1, alpha: 0, beta: 0 },
  relu: { kind: 2, alpha: 0, beta: 0 },
  hardSigmoid: { kind: 3, alpha: 0.2, beta: 0.5 },
  leakyRelu: { kind: 4, alpha: 0.01, beta: 0 },
  thresholdedRelu: { kind: 5, alpha: 1, beta: 0 },
  scaledTanh: { kind: 6, alpha: 1, beta: 1 },
  affine: { kind: 7, alpha: 1, beta: 0 },
  elu: { kind: 8, alpha: 1, beta: 0 },
  softsign: { kind: 9, alpha: 0, beta: 0 },
  softplus: { kind: 10, alpha: 0, beta: 0 },
};

/** One direction's three activations. */
export interface ActivationSet {
  gate: ResolvedActivation;
  cell: ResolvedActivation;
  hidden: ResolvedActivation;
}

/** Direction d's activations (d = 1: a bidirectional LSTM's reverse direction). */
export function configActivations(c: Pick<LSTMConfig, 'gateActivation' | 'cellActivation' | 'hiddenActivation' | 'reverseActivations'>, d: number): ActivationSet {
  return d === 1 && c.reverseActivations ? c.reverseActivations : { gate: c.gateActivation, cell: c.cellActivation, hidden: c.hiddenActivation };
}

export function sameActivation(a: ResolvedActivation, b: ResolvedActivation): boolean {
  return a.kind === b.kind && Object.is(a.alpha, b.alpha) && Object.is(a.beta, b.beta);
}

export type Direction = 'forward' | 'reverse' | 'bidirectional';
export type Peephole = 'none' | 'diagonal' | 'full';
export type BackendChoice = 'auto' | 'native' | 'wasm' | 'js';

export interface LSTMOptions {
  inputSize: number;
  hiddenSize: number;
  numLayers?: number;
  bias?: boolean;
  batchFirst?: boolean;
  bidirectional?: boolean;
  direction?: Direction;
  projSize?: number;
  peephole?: Peephole;
  /**
   * The gate (i, f, o), cell input (g) and hidden (h) activations. A bidirectional LSTM also
   * takes a pair [forward, reverse], as the ONNX operator does (6 activations).
   */
  gateActivation?: Activation | readonly [Activation, Activation];
  cellActivation?: Activation | readonly [Activation, Activation];
  hiddenActivation?: Activation | readonly [Activation, Activation];
  clip?: number;
  coupledInputForget?: boolean;
  seed?: number;
  /**
   * Dropout on the outputs of every layer but the last, while training (forwardTrain,
   * trainStep, fit), as PyTorch's nn.LSTM(dropout=p): kept values are scaled by 1/(1-p).
   * forward, forwardAsync and step never drop (evaluation). Default 0.
   */
  dropout?: number;
  backend?: BackendChoice;
  /** Native threads per call (default: LSTM_THREADS, else the number of cores). Results do not depend on it. */
  threads?: number;
}

export interface LSTMConfig {
  inputSize: number;
  hiddenSize: number;
  numLayers: number;
  bias: boolean;
  batchFirst: boolean;
  direction: Direction;
  numDirections: 1 | 2;
  projSize: number;
  /** Width of h: projSize when projecting, else hiddenSize. */
  outSize: number;
  peephole: Peephole;
  /** The forward direction's activations (every direction's unless reverseActivations is set). */
  gateActivation: ResolvedActivation;
  cellActivation: ResolvedActivation;
  hiddenActivation: ResolvedActivation;
  /** A bidirectional LSTM's reverse-direction activations where any differs from the forward one's; else null. */
  reverseActivations: ActivationSet | null;
  /** 0 means no clipping. */
  clip: number;
  coupledInputForget: boolean;
  seed: number | undefined;
  /** 0 means none. */
  dropout: number;
  backend: BackendChoice;
  threads: number;
}

const OPTION_KEYS = new Set<string>([
  'inputSize', 'hiddenSize', 'numLayers', 'bias', 'batchFirst', 'bidirectional', 'direction',
  'projSize', 'peephole', 'gateActivation', 'cellActivation', 'hiddenActivation', 'clip',
  'coupledInputForget', 'seed', 'dropout', 'backend', 'threads',
]);

/** Upper bound on any single size option; the weight-count check below is the real limit. */
const MAX_SIZE = 1 << 24;

function optErr(msg: string): LstmError {
  return new LstmError('LSTM_OPTION', msg);
}

export function checkSize(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_SIZE) {
    throw optErr(`${name}: expected an integer in [${min}, ${MAX_SIZE}], got ${describe(value)}`);
  }
  return value;
}

export function checkBool(value: unknown, name: string, dflt: boolean): boolean {
  if (value === undefined) return dflt;
  if (typeof value !== 'boolean') throw optErr(`${name}: expected a boolean, got ${describe(value)}`);
  return value;
}

export function checkEnum<T extends string>(value: unknown, name: string, allowed: readonly T[], dflt: T): T {
  if (value === undefined) return dflt;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw optErr(`${name}: expected one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describe(value)}`);
  }
  return value as T;
}

export function resolveActivation(value: unknown, name: string, dflt: ActivationName): ResolvedActivation {
  if (value === undefined) value = dflt;
  let actName: unknown = value;
  let alpha: unknown;
  let beta: unknown;
  if (value !== null && typeof value === 'object') {
    const v = value as { name?: unknown; alpha?: unknown; beta?: unknown };
    actName = v.name;
    alpha = v.alpha;
    beta = v.beta;
  }
  if (typeof actName !== 'string' || !Object.prototype.hasOwnProperty.call(ACTIVATIONS, actName)) {
    throw optErr(`${name}: expected one of ${Object.keys(ACTIVATIONS).join(', ')} (or { name, alpha, beta }), got ${describe(actName)}`);
  }
  const spec = ACTIVATIONS[actName as ActivationName];
  const num = (v: unknown, which: string, d: number): number => {
    if (v === undefined) return d;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw optErr(`${name}.${which}: expected a finite number, got ${describe(v)}`);
    return v;
  };
  return { name: actName as ActivationName, kind: spec.kind, alpha: num(alpha, 'alpha', spec.alpha), beta: num(beta, 'beta', spec.beta) };
}

/** An activation option: one for every direction, or [forward, reverse] for a bidirectional LSTM. */
function resolveActivationPair(value: unknown, name: string, dflt: ActivationName, numDirections: number): [ResolvedActivation, ResolvedActivation] {
  if (Array.isArray(value)) {
    if (value.length !== 2) throw optErr(`${name}: expected one activation or a pair [forward, reverse], got an array of ${value.length}`);
    if (numDirections !== 2) throw optErr(`${name}: a pair [forward, reverse] is for a bidirectional LSTM`);
    return [resolveActivation(value[0], `${name}[0]`, dflt), resolveActivation(value[1], `${name}[1]`, dflt)];
  }
  const one = resolveActivation(value, name, dflt);
  return [one, one];
}

const MAX_THREADS = 1024;

function checkThreads(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_THREADS) {
    throw optErr(`${name}: expected an integer in [1, ${MAX_THREADS}], got ${describe(value)}`);
  }
  return value;
}

/** LSTM_THREADS, else every core. */
export function defaultThreads(): number {
  const env = hostEnv('LSTM_THREADS');
  if (env !== undefined) {
    const n = Number(env);
    return checkThreads(Number.isFinite(n) ? n : env, 'LSTM_THREADS');
  }
  return cpuCount();
}

export function resolveConfig(options: unknown): LSTMConfig {
  if (options === null || typeof options !== 'object') {
    throw optErr(`options: expected an object with inputSize and hiddenSize, got ${describe(options)}`);
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!OPTION_KEYS.has(key)) throw optErr(`options.${key}: unknown option (known: ${[...OPTION_KEYS].join(', ')})`);
  }
  const inputSize = checkSize(o.inputSize, 'inputSize', 1);
  const hiddenSize = checkSize(o.hiddenSize, 'hiddenSize', 1);
  const numLayers = o.numLayers === undefined ? 1 : checkSize(o.numLayers, 'numLayers', 1);
  const bias = checkBool(o.bias, 'bias', true);
  const batchFirst = checkBool(o.batchFirst, 'batchFirst', false);

  const bidirectional = checkBool(o.bidirectional, 'bidirectional', false);
  let direction = checkEnum<Direction>(o.direction, 'direction', ['forward', 'reverse', 'bidirectional'], bidirectional ? 'bidirectional' : 'forward');
  if (o.bidirectional !== undefined && o.direction !== undefined && bidirectional !== (direction === 'bidirectional')) {
    throw optErr(`bidirectional: ${String(bidirectional)} contradicts direction: '${direction}'`);
  }
  if (bidirectional) direction = 'bidirectional';
  const numDirections = direction === 'bidirectional' ? 2 : 1;

  const projSize = o.projSize === undefined ? 0 : checkSize(o.projSize, 'projSize', 0);
  if (projSize >= hiddenSize) {
    throw optErr(`projSize: must be smaller than hiddenSize (${hiddenSize}), got ${projSize}`);
  }
  const outSize = projSize || hiddenSize;
  const peephole = checkEnum<Peephole>(o.peephole, 'peephole', ['none', 'diagonal', 'full'], 'none');

  let clip = 0;
  if (o.clip !== undefined && o.clip !== null) {
    if (typeof o.clip !== 'number' || !(o.clip > 0) || !Number.isFinite(o.clip)) {
      throw optErr(`clip: expected a positive finite number, got ${describe(o.clip)}`);
    }
    clip = o.clip;
  }
  let seed: number | undefined;
  if (o.seed !== undefined) {
    if (typeof o.seed !== 'number' || !Number.isSafeInteger(o.seed) || o.seed < 0) {
      throw optErr(`seed: expected a non-negative integer, got ${describe(o.seed)}`);
    }
    seed = o.seed;
  }
  let dropout = 0;
  if (o.dropout !== undefined && o.dropout !== null) {
    if (typeof o.dropout !== 'number' || !(o.dropout >= 0 && o.dropout < 1)) {
      throw optErr(`dropout: expected a probability in [0, 1), got ${describe(o.dropout)}`);
    }
    dropout = o.dropout;
  }

  const [gateF, gateR] = resolveActivationPair(o.gateActivation, 'gateActivation', 'sigmoid', numDirections);
  const [cellF, cellR] = resolveActivationPair(o.cellActivation, 'cellActivation', 'tanh', numDirections);
  const [hiddenF, hiddenR] = resolveActivationPair(o.hiddenActivation, 'hiddenActivation', 'tanh', numDirections);
  const reverseDiffers = !sameActivation(gateF, gateR) || !sameActivation(cellF, cellR) || !sameActivation(hiddenF, hiddenR);

  const config: LSTMConfig = {
    inputSize,
    hiddenSize,
    numLayers,
    bias,
    batchFirst,
    direction,
    numDirections,
    projSize,
    outSize,
    peephole,
    gateActivation: gateF,
    cellActivation: cellF,
    hiddenActivation: hiddenF,
    reverseActivations: reverseDiffers ? { gate: gateR, cell: cellR, hidden: hiddenR } : null,
    clip,
    coupledInputForget: checkBool(o.coupledInputForget, 'coupledInputForget', false),
    seed,
    dropout,
    backend: checkEnum<BackendChoice>(o.backend, 'backend', ['auto', 'native', 'wasm', 'js'], 'auto'),
    threads: o.threads === undefined ? defaultThreads() : checkThreads(o.threads, 'threads'),
  };
  // Every weight matrix must stay addressable with 32-bit element counts in both engines.
  const widest = Math.max(inputSize, numDirections * outSize) + outSize + hiddenSize;
  if (4 * hiddenSize * widest > 2 ** 31 - 1) {
    throw optErr(`inputSize/hiddenSize: ${inputSize}/${hiddenSize} make a weight matrix of more than 2^31 elements`);
  }
  return config;
}

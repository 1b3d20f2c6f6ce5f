import { selectEngine } from './backend.js';
import {
  resolveConfig,
  type BackendChoice,
  type Direction,
  type LSTMConfig,
  type LSTMOptions,
} from './config.js';
import { PEEPHOLE_KIND, type Engine, type EngineLayer, type LayerDesc, type StackResult, type StackRun } from './engine.js';
import { LstmError, checkKnownKeys, describe, optionsArg } from './errors.js';
import { fromKeras as kerasToLstm, fromKerasFile as kerasFileToLstm, fromTfjs as tfjsToLstm, lstmFromSafetensors, lstmFromStateDict, lstmToSafetensors, type KerasLayerWeights, type KerasFileOptions, type KerasOptions, type TfjsOptions } from './interop.js';
import { activationsFromOnnx, onnxToStateDict } from './onnx-layout.js';
import { backwardTrain, dropoutMasks, forwardTrain, TapePool } from './train/bptt.js';
import { Rng, randomSeed } from './rng.js';
import { groupParams, initParams, layerInputSize, paramSpecs, type ParamSpec } from './params.js';
import { MAX_ELEMENTS, checkTensor, sameShape, shapeSize, shapeStr, sharesMemory, swapLeadingAxes, type Tensor } from './tensor.js';

export type LengthsLike = ArrayLike<number> | ArrayLike<bigint> | { data: ArrayLike<number> | ArrayLike<bigint> };

export interface ForwardOptions {
  /** Initial hidden state [L*D, B, Hout] ([L*D, Hout] for unbatched input); zeros by default. */
  h0?: Tensor;
  /** Initial cell state [L*D, B, H] ([L*D, H] for unbatched input); zeros by default. */
  c0?: Tensor;
  /** Valid length of each sequence (1..T), packed-sequence semantics. */
  lengths?: LengthsLike;
}

/**
 * Arrays forward() writes its results into instead of new ones: each optional, each with
 * exactly the shape forward returns for it. No engine allocates an output then, and the
 * result holds these same tensors. An out array may share memory with x, h0 or c0 (a
 * chunked stream's state updated in place: out.hn = h0, out.cn = c0); the results are
 * then computed aside and copied in. Out arrays may not share memory with each other.
 */
export interface ForwardOutputs {
  output?: Tensor;
  hn?: Tensor;
  cn?: Tensor;
}

/** forward() and forwardAsync() options: ForwardOptions and where to write the results. */
export interface ForwardIntoOptions extends ForwardOptions {
  /** Write the results into these arrays (forwardAsync: when its promise resolves). */
  out?: ForwardOutputs;
}

export interface ForwardResult {
  output: Tensor;
  hn: Tensor;
  cn: Tensor;
}

export interface Gradient {
  /** Gradient of the input, shaped as x. */
  input: Tensor;
  h0: Tensor;
  c0: Tensor;
  /** Parameter gradients, named as stateDict(). */
  params: Record<string, Tensor>;
}

/** forwardTrain's options: forward's, and whether to apply the model's dropout. */
export interface TrainOptions extends ForwardOptions {
  /** Apply config.dropout between layers (default true); false runs as forward would (evaluation). */
  dropout?: boolean;
}

export interface TrainResult extends ForwardResult {
  /** Gradients of sum(output*dOutput) + sum(hn*dHn) + sum(cn*dCn); absent upstream gradients are zero. */
  backward(upstream?: { output?: Tensor; hn?: Tensor; cn?: Tensor }): Gradient;
}

export interface LoadStateDictOptions {
  /** Only names starting with this prefix are read, with the prefix removed (e.g. 'lstm.'). */
  prefix?: string;
  /** Reject missing and unknown names (default true). Wrong shapes are always rejected. */
  strict?: boolean;
}

/** One ONNX LSTM node's tensors and attributes (see LSTM.fromOnnx). */
export interface OnnxLstmSpec {
  W: Tensor;
  R: Tensor;
  B?: Tensor;
  P?: Tensor;
  hiddenSize: number;
  direction?: Direction;
  clip?: number;
  inputForget?: boolean | number;
  activations?: string[];
  activationAlpha?: number[];
  activationBeta?: number[];
  backend?: BackendChoice;
}

/** forwardTrain and training take no out tensors (their outputs belong to the tape). */
export function rejectOut(options: unknown, what: string): void {
  const out = options !== null && typeof options === 'object' ? (options as { out?: unknown }).out : undefined;
  if (out !== undefined && out !== null) throw new LstmError('LSTM_OPTION', `${what}: out is not supported (forward and forwardAsync take it)`);
}

/** A checked out tensor: the caller's, and the array validated when the call was made. */
interface OutTarget {
  tensor: Tensor;
  data: Float32Array;
}
type OutTargets = { output?: OutTarget; hn?: OutTarget; cn?: OutTarget };

/** Zero states up to this many floats (64 KiB) are kept for the next call. */
const ZERO_STATE_KEEP_FLOATS = 16384;

interface NormalizedInput {
  x: Float32Array; // time-major [T, B, I]
  source: Float32Array; // the caller's x data (x itself unless batch-first)
  T: number;
  B: number;
  unbatched: boolean;
  h0: Float32Array;
  c0: Float32Array;
  lengths: Int32Array | null;
}

/**
 * A stack of LSTM layers with PyTorch nn.LSTM semantics (plus ONNX's options),
 * running on the native engine when it loads and on pure TypeScript otherwise.
 */
export class LSTM {
  /** The resolved configuration (defaults filled in). */
  readonly config: Readonly<LSTMConfig>;
  private readonly engine: Engine;
  private readonly specs: ParamSpec[];
  private readonly params: Map<string, Float32Array>;
  private layers: EngineLayer[] = [];
  private disposed = false;
  private stale = false;
  /** The last finished training tape's buffers, for the next forwardTrain. */
  private readonly tapes = new TapePool();
  /** Draws the dropout masks of forwardTrain (seeded from `seed` when given); created on first use. */
  private dropoutRng: Rng | undefined;
  /** Zero initial states kept between calls (see zeros()). */
  private readonly zeroStates: { h0?: Float32Array; c0?: Float32Array } = {};

  constructor(options: LSTMOptions) {
    this.config = Object.freeze(resolveConfig(options));
    this.engine = selectEngine(this.config.backend);
    this.specs = paramSpecs(this.config);
    this.params = initParams(this.config, this.specs);
    this.build();
  }

  /** The engine actually in use. */
  get backend(): 'native' | 'wasm' | 'js' {
    return this.engine.name;
  }

  get inputSize(): number {
    return this.config.inputSize;
  }
  get hiddenSize(): number {
    return this.config.hiddenSize;
  }
  get numLayers(): number {
    return this.config.numLayers;
  }

  private layerDesc(layer: number): LayerDesc {
    const c = this.config;
    return {
      inputSize: layerInputSize(c, layer),
      hiddenSize: c.hiddenSize,
      projSize: c.projSize,
      numDirections: c.numDirections,
      reverse: c.direction === 'reverse',
      bias: c.bias,
      peephole: PEEPHOLE_KIND[c.peephole],
      gate: c.gateActivation,
      cell: c.cellActivation,
      hidden: c.hiddenActivation,
      reverseActs: c.reverseActivations,
      clip: c.clip,
      coupled: c.coupledInputForget,
    };
  }

  /** (Re)create the engine's layers from the current parameters; engines pack their own copies. */
  private build(): void {
    const grouped = groupParams(this.config, this.specs, this.params);
    const layers: EngineLayer[] = [];
    try {
      for (let l = 0; l < this.config.numLayers; l++) layers.push(this.engine.createLayer(this.layerDesc(l), grouped[l]));
    } catch (err) {
      for (const layer of layers) layer.dispose();
      throw err;
    }
    for (const layer of this.layers) layer.dispose();
    this.layers = layers;
    this.stale = false;
  }

  private checkAlive(what: string): void {
    if (this.disposed) throw new LstmError('LSTM_DISPOSED', `${what}: this LSTM was disposed`);
  }

  /** Load parameters by PyTorch name; validates everything before changing anything. */
  loadStateDict(tensors: Record<string, Tensor>, opts?: LoadStateDictOptions): this {
    this.checkAlive('loadStateDict');
    const options = optionsArg(opts, 'loadStateDict options', ['prefix', 'strict']);
    if (tensors === null || typeof tensors !== 'object') {
      throw new LstmError('LSTM_WEIGHTS', `tensors: expected an object mapping names to tensors, got ${describe(tensors)}`);
    }
    const prefix = options.prefix ?? '';
    if (typeof prefix !== 'string') throw new LstmError('LSTM_OPTION', `prefix: expected a string, got ${describe(prefix)}`);
    const strict = options.strict ?? true;
    if (typeof strict !== 'boolean') throw new LstmError('LSTM_OPTION', `strict: expected a boolean, got ${describe(strict)}`);
    const known = new Map(this.specs.map((s) => [s.name, s]));
    // A one-layer, one-direction model also takes nn.LSTMCell's names (weight_ih, ... without _l0).
    const cell = this.config.numLayers === 1 && this.config.numDirections === 1;
    const CELL_NAMES = ['weight_ih', 'weight_hh', 'bias_ih', 'bias_hh'];
    const updates = new Map<string, Float32Array>();
    const unknown: string[] = [];
    for (const key of Object.keys(tensors)) {
      if (!key.startsWith(prefix)) continue;
      const name = key.slice(prefix.length);
      const spec = known.get(name) ?? (cell && CELL_NAMES.includes(name) ? known.get(`${name}_l0`) : undefined);
      if (!spec) {
        unknown.push(key);
        continue;
      }
      const t = checkTensor(tensors[key], `tensors['${key}']`);
      if (!sameShape(t.shape, spec.shape)) {
        throw new LstmError('LSTM_WEIGHTS', `tensors['${key}']: expected shape ${shapeStr(spec.shape)}, got ${shapeStr(t.shape)}`);
      }
      if (updates.has(spec.name)) throw new LstmError('LSTM_WEIGHTS', `tensors['${key}']: ${prefix}${spec.name} is given twice (under its nn.LSTM and its nn.LSTMCell name)`);
      updates.set(spec.name, t.data);
    }
    if (strict) {
      if (unknown.length > 0) {
        throw new LstmError('LSTM_WEIGHTS', `unexpected tensors for this configuration: ${unknown.slice(0, 8).join(', ')}${unknown.length > 8 ? ', …' : ''}`);
      }
      const missing = this.specs.filter((s) => !updates.has(s.name)).map((s) => prefix + s.name);
      if (missing.length > 0) {
        throw new LstmError('LSTM_WEIGHTS', `missing tensors: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', …' : ''}`);
      }
    }
    for (const [name, data] of updates) this.params.get(name)!.set(data);
    this.build();
    return this;
  }

  /**
   * The live parameters with gradient buffers, for optimizers (names get `prefix`).
   * After an optimizer updates them the engine repacks its weights before the next call.
   */
  parameters(prefix = ''): import('./train/optim.js').Parameter[] {
    this.checkAlive('parameters');
    return this.specs.map((s) => ({
      name: prefix + s.name,
      value: this.params.get(s.name)!,
      grad: new Float32Array(this.params.get(s.name)!.length),
      shape: s.shape.slice(),
      onUpdate: () => {
        this.stale = true;
      },
    }));
  }

  /**
   * Repack the engine's weights in place if an optimizer changed the parameters. Only the
   * calls that run the engine's layers need it (forwardTrain reads the parameters directly).
   */
  private refresh(): void {
    if (this.stale) {
      this.stale = false;
      const grouped = groupParams(this.config, this.specs, this.params);
      this.layers.forEach((layer, l) => layer.update(grouped[l]));
    }
  }

  /** Copies of every parameter under its PyTorch name. */
  stateDict(): Record<string, Tensor> {
    this.checkAlive('stateDict');
    const out: Record<string, Tensor> = {};
    for (const s of this.specs) out[s.name] = { data: this.params.get(s.name)!.slice(), shape: s.shape.slice() };
    return out;
  }

  /**
   * Run the whole sequence: x [T, B, I] ([B, T, I] batch-first, [T, I] unbatched) to
   * { output, hn, cn } (README, Shapes). options.out writes them into the caller's tensors
   * (ForwardOutputs). Inputs are never mutated, unless an out tensor shares their memory.
   */
  forward(x: Tensor, options: ForwardIntoOptions = {}): ForwardResult {
    this.checkAlive('forward');
    this.refresh();
    const input = this.normalize(x, options);
    const targets = this.outTargets(input, options.out);
    // The engines write into the caller's arrays where they are in the engines' layout
    // and share no memory with an input; anything else is computed aside and copied.
    const direct = (t: OutTarget | undefined, timeMajor: boolean): Float32Array | undefined =>
      t !== undefined && timeMajor && !sharesMemory(t.data, [input.source, input.x, input.h0, input.c0]) ? t.data : undefined;
    const yDirect = direct(targets.output, !this.config.batchFirst || input.unbatched);
    const out: StackResult = {
      y: yDirect ?? new Float32Array(input.T * input.B * this.config.numDirections * this.config.outSize),
      hn: direct(targets.hn, true) ?? new Float32Array(input.h0.length),
      cn: direct(targets.cn, true) ?? new Float32Array(input.c0.length),
    };
    this.engine.forward(this.layers, this.stackRun(input), out);
    return this.placeResult(input, out, targets);
  }

  /**
   * forward off the main thread (native: a libuv worker, or for under 0.5 MFLOP of work
   * the calling thread, which costs less than the handoff; js: the next event-loop turn).
   * Inputs are copied when the call is made; concurrent calls on one model are safe and
   * dispose() while a call is in flight lets that call finish.
   */
  async forwardAsync(x: Tensor, options: ForwardIntoOptions = {}): Promise<ForwardResult> {
    this.checkAlive('forwardAsync');
    this.refresh();
    const input = this.normalize(x, options);
    const targets = this.outTargets(input, options.out);
    const out = await this.engine.forwardAsync(this.layers, this.stackRun(input));
    return this.placeResult(input, out, targets);
  }

  /**
   * forward that records what backpropagation through time needs; call backward() on the
   * result with the upstream gradients. The weights are captured now, so later updates
   * do not change this run's gradients.
   */
  forwardTrain(x: Tensor, options: TrainOptions = {}): TrainResult {
    this.checkAlive('forwardTrain');
    const input = this.normalize(x, options, ['h0', 'c0', 'lengths', 'dropout', 'out']);
    rejectOut(options, 'forwardTrain');
    const drop = options.dropout ?? true;
    if (typeof drop !== 'boolean') throw new LstmError('LSTM_OPTION', `dropout: expected a boolean (apply the model's dropout of ${this.config.dropout}), got ${describe(drop)}`);
    const cfg = this.config;
    const params = new Map([...this.params].map(([k, v]) => [k, v.slice()]));
    const gemm = this.engine.gemm(cfg.threads);
    const tapes = this.tapes;
    // Drawn once per run: recording the forward again (below) uses the same masks.
    const masks = drop ? dropoutMasks(cfg, input.T * input.B, () => this.dropoutStream()) : null;
    const record = (): ReturnType<typeof forwardTrain> =>
      forwardTrain(cfg, params, gemm, input.x, input.T, input.B, input.h0, input.c0, input.lengths, tapes, masks);
    const run = record();
    let tape = run.tape;
    const result = this.placeResult(input, { y: run.y, hn: run.hn, cn: run.cn });
    const specs = this.specs;
    const backward = (upstream: { output?: Tensor; hn?: Tensor; cn?: Tensor } = {}): Gradient => {
      const like = (g: Tensor | undefined, ref: Tensor, name: string): Float32Array => {
        if (g === undefined || g === null) return new Float32Array(ref.data.length);
        const t = checkTensor(g, name);
        if (!sameShape(t.shape, ref.shape)) throw new LstmError('LSTM_SHAPE', `${name}: expected ${shapeStr(ref.shape)} (as forward returned it), got ${shapeStr(t.shape)}`);
        return t.data;
      };
      const { T, B } = input;
      const F = cfg.numDirections * cfg.outSize;
      let dy = like(upstream.output, result.output, 'output');
      if (cfg.batchFirst && !input.unbatched) dy = swapLeadingAxes(dy, B, T, F);
      const dhn = like(upstream.hn, result.hn, 'hn');
      const dcn = like(upstream.cn, result.cn, 'cn');
      // After a backward the tape's buffers go back to the model's pool. If a later
      // forwardTrain has reused them, record this run's forward again (the inputs and
      // weights it captured give the same tape).
      if (!tapes.reclaim(tape)) tape = record().tape;
      const g = backwardTrain(cfg, params, gemm, tape, dy, dhn, dcn, masks);
      tapes.giveBack(tape);
      const I = cfg.inputSize;
      const dx = cfg.batchFirst && !input.unbatched ? swapLeadingAxes(g.input, T, B, I) : g.input;
      const out: Record<string, Tensor> = {};
      for (const s of specs) out[s.name] = { data: g.params.get(s.name)!, shape: s.shape.slice() };
      return {
        input: { data: dx, shape: x.shape.slice() },
        h0: { data: g.h0, shape: result.hn.shape.slice() },
        c0: { data: g.c0, shape: result.cn.shape.slice() },
        params: out,
      };
    };
    return { ...result, backward };
  }

  private dropoutStream(): Rng {
    // Its own stream, apart from the weights' initialisation (which also starts from seed).
    this.dropoutRng ??= new Rng(this.config.seed === undefined ? randomSeed() : this.config.seed + 0x9e3779b9);
    return this.dropoutRng;
  }

  /**
   * The dropout generator's state (four 32-bit words), so that a checkpoint resumes, and a
   * model trained on a worker thread continues, with the same masks. Used by SequenceModel.
   * @internal
   */
  get dropoutState(): number[] {
    return this.dropoutStream().getState();
  }

  set dropoutState(state: number[]) {
    try {
      this.dropoutStream().setState(state);
    } catch (err) {
      throw new LstmError('LSTM_FORMAT', `dropout generator: ${(err as Error).message}`);
    }
  }

  /** Zero states for streaming with step(): h [L, batch, Hout], c [L, batch, H]. */
  initialState(batch = 1): { h: Tensor; c: Tensor } {
    this.checkAlive('initialState');
    this.checkSteppable();
    if (typeof batch !== 'number' || !Number.isInteger(batch) || batch < 1 || batch > MAX_ELEMENTS) {
      throw new LstmError('LSTM_OPTION', `initialState: batch must be a positive integer, got ${describe(batch)}`);
    }
    const L = this.config.numLayers;
    const h = [L, batch, this.config.outSize];
    const c = [L, batch, this.config.hiddenSize];
    shapeSize(h, 'initialState h');
    shapeSize(c, 'initialState c');
    return { h: { data: new Float32Array(L * batch * this.config.outSize), shape: h }, c: { data: new Float32Array(L * batch * this.config.hiddenSize), shape: c } };
  }

  /**
   * Zero the state of some rows (all by default) in place, in every layer: a streaming
   * server whose batch row b takes a new stream starts it from zeros, as initialState
   * would, while the other rows carry on. state as step takes it ([L, B, *] or unbatched
   * [L, *]); rows are batch indices. Returns state.
   */
  resetState(state: { h: Tensor; c: Tensor }, rows?: ArrayLike<number>): { h: Tensor; c: Tensor } {
    this.checkAlive('resetState');
    this.checkSteppable();
    const c = this.config;
    const L = c.numLayers;
    const { h, c: cs, B } = this.checkState(state);
    let which: number[];
    if (rows === undefined || rows === null) {
      which = Array.from({ length: B }, (_, b) => b);
    } else {
      if (typeof rows !== 'object' || typeof (rows as ArrayLike<number>).length !== 'number' || rows.length > B) {
        throw new LstmError('LSTM_SHAPE', `rows: expected batch indices in 0..${B - 1}, got ${describe(rows)}`);
      }
      which = [];
      for (let i = 0; i < rows.length; i++) {
        const b = rows[i];
        if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b >= B) throw new LstmError('LSTM_SHAPE', `rows[${i}]: expected a batch index in 0..${B - 1}, got ${describe(b)}`);
        which.push(b);
      }
    }
    for (let l = 0; l < L; l++) {
      for (const b of which) {
        h.data.fill(0, (l * B + b) * c.outSize, (l * B + b + 1) * c.outSize);
        cs.data.fill(0, (l * B + b) * c.hiddenSize, (l * B + b + 1) * c.hiddenSize);
      }
    }
    return state;
  }

  /**
   * Advance one time step: x [B, I] (or [I]); state { h [L, B, Hout], c [L, B, H] } is
   * updated in place; returns the top layer's output [B, Hout] (or [Hout]), written into
   * `out` when given. Stepping through a sequence equals one forward of it.
   */
  step(x: Tensor, state: { h: Tensor; c: Tensor }, out?: Tensor): Tensor {
    this.checkAlive('step');
    this.refresh();
    this.checkSteppable();
    const c = this.config;
    const xt = checkTensor(x, 'x');
    const single = xt.shape.length === 1;
    if ((xt.shape.length !== 1 && xt.shape.length !== 2) || xt.shape[xt.shape.length - 1] !== c.inputSize || (!single && xt.shape[0] < 1)) {
      throw new LstmError('LSTM_SHAPE', `x: expected [B, I] or [I] with I = ${c.inputSize}, got ${shapeStr(xt.shape)}`);
    }
    const B = single ? 1 : xt.shape[0];
    const { h, c: cs } = this.checkState(state, { B, single });
    let result: Tensor;
    let data: Float32Array;
    if (out === undefined || out === null) {
      data = new Float32Array(B * c.outSize);
      result = { data, shape: single ? [c.outSize] : [B, c.outSize] };
    } else {
      const o = checkTensor(out, 'out');
      if (o.data.length !== B * c.outSize) {
        throw new LstmError('LSTM_SHAPE', `out: expected ${shapeStr(single ? [c.outSize] : [B, c.outSize])}, got ${shapeStr(o.shape)}`);
      }
      data = o.data;
      result = out;
    }
    // The engine refuses arrays that share memory (checkStepMemory).
    this.engine.step(this.layers, xt.data, B, h.data, cs.data, data, c.threads);
    return result;
  }

  /**
   * A streaming state's h [L, B, Hout] and c [L, B, H] ([L, Hout] and [L, H] for one
   * unbatched stream): B and single from the step's input, else from h itself.
   */
  private checkState(state: { h: Tensor; c: Tensor }, from?: { B: number; single: boolean }): { h: Tensor; c: Tensor; B: number } {
    if (state === null || typeof state !== 'object') throw new LstmError('LSTM_SHAPE', `state: expected { h, c } from initialState(), got ${describe(state)}`);
    const c = this.config;
    const L = c.numLayers;
    const h = checkTensor(state.h, 'state.h');
    const cs = checkTensor(state.c, 'state.c');
    const single = from ? from.single : h.shape.length === 2;
    const B = from ? from.B : single ? 1 : (h.shape[1] ?? 0);
    if (!stateShape(h.shape, L, B, c.outSize, single) || B < 1) {
      const want = from ? shapeStr(single ? [L, c.outSize] : [L, B, c.outSize]) : `[${L}, B, ${c.outSize}] (or [${L}, ${c.outSize}])`;
      throw new LstmError('LSTM_SHAPE', `state.h: expected ${want}, got ${shapeStr(h.shape)}`);
    }
    if (!stateShape(cs.shape, L, B, c.hiddenSize, single)) {
      throw new LstmError('LSTM_SHAPE', `state.c: expected ${shapeStr(single ? [L, c.hiddenSize] : [L, B, c.hiddenSize])}, got ${shapeStr(cs.shape)}`);
    }
    return { h, c: cs, B };
  }

  private checkSteppable(): void {
    if (this.config.numDirections !== 1) {
      throw new LstmError('LSTM_OPTION', 'step: a bidirectional LSTM needs the whole sequence; use forward()');
    }
  }

  private stackRun(input: NormalizedInput): StackRun {
    return { x: input.x, T: input.T, B: input.B, h0: input.h0, c0: input.c0, lengths: input.lengths, threads: this.config.threads };
  }

  /**
   * The checked out tensors of a forward (see ForwardOutputs): each given one must have
   * exactly the shape the result has, and none may share memory with another.
   */
  private outTargets(input: NormalizedInput, outArg: unknown): OutTargets {
    if (outArg === undefined || outArg === null) return {};
    if (typeof outArg !== 'object' || ArrayBuffer.isView(outArg)) {
      throw new LstmError('LSTM_OPTION', `out: expected an object { output?, hn?, cn? } of tensors, got ${describe(outArg)}`);
    }
    const want = this.resultShapes(input);
    const given = outArg as Record<string, unknown>;
    const targets: OutTargets = {};
    for (const name of ['output', 'hn', 'cn'] as const) {
      const v = given[name];
      if (v === undefined || v === null) continue;
      const t = checkTensor(v, `out.${name}`);
      if (!sameShape(t.shape, want[name])) {
        throw new LstmError('LSTM_SHAPE', `out.${name}: expected ${shapeStr(want[name])} (the shape forward returns), got ${shapeStr(t.shape)}`);
      }
      for (const other of ['output', 'hn'] as const) {
        const o = targets[other];
        if (o !== undefined && sharesMemory(t.data, [o.data])) {
          throw new LstmError('LSTM_SHAPE', `out.${name}: must not share memory with out.${other}`);
        }
      }
      targets[name] = { tensor: v as Tensor, data: t.data };
    }
    return targets;
  }

  /** The shapes of a forward's results, in the caller's layout. */
  private resultShapes(input: NormalizedInput): { output: number[]; hn: number[]; cn: number[] } {
    const c = this.config;
    const { T, B } = input;
    const F = c.numDirections * c.outSize;
    const LD = c.numLayers * c.numDirections;
    if (input.unbatched) return { output: [T, F], hn: [LD, c.outSize], cn: [LD, c.hiddenSize] };
    return { output: c.batchFirst ? [B, T, F] : [T, B, F], hn: [LD, B, c.outSize], cn: [LD, B, c.hiddenSize] };
  }

  /**
   * The engine's outputs (time-major) as the result, in the caller's layout: in the
   * caller's out tensors where given (copied there unless the engine wrote them in place).
   */
  private placeResult(input: NormalizedInput, out: StackResult, targets: OutTargets = {}): ForwardResult {
    const shapes = this.resultShapes(input);
    // forwardAsync places its results a turn or more after the call: by then the caller
    // may have detached an out array, or put another in its tensor.
    const check = (t: OutTarget, name: string, n: number): void => {
      if (t.tensor.data !== t.data || t.data.length !== n) {
        throw new LstmError('LSTM_SHAPE', `out.${name}: its array was detached or replaced before the results were placed`);
      }
    };
    const place = (t: OutTarget | undefined, name: string, src: Float32Array, shape: number[]): Tensor => {
      if (t === undefined) return { data: src, shape };
      if (t.data !== src) {
        check(t, name, src.length);
        t.data.set(src);
      }
      return t.tensor;
    };
    let output: Tensor;
    if (this.config.batchFirst && !input.unbatched) {
      const t = targets.output;
      if (t !== undefined) check(t, 'output', out.y.length);
      const data = swapLeadingAxes(out.y, input.T, input.B, this.config.numDirections * this.config.outSize, t?.data);
      output = t !== undefined ? t.tensor : { data, shape: shapes.output };
    } else {
      output = place(targets.output, 'output', out.y, shapes.output);
    }
    return { output, hn: place(targets.hn, 'hn', out.hn, shapes.hn), cn: place(targets.cn, 'cn', out.cn, shapes.cn) };
  }

  /**
   * A zero initial state of n floats for h0 or c0, kept for the next call of the same size.
   * No engine writes into h0 or c0 (inputs are never mutated), so one array serves every
   * call that omits them; a small model's forward then allocates only its outputs.
   */
  private zeros(name: 'h0' | 'c0', n: number): Float32Array {
    const kept = this.zeroStates[name];
    if (kept !== undefined && kept.length === n) return kept;
    const z = new Float32Array(n);
    if (n <= ZERO_STATE_KEEP_FLOATS) this.zeroStates[name] = z;
    return z;
  }

  /** Check and bring x, h0, c0 and lengths to the time-major layout the engines take. */
  private normalize(xArg: Tensor, options: ForwardOptions, known: readonly string[] = ['h0', 'c0', 'lengths', 'out']): NormalizedInput {
    if (options === null || typeof options !== 'object') {
      throw new LstmError('LSTM_OPTION', `options: expected an object { h0?, c0?, lengths?, out? }, got ${describe(options)}`);
    }
    // a misspelt h0 would otherwise run silently from zeros
    checkKnownKeys(options, 'options', known);
    const c = this.config;
    const x = checkTensor(xArg, 'x');
    const I = c.inputSize;
    const layout = c.batchFirst ? '[B, T, I]' : '[T, B, I]';
    if ((x.shape.length !== 3 && x.shape.length !== 2) || x.shape[x.shape.length - 1] !== I) {
      throw new LstmError('LSTM_SHAPE', `x: expected ${layout} or unbatched [T, I] with I = ${I}, got ${shapeStr(x.shape)}`);
    }
    const unbatched = x.shape.length === 2;
    let T: number;
    let B: number;
    let data = x.data;
    if (unbatched) {
      T = x.shape[0];
      B = 1;
    } else if (c.batchFirst) {
      B = x.shape[0];
      T = x.shape[1];
      data = swapLeadingAxes(x.data, B, T, I);
    } else {
      T = x.shape[0];
      B = x.shape[1];
    }
    if (T < 1 || B < 1) throw new LstmError('LSTM_SHAPE', `x: sequence length and batch must be at least 1, got ${shapeStr(x.shape)}`);
    // Every buffer of the run (outputs, the widest layer's activations) must stay addressable.
    const widest = Math.max(c.inputSize, c.numDirections * c.outSize, 64 * Math.ceil(c.hiddenSize / 16));
    shapeSize([T, B, widest], 'x (with this model, the output and activation buffers)');
    const LD = c.numLayers * c.numDirections;
    const state = (v: Tensor | undefined, name: 'h0' | 'c0', width: number): Float32Array => {
      const want = unbatched ? [LD, width] : [LD, B, width];
      if (v === undefined || v === null) return this.zeros(name, LD * B * width);
      const t = checkTensor(v, name);
      if (!sameShape(t.shape, want)) {
        throw new LstmError('LSTM_SHAPE', `${name}: expected ${shapeStr(want)} (numLayers*directions, ${unbatched ? '' : 'batch, '}${name === 'h0' ? 'Hout' : 'hidden'}), got ${shapeStr(t.shape)}`);
      }
      return t.data;
    };
    return {
      x: data,
      source: x.data,
      T,
      B,
      unbatched,
      h0: state(options.h0, 'h0', c.outSize),
      c0: state(options.c0, 'c0', c.hiddenSize),
      lengths: parseLengths(options.lengths, B, T),
    };
  }

  /** Free the engine's memory (native buffers); later calls throw LSTM_DISPOSED. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const layer of this.layers) layer.dispose();
    this.layers = [];
    this.tapes.clear();
    this.engine.dispose?.();
  }

  /**
   * An LSTM from a safetensors file in one call: the options toSafetensors (or the command
   * line) wrote beside the weights, else inferred from PyTorch's names (a file of
   * save_file(lstm.state_dict()), its names under `prefix`; strict as loadStateDict).
   */
  static fromSafetensors(bytes: Uint8Array, options?: { prefix?: string; strict?: boolean; backend?: BackendChoice }): LSTM {
    return lstmFromSafetensors(bytes, options);
  }

  /**
   * An LSTM from a PyTorch state dict as any loader gives it (loadSafetensors, loadNpz,
   * loadTorch): options inferred from its names under `prefix` (inferOptions), then its
   * weights loaded (loadStateDict).
   */
  static fromStateDict(tensors: Record<string, Tensor>, options?: { prefix?: string; strict?: boolean; backend?: BackendChoice }): LSTM {
    return lstmFromStateDict(tensors, options);
  }

  /**
   * The model as one safetensors file: weights under PyTorch's names (safetensors.torch's
   * load_file gives the state dict), and the options in its metadata, so fromSafetensors
   * makes the same model again (activations, clip, batchFirst and all).
   */
  toSafetensors(metadata?: Record<string, string>): Uint8Array {
    this.checkAlive('toSafetensors');
    return lstmToSafetensors(this, metadata);
  }

  /**
   * An LSTM from Keras / tfjs LSTM layers' weights (see KerasOptions): one layer, a
   * Bidirectional one ({ forward, backward }), or an array of them for a stack.
   */
  static fromKeras(weights: KerasLayerWeights | KerasLayerWeights[], options: KerasOptions): LSTM {
    return kerasToLstm(weights, options);
  }

  /**
   * An LSTM from a TensorFlow.js layers model: its model.json (object or text) and its
   * weight shards concatenated (see TfjsOptions for which layers).
   */
  static fromTfjs(modelJson: unknown, weightData: Uint8Array | ArrayBuffer, options?: TfjsOptions): LSTM {
    return tfjsToLstm(modelJson, weightData, options);
  }

  /**
   * An LSTM from a Keras model file (.keras from Keras 3's model.save, or .h5 from Keras 2's
   * or Keras 3's legacy format): its LSTM or Bidirectional(LSTM) layers, chosen as in fromTfjs.
   */
  static fromKerasFile(bytes: Uint8Array, options?: KerasFileOptions): LSTM {
    return kerasFileToLstm(bytes, options);
  }

  /**
   * Build an LSTM from one ONNX LSTM node: W [D, 4H, I], R [D, 4H, H], B [D, 8H],
   * P [D, 3H] in ONNX gate order (i, o, f, c; peepholes i, o, f) and its attributes.
   */
  static fromOnnx(spec: OnnxLstmSpec): LSTM {
    if (spec === null || typeof spec !== 'object') throw new LstmError('LSTM_OPTION', `fromOnnx: expected an object, got ${describe(spec)}`);
    checkKnownKeys(spec, 'fromOnnx', ['W', 'R', 'B', 'P', 'hiddenSize', 'direction', 'clip', 'inputForget', 'activations', 'activationAlpha', 'activationBeta', 'backend']);
    const direction = spec.direction ?? 'forward';
    if (!['forward', 'reverse', 'bidirectional'].includes(direction)) {
      throw new LstmError('LSTM_OPTION', `direction: expected 'forward', 'reverse' or 'bidirectional', got ${describe(direction)}`);
    }
    const D = direction === 'bidirectional' ? 2 : 1;
    const H = spec.hiddenSize;
    if (typeof H !== 'number' || !Number.isInteger(H) || H < 1) throw new LstmError('LSTM_OPTION', `hiddenSize: expected a positive integer, got ${describe(H)}`);
    const W = checkTensor(spec.W, 'W');
    if (W.shape.length !== 3 || W.shape[0] !== D || W.shape[1] !== 4 * H || W.shape[2] < 1) {
      throw new LstmError('LSTM_WEIGHTS', `W: expected [${D}, ${4 * H}, inputSize], got ${shapeStr(W.shape)}`);
    }
    const I = W.shape[2];
    const R = checkTensor(spec.R, 'R');
    if (!sameShape(R.shape, [D, 4 * H, H])) throw new LstmError('LSTM_WEIGHTS', `R: expected ${shapeStr([D, 4 * H, H])}, got ${shapeStr(R.shape)}`);
    const Bt = spec.B === undefined || spec.B === null ? undefined : checkTensor(spec.B, 'B');
    if (Bt && !sameShape(Bt.shape, [D, 8 * H])) throw new LstmError('LSTM_WEIGHTS', `B: expected ${shapeStr([D, 8 * H])}, got ${shapeStr(Bt.shape)}`);
    const Pt = spec.P === undefined || spec.P === null ? undefined : checkTensor(spec.P, 'P');
    if (Pt && !sameShape(Pt.shape, [D, 3 * H])) throw new LstmError('LSTM_WEIGHTS', `P: expected ${shapeStr([D, 3 * H])}, got ${shapeStr(Pt.shape)}`);
    const [gate, cell, hidden] = activationsFromOnnx(spec.activations, spec.activationAlpha, spec.activationBeta, D);
    const coupled = spec.inputForget === undefined ? false : Boolean(spec.inputForget);
    const lstm = new LSTM({
      inputSize: I,
      hiddenSize: H,
      direction,
      bias: Bt !== undefined,
      peephole: Pt ? 'diagonal' : 'none',
      gateActivation: gate,
      cellActivation: cell,
      hiddenActivation: hidden,
      clip: spec.clip ?? undefined,
      coupledInputForget: coupled,
      backend: spec.backend ?? 'auto',
      seed: 0,
    });
    const dict = onnxToStateDict({ W: W.data, R: R.data, B: Bt?.data, P: Pt?.data }, D, H, I, 0);
    try {
      return lstm.loadStateDict(dict);
    } catch (err) {
      lstm.dispose();
      throw err;
    }
  }
}

/** A step's state shape: [L, B, w], or [L, w] for an unbatched step. */
function stateShape(shape: readonly number[], L: number, B: number, w: number, single: boolean): boolean {
  if (shape.length === 3) return shape[0] === L && shape[1] === B && shape[2] === w;
  return single && shape.length === 2 && shape[0] === L && shape[1] === w;
}

function parseLengths(value: LengthsLike | undefined, B: number, T: number): Int32Array | null {
  if (value === undefined || value === null) return null;
  let src: unknown = value;
  if (typeof src === 'object' && src !== null && !Array.isArray(src) && !ArrayBuffer.isView(src) && 'data' in src) {
    src = (src as { data: unknown }).data;
  }
  if (!Array.isArray(src) && !(ArrayBuffer.isView(src) && !(src instanceof DataView))) {
    throw new LstmError('LSTM_SHAPE', `lengths: expected an array of ${B} integers, got ${describe(src)}`);
  }
  const arr = src as ArrayLike<number | bigint>;
  if (arr.length !== B) throw new LstmError('LSTM_SHAPE', `lengths: expected ${B} entries (one per batch element), got ${arr.length}`);
  const out = new Int32Array(B);
  let full = true;
  for (let b = 0; b < B; b++) {
    const raw = arr[b];
    const v = typeof raw === 'bigint' ? Number(raw) : raw;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > T) {
      throw new LstmError('LSTM_SHAPE', `lengths[${b}]: expected an integer in 1..${T} (the sequence length), got ${describe(raw)}`);
    }
    out[b] = v;
    if (v !== T) full = false;
  }
  return full ? null : out;
}

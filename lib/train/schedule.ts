// Learning-rate schedules with torch.optim.lr_scheduler's exact rules (its chainable forms:
// each step() derives the new rate from the optimizer's current one, as PyTorch does, so
// the rates match it bit for bit). A scheduler changes optimizer.lr; call step() once per
// epoch (SequenceModel.fit does, given `scheduler`, or once per mini-batch with
// schedulerStep: 'batch'), ReduceLROnPlateau with the metric. As in PyTorch, making a
// scheduler takes its first step (epoch 0): LinearLR, ConstantLR, OneCycleLR and
// CosineAnnealingWarmRestarts set the rate they start from then.
import { checkBool, checkEnum } from '../config.js';
import { LstmError, checkKnownKeys, describe } from '../errors.js';
import type { Optimizer } from './optim.js';

function optErr(msg: string): LstmError {
  return new LstmError('LSTM_OPTION', msg);
}

/** An option's number, checked; a default of NaN makes it required. */
function num(v: unknown, name: string, dflt: number, ok: (x: number) => boolean, want: string): number {
  if (v === undefined && !Number.isNaN(dflt)) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw optErr(`${name}: expected ${want}, got ${describe(v)}`);
  return v;
}

const positiveInt = (v: unknown, name: string, dflt?: number): number => {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw optErr(`${name}: expected a positive integer, got ${describe(v)}`);
  return v;
};

/** What a scheduler carries between steps (JSON-safe, for checkpoints and workers). */
export interface SchedulerState {
  lastEpoch: number;
  baseLr: number;
  /** ReduceLROnPlateau only: the best metric so far (null: none yet), and its counters. */
  best?: number | null;
  numBadEpochs?: number;
  cooldownCounter?: number;
  /** CosineAnnealingWarmRestarts only: epochs into the current cycle, and its length. */
  tCur?: number;
  tI?: number;
  /** SequentialLR only: its schedulers' states. */
  children?: SchedulerState[];
}

// Set while schedulerFromConfig remakes a scheduler from a saved state: its first step (and
// anything else construction does to the optimizer) already happened where it was made.
let restoring = false;

export abstract class LRScheduler {
  readonly optimizer: Optimizer;
  /** The rate this schedule starts from (PyTorch's base_lrs: the optimizer's initial_lr). */
  baseLr: number;
  /** Steps taken (PyTorch's last_epoch: 0 after construction). */
  lastEpoch = 0;

  constructor(optimizer: Optimizer, recordsInitialLr = true) {
    if (optimizer === null || typeof optimizer !== 'object' || typeof (optimizer as { lr?: unknown }).lr !== 'number') {
      throw optErr(`scheduler: expected an optimizer (SGD, Adam, AdamW, RMSprop, Adagrad), got ${describe(optimizer)}`);
    }
    this.optimizer = optimizer;
    // As PyTorch: the first scheduler records the optimizer's rate as its initial_lr, and
    // every scheduler starts from that.
    // (ReduceLROnPlateau, which is no such scheduler in PyTorch, leaves it alone.)
    if (recordsInitialLr) optimizer.initialLr ??= optimizer.lr;
    this.baseLr = recordsInitialLr ? (optimizer.initialLr as number) : optimizer.lr;
  }

  /**
   * Construction's first step (PyTorch's _initial_step: last_epoch 0 and get_lr() there),
   * called by each subclass once its options are set. Skipped when remaking a scheduler
   * from a saved state.
   */
  protected start(): void {
    if (restoring) return;
    this.lastEpoch = 0;
    this.optimizer.lr = this.next(this.optimizer.lr);
  }

  /** The optimizer's current learning rate. */
  get lr(): number {
    return this.optimizer.lr;
  }

  /** Advance one epoch and set the optimizer's learning rate. */
  step(_metric?: number): void {
    this.lastEpoch++;
    this.optimizer.lr = this.next(this.optimizer.lr);
  }

  /**
   * Start again at epoch 0, where SequentialLR hands over to this scheduler (PyTorch's
   * step(0): the closed form at epoch 0 where the scheduler has one, else get_lr()).
   */
  restart(): void {
    this.lastEpoch = 0;
    this.optimizer.lr = this.rateAtZero();
  }

  /** The rate at epoch 0 in closed form (from baseLr). */
  protected rateAtZero(): number {
    return this.baseLr;
  }

  /** The rate for lastEpoch (already advanced) from the current one, lr. */
  protected abstract next(lr: number): number;

  /** Name and options, to make the same scheduler again (see schedulerFromConfig). */
  abstract get config(): { name: string } & Record<string, unknown>;

  state(): SchedulerState {
    return { lastEpoch: this.lastEpoch, baseLr: this.baseLr };
  }

  /** Continue from another scheduler's state() (the optimizer's lr is the optimizer's own). */
  loadState(state: SchedulerState): void {
    if (state === null || typeof state !== 'object' || !Number.isSafeInteger(state.lastEpoch) || state.lastEpoch < -1 || typeof state.baseLr !== 'number' || !Number.isFinite(state.baseLr)) {
      throw new LstmError('LSTM_FORMAT', `scheduler state: expected { lastEpoch, baseLr, ... }, got ${describe(state)}`);
    }
    this.lastEpoch = state.lastEpoch;
    this.baseLr = state.baseLr;
  }
}

/** A scheduler's options: unknown names are LSTM_OPTION (a misspelt gamma must not fall back to the default). */
function knownOptions(options: unknown, name: string, known: readonly string[]): void {
  if (options !== null && typeof options === 'object') checkKnownKeys(options, `${name} options`, known);
}

/** torch.optim.lr_scheduler.StepLR: the rate times gamma every stepSize epochs. */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;
  constructor(optimizer: Optimizer, options: { stepSize: number; gamma?: number }) {
    super(optimizer);
    knownOptions(options, 'StepLR', ['stepSize', 'gamma']);
    this.stepSize = positiveInt(options?.stepSize, 'stepSize');
    this.gamma = num(options.gamma, 'gamma', 0.1, (x) => x >= 0, 'a finite number >= 0');
    this.start();
  }
  protected next(lr: number): number {
    return this.lastEpoch === 0 || this.lastEpoch % this.stepSize !== 0 ? lr : lr * this.gamma;
  }
  get config() {
    return { name: 'StepLR', stepSize: this.stepSize, gamma: this.gamma };
  }
}

/** torch.optim.lr_scheduler.MultiStepLR: times gamma at each milestone (twice for one listed twice). */
export class MultiStepLR extends LRScheduler {
  readonly milestones: number[];
  readonly gamma: number;
  constructor(optimizer: Optimizer, options: { milestones: number[]; gamma?: number }) {
    super(optimizer);
    knownOptions(options, 'MultiStepLR', ['milestones', 'gamma']);
    const m = options?.milestones;
    if (!Array.isArray(m) || !m.every((x) => Number.isSafeInteger(x) && x >= 0)) throw optErr(`milestones: expected an array of epoch numbers, got ${describe(m)}`);
    this.milestones = m.slice().sort((a, b) => a - b);
    this.gamma = num(options.gamma, 'gamma', 0.1, (x) => x >= 0, 'a finite number >= 0');
    this.start();
  }
  protected next(lr: number): number {
    const count = this.milestones.filter((x) => x === this.lastEpoch).length;
    return count === 0 ? lr : lr * this.gamma ** count;
  }
  protected override rateAtZero(): number {
    return this.baseLr * this.gamma ** this.milestones.filter((x) => x <= 0).length;
  }
  get config() {
    return { name: 'MultiStepLR', milestones: this.milestones.slice(), gamma: this.gamma };
  }
}

/** torch.optim.lr_scheduler.ExponentialLR: times gamma every epoch. */
export class ExponentialLR extends LRScheduler {
  readonly gamma: number;
  constructor(optimizer: Optimizer, options: { gamma: number }) {
    super(optimizer);
    knownOptions(options, 'ExponentialLR', ['gamma']);
    this.gamma = num(options?.gamma, 'gamma', NaN, (x) => x >= 0, 'a finite number >= 0');
    this.start();
  }
  protected next(lr: number): number {
    return this.lastEpoch === 0 ? lr : lr * this.gamma;
  }
  get config() {
    return { name: 'ExponentialLR', gamma: this.gamma };
  }
}

/**
 * torch.optim.lr_scheduler.CosineAnnealingLR: from the base rate down to etaMin over tMax
 * epochs along a half cosine, then back up (SGDR without restarts), in PyTorch's recursive form.
 */
export class CosineAnnealingLR extends LRScheduler {
  readonly tMax: number;
  readonly etaMin: number;
  constructor(optimizer: Optimizer, options: { tMax: number; etaMin?: number }) {
    super(optimizer);
    knownOptions(options, 'CosineAnnealingLR', ['tMax', 'etaMin']);
    this.tMax = positiveInt(options?.tMax, 'tMax');
    this.etaMin = num(options.etaMin, 'etaMin', 0, (x) => x >= 0, 'a finite number >= 0');
    this.start();
  }
  protected next(lr: number): number {
    const { lastEpoch: e, tMax, etaMin, baseLr } = this;
    if (e === 0) return lr;
    if ((e - 1 - tMax) % (2 * tMax) === 0) return lr + ((baseLr - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2;
    return ((1 + Math.cos((Math.PI * e) / tMax)) / (1 + Math.cos((Math.PI * (e - 1)) / tMax))) * (lr - etaMin) + etaMin;
  }
  protected override rateAtZero(): number {
    return this.etaMin + ((this.baseLr - this.etaMin) * (1 + Math.cos(0))) / 2;
  }
  get config() {
    return { name: 'CosineAnnealingLR', tMax: this.tMax, etaMin: this.etaMin };
  }
}

/**
 * torch.optim.lr_scheduler.LinearLR: the rate times startFactor at first, rising (or falling)
 * linearly to endFactor times the base rate over totalIters epochs: a warm-up.
 */
export class LinearLR extends LRScheduler {
  readonly startFactor: number;
  readonly endFactor: number;
  readonly totalIters: number;
  constructor(optimizer: Optimizer, options: { startFactor?: number; endFactor?: number; totalIters?: number } = {}) {
    super(optimizer);
    knownOptions(options, 'LinearLR', ['startFactor', 'endFactor', 'totalIters']);
    const o = options ?? {};
    this.startFactor = num(o.startFactor, 'startFactor', 1 / 3, (x) => x > 0 && x <= 1, 'a number in (0, 1]');
    this.endFactor = num(o.endFactor, 'endFactor', 1, (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
    this.totalIters = positiveInt(o.totalIters, 'totalIters', 5);
    this.start();
  }
  protected next(lr: number): number {
    const { lastEpoch: e, startFactor: s, endFactor: f, totalIters: n } = this;
    if (e === 0) return lr * s;
    if (e > n) return lr;
    return lr * (1 + (f - s) / (n * s + (e - 1) * (f - s)));
  }
  protected override rateAtZero(): number {
    return this.baseLr * (this.startFactor + ((this.endFactor - this.startFactor) * 0) / this.totalIters);
  }
  get config() {
    return { name: 'LinearLR', startFactor: this.startFactor, endFactor: this.endFactor, totalIters: this.totalIters };
  }
}

/** torch.optim.lr_scheduler.ConstantLR: the rate times factor for the first totalIters epochs, then the base rate. */
export class ConstantLR extends LRScheduler {
  readonly factor: number;
  readonly totalIters: number;
  constructor(optimizer: Optimizer, options: { factor?: number; totalIters?: number } = {}) {
    super(optimizer);
    knownOptions(options, 'ConstantLR', ['factor', 'totalIters']);
    const o = options ?? {};
    this.factor = num(o.factor, 'factor', 1 / 3, (x) => x > 0 && x <= 1, 'a number in (0, 1]');
    this.totalIters = positiveInt(o.totalIters, 'totalIters', 5);
    this.start();
  }
  protected next(lr: number): number {
    if (this.lastEpoch === 0) return lr * this.factor;
    return this.lastEpoch !== this.totalIters ? lr : lr * (1 / this.factor);
  }
  protected override rateAtZero(): number {
    return this.baseLr * (this.factor + 0);
  }
  get config() {
    return { name: 'ConstantLR', factor: this.factor, totalIters: this.totalIters };
  }
}

/** torch.optim.lr_scheduler.PolynomialLR: from the base rate to 0 over totalIters epochs as (1 - t/totalIters)^power. */
export class PolynomialLR extends LRScheduler {
  readonly totalIters: number;
  readonly power: number;
  constructor(optimizer: Optimizer, options: { totalIters?: number; power?: number } = {}) {
    super(optimizer);
    knownOptions(options, 'PolynomialLR', ['totalIters', 'power']);
    const o = options ?? {};
    this.totalIters = positiveInt(o.totalIters, 'totalIters', 5);
    this.power = num(o.power, 'power', 1, (x) => x >= 0, 'a finite number >= 0');
    this.start();
  }
  protected next(lr: number): number {
    const { lastEpoch: e, totalIters: n } = this;
    if (e === 0 || e > n) return lr;
    return lr * ((1 - e / n) / (1 - (e - 1) / n)) ** this.power;
  }
  get config() {
    return { name: 'PolynomialLR', totalIters: this.totalIters, power: this.power };
  }
}

/**
 * torch.optim.lr_scheduler.CosineAnnealingWarmRestarts (SGDR): a half cosine from the base
 * rate to etaMin over t0 epochs, then again from the top, each cycle tMult times longer.
 */
export class CosineAnnealingWarmRestarts extends LRScheduler {
  readonly t0: number;
  readonly tMult: number;
  readonly etaMin: number;
  /** Epochs into the current cycle, and its length (PyTorch's T_cur, T_i). */
  tCur = 0;
  tI: number;
  constructor(optimizer: Optimizer, options: { t0: number; tMult?: number; etaMin?: number }) {
    super(optimizer);
    knownOptions(options, 'CosineAnnealingWarmRestarts', ['t0', 'tMult', 'etaMin']);
    this.t0 = positiveInt(options?.t0, 't0');
    this.tMult = positiveInt(options.tMult, 'tMult', 1);
    this.etaMin = num(options.etaMin, 'etaMin', 0, (x) => x >= 0, 'a finite number >= 0');
    this.tI = this.t0;
    if (!restoring) this.restart(); // PyTorch's first step is step(epoch=0)
  }
  override step(): void {
    if (this.lastEpoch < 0) return this.restart(); // SequentialLR's first step, as PyTorch's step() there
    this.lastEpoch++;
    this.tCur++;
    if (this.tCur >= this.tI) {
      this.tCur -= this.tI;
      this.tI *= this.tMult;
    }
    this.optimizer.lr = this.rate();
  }
  override restart(): void {
    this.tI = this.t0;
    this.tCur = 0;
    super.restart();
  }
  protected override rateAtZero(): number {
    return this.rate();
  }
  private rate(): number {
    return this.etaMin + ((this.baseLr - this.etaMin) * (1 + Math.cos((Math.PI * this.tCur) / this.tI))) / 2;
  }
  protected next(): number {
    return this.rate();
  }
  get config() {
    return { name: 'CosineAnnealingWarmRestarts', t0: this.t0, tMult: this.tMult, etaMin: this.etaMin };
  }
  override state(): SchedulerState {
    return { ...super.state(), tCur: this.tCur, tI: this.tI };
  }
  override loadState(state: SchedulerState): void {
    super.loadState(state);
    const { tCur, tI } = state;
    if (typeof tCur !== 'number' || !Number.isFinite(tCur) || tCur < 0 || !Number.isSafeInteger(tI) || tI! < 1) {
      throw new LstmError('LSTM_FORMAT', `CosineAnnealingWarmRestarts state: expected tCur and tI, got ${describe(state)}`);
    }
    this.tCur = tCur;
    this.tI = tI!;
  }
}

export interface OneCycleLROptions {
  /** The peak rate (required). */
  maxLr: number;
  /** Steps of the whole cycle; or give epochs and stepsPerEpoch. */
  totalSteps?: number;
  epochs?: number;
  stepsPerEpoch?: number;
  /** Share of the cycle spent rising to maxLr. Default 0.3. */
  pctStart?: number;
  /** 'cos' (default) or 'linear'. */
  annealStrategy?: 'cos' | 'linear';
  /** Cycle the momentum (SGD, RMSprop) or Adam's first beta inversely to the rate. Default true. */
  cycleMomentum?: boolean;
  /** Default 0.85. */
  baseMomentum?: number;
  /** Default 0.95. */
  maxMomentum?: number;
  /** The rate starts at maxLr / divFactor. Default 25. */
  divFactor?: number;
  /** ... and ends at that / finalDivFactor. Default 1e4. */
  finalDivFactor?: number;
  /** Rise, fall back to the start, then anneal (fastai's schedule); default false. */
  threePhase?: boolean;
}

interface CyclePhase {
  endStep: number;
  startLr: 'initial' | 'max' | 'min';
  endLr: 'initial' | 'max' | 'min';
  startMomentum: 'max' | 'base';
  endMomentum: 'max' | 'base';
}

/**
 * torch.optim.lr_scheduler.OneCycleLR: the 1cycle policy, stepped once per batch
 * (fit: schedulerStep 'batch'). The rate rises from maxLr / divFactor to maxLr over
 * pctStart of totalSteps, then falls to far below the start; the momentum (or Adam's
 * first beta) moves the other way. Stepping past totalSteps is an error, as in PyTorch.
 */
export class OneCycleLR extends LRScheduler {
  readonly maxLr: number;
  readonly totalSteps: number;
  readonly pctStart: number;
  readonly annealStrategy: 'cos' | 'linear';
  readonly cycleMomentum: boolean;
  readonly baseMomentum: number;
  readonly maxMomentum: number;
  readonly divFactor: number;
  readonly finalDivFactor: number;
  readonly threePhase: boolean;
  private readonly phases: CyclePhase[];
  private readonly lrs: { initial: number; max: number; min: number };
  private readonly useBeta1: boolean;

  constructor(optimizer: Optimizer, options: OneCycleLROptions) {
    super(optimizer);
    knownOptions(options, 'OneCycleLR', ['maxLr', 'totalSteps', 'epochs', 'stepsPerEpoch', 'pctStart', 'annealStrategy', 'cycleMomentum', 'baseMomentum', 'maxMomentum', 'divFactor', 'finalDivFactor', 'threePhase']);
    const o = options ?? ({} as OneCycleLROptions);
    this.maxLr = num(o.maxLr, 'maxLr', NaN, (x) => x > 0, 'a finite number > 0');
    if (o.totalSteps !== undefined) {
      this.totalSteps = positiveInt(o.totalSteps, 'totalSteps');
    } else if (o.epochs !== undefined || o.stepsPerEpoch !== undefined) {
      this.totalSteps = positiveInt(o.epochs, 'epochs') * positiveInt(o.stepsPerEpoch, 'stepsPerEpoch');
    } else {
      throw optErr('OneCycleLR: give totalSteps, or epochs and stepsPerEpoch');
    }
    this.pctStart = num(o.pctStart, 'pctStart', 0.3, (x) => x >= 0 && x <= 1, 'a number in [0, 1]');
    this.annealStrategy = checkEnum(o.annealStrategy, 'annealStrategy', ['cos', 'linear'] as const, 'cos');
    this.cycleMomentum = checkBool(o.cycleMomentum, 'cycleMomentum', true);
    this.baseMomentum = num(o.baseMomentum, 'baseMomentum', 0.85, (x) => x >= 0, 'a finite number >= 0');
    this.maxMomentum = num(o.maxMomentum, 'maxMomentum', 0.95, (x) => x >= 0, 'a finite number >= 0');
    this.divFactor = num(o.divFactor, 'divFactor', 25, (x) => x > 0, 'a finite number > 0');
    this.finalDivFactor = num(o.finalDivFactor, 'finalDivFactor', 1e4, (x) => x > 0, 'a finite number > 0');
    this.threePhase = checkBool(o.threePhase, 'threePhase', false);
    const n = this.totalSteps;
    const p = this.pctStart;
    this.phases = this.threePhase
      ? [
          { endStep: p * n - 1, startLr: 'initial', endLr: 'max', startMomentum: 'max', endMomentum: 'base' },
          { endStep: 2 * p * n - 2, startLr: 'max', endLr: 'initial', startMomentum: 'base', endMomentum: 'max' },
          { endStep: n - 1, startLr: 'initial', endLr: 'min', startMomentum: 'max', endMomentum: 'max' },
        ]
      : [
          { endStep: p * n - 1, startLr: 'initial', endLr: 'max', startMomentum: 'max', endMomentum: 'base' },
          { endStep: n - 1, startLr: 'max', endLr: 'min', startMomentum: 'base', endMomentum: 'max' },
        ];
    // A phase of no length would divide by zero (PyTorch: ZeroDivisionError when it is reached).
    this.phases.forEach((ph, i) => {
      if (ph.endStep === (i === 0 ? 0 : this.phases[i - 1].endStep)) {
        throw optErr(`OneCycleLR: pctStart ${p} with totalSteps ${n} leaves phase ${i + 1} of the cycle no steps`);
      }
    });
    const initial = this.maxLr / this.divFactor;
    this.lrs = { initial, max: this.maxLr, min: initial / this.finalDivFactor };
    const hasBetas = 'betas' in optimizer;
    this.useBeta1 = hasBetas;
    if (this.cycleMomentum && !hasBetas && !('momentum' in optimizer)) {
      throw optErr(`OneCycleLR: cycleMomentum needs an optimizer with a momentum or betas (SGD, RMSprop, Adam, AdamW), not ${String(optimizer.config.name)}; pass cycleMomentum: false`);
    }
    if (this.cycleMomentum && hasBetas && !(this.baseMomentum < 1 && this.maxMomentum < 1)) {
      throw optErr(`OneCycleLR: Adam's first beta must stay below 1, got baseMomentum ${this.baseMomentum} and maxMomentum ${this.maxMomentum}`);
    }
    // PyTorch sets initial_lr (the base rate) to maxLr / divFactor, whatever the optimizer had.
    this.baseLr = initial;
    if (!restoring) {
      optimizer.initialLr = initial;
      if (this.cycleMomentum) this.setMomentum(this.maxMomentum);
    }
    this.start();
  }

  private setMomentum(m: number): void {
    const opt = this.optimizer as unknown as { betas?: [number, number]; momentum?: number };
    if (this.useBeta1) opt.betas = [m, opt.betas![1]];
    else opt.momentum = m;
  }

  private anneal(start: number, end: number, pct: number): number {
    return this.annealStrategy === 'cos' ? end + ((start - end) / 2) * (Math.cos(Math.PI * pct) + 1) : (end - start) * pct + start;
  }

  protected next(): number {
    const step = this.lastEpoch;
    if (step > this.totalSteps) throw optErr(`OneCycleLR: stepped ${step + 1} times, but totalSteps is ${this.totalSteps}`);
    // The phase the step is in (the last one past its end too), and where it began.
    let i = 0;
    while (i < this.phases.length - 1 && step > this.phases[i].endStep) i++;
    const ph = this.phases[i];
    const start = i === 0 ? 0 : this.phases[i - 1].endStep;
    const pct = (step - start) / (ph.endStep - start);
    if (this.cycleMomentum) {
      const m = { max: this.maxMomentum, base: this.baseMomentum };
      this.setMomentum(this.anneal(m[ph.startMomentum], m[ph.endMomentum], pct));
    }
    return this.anneal(this.lrs[ph.startLr], this.lrs[ph.endLr], pct);
  }

  protected override rateAtZero(): number {
    return this.next();
  }

  get config() {
    const { maxLr, totalSteps, pctStart, annealStrategy, cycleMomentum, baseMomentum, maxMomentum, divFactor, finalDivFactor, threePhase } = this;
    return { name: 'OneCycleLR', maxLr, totalSteps, pctStart, annealStrategy, cycleMomentum, baseMomentum, maxMomentum, divFactor, finalDivFactor, threePhase };
  }
}

export interface ReduceLROnPlateauOptions {
  /** 'min' (a loss) or 'max' (an accuracy). Default 'min'. */
  mode?: 'min' | 'max';
  /** The rate is multiplied by this when the metric stalls (< 1). Default 0.1. */
  factor?: number;
  /** Epochs without improvement before reducing. Default 10. */
  patience?: number;
  /** How much better counts as better. Default 1e-4. */
  threshold?: number;
  /** 'rel': better by that fraction of the best; 'abs': by that amount. Default 'rel'. */
  thresholdMode?: 'rel' | 'abs';
  /** Epochs to wait after a reduction before counting again. Default 0. */
  cooldown?: number;
  /** The rate never goes below this. Default 0. */
  minLr?: number;
  /** A reduction smaller than this is skipped. Default 1e-8. */
  eps?: number;
}

/** torch.optim.lr_scheduler.ReduceLROnPlateau: reduce the rate when a metric stops improving. */
export class ReduceLROnPlateau extends LRScheduler {
  readonly mode: 'min' | 'max';
  readonly factor: number;
  readonly patience: number;
  readonly threshold: number;
  readonly thresholdMode: 'rel' | 'abs';
  readonly cooldown: number;
  readonly minLr: number;
  readonly eps: number;
  best: number;
  numBadEpochs = 0;
  cooldownCounter = 0;

  constructor(optimizer: Optimizer, options: ReduceLROnPlateauOptions = {}) {
    super(optimizer, false);
    knownOptions(options, 'ReduceLROnPlateau', ['mode', 'factor', 'patience', 'threshold', 'thresholdMode', 'cooldown', 'minLr', 'eps']);
    const o = options ?? {};
    this.mode = checkEnum(o.mode, 'mode', ['min', 'max'] as const, 'min');
    this.factor = num(o.factor, 'factor', 0.1, (x) => x >= 0 && x < 1, 'a number in [0, 1)');
    const count = (v: unknown, name: string, dflt: number) => num(v, name, dflt, (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer');
    this.patience = count(o.patience, 'patience', 10);
    this.threshold = num(o.threshold, 'threshold', 1e-4, (x) => x >= 0, 'a finite number >= 0');
    this.thresholdMode = checkEnum(o.thresholdMode, 'thresholdMode', ['rel', 'abs'] as const, 'rel');
    this.cooldown = count(o.cooldown, 'cooldown', 0);
    this.minLr = num(o.minLr, 'minLr', 0, (x) => x >= 0, 'a finite number >= 0');
    this.eps = num(o.eps, 'eps', 1e-8, (x) => x >= 0, 'a finite number >= 0');
    this.best = this.worst();
  }

  private worst(): number {
    return this.mode === 'min' ? Infinity : -Infinity;
  }

  private isBetter(a: number, best: number): boolean {
    const { threshold: t } = this;
    if (this.mode === 'min') return this.thresholdMode === 'rel' ? a < best * (1 - t) : a < best - t;
    return this.thresholdMode === 'rel' ? a > best * (t + 1) : a > best + t;
  }

  /** One epoch's metric (a validation loss, say): required. */
  override step(metric?: number): void {
    if (typeof metric !== 'number') throw optErr(`ReduceLROnPlateau.step: expected the epoch's metric (a number), got ${describe(metric)}`);
    this.lastEpoch++;
    if (this.isBetter(metric, this.best)) {
      this.best = metric;
      this.numBadEpochs = 0;
    } else {
      this.numBadEpochs++;
    }
    if (this.cooldownCounter > 0) {
      this.cooldownCounter--;
      this.numBadEpochs = 0; // bad epochs in cooldown do not count
    }
    if (this.numBadEpochs > this.patience) {
      const old = this.optimizer.lr;
      const lr = Math.max(old * this.factor, this.minLr);
      if (old - lr > this.eps) this.optimizer.lr = lr;
      this.cooldownCounter = this.cooldown;
      this.numBadEpochs = 0;
    }
  }

  protected next(lr: number): number {
    return lr;
  }

  get config() {
    const { mode, factor, patience, threshold, thresholdMode, cooldown, minLr, eps } = this;
    return { name: 'ReduceLROnPlateau', mode, factor, patience, threshold, thresholdMode, cooldown, minLr, eps };
  }

  override state(): SchedulerState {
    return { ...super.state(), best: Number.isFinite(this.best) ? this.best : null, numBadEpochs: this.numBadEpochs, cooldownCounter: this.cooldownCounter };
  }

  override loadState(state: SchedulerState): void {
    super.loadState(state);
    const { best, numBadEpochs: bad, cooldownCounter: cool } = state;
    if ((best !== null && typeof best !== 'number') || !Number.isSafeInteger(bad) || bad! < 0 || !Number.isSafeInteger(cool) || cool! < 0) {
      throw new LstmError('LSTM_FORMAT', `ReduceLROnPlateau state: expected best, numBadEpochs and cooldownCounter, got ${describe(state)}`);
    }
    this.best = best === null ? this.worst() : best!;
    this.numBadEpochs = bad!;
    this.cooldownCounter = cool!;
  }
}

/**
 * torch.optim.lr_scheduler.SequentialLR: one scheduler after another, handing over at each
 * milestone epoch (the next one then starts from its epoch 0). E.g. a warm-up then a decay:
 * new SequentialLR(opt, { schedulers: [new LinearLR(opt, { totalIters: 5 }), new CosineAnnealingLR(opt, { tMax: 45 })], milestones: [5] }).
 * Make the schedulers for the same optimizer right before this; ReduceLROnPlateau cannot be one.
 */
export class SequentialLR extends LRScheduler {
  readonly schedulers: LRScheduler[];
  readonly milestones: number[];
  constructor(optimizer: Optimizer, options: { schedulers: LRScheduler[]; milestones: number[] }) {
    super(optimizer);
    knownOptions(options, 'SequentialLR', ['schedulers', 'milestones']);
    const list = options?.schedulers;
    if (!Array.isArray(list) || list.length === 0 || !list.every((x) => x instanceof LRScheduler)) {
      throw optErr(`schedulers: expected a non-empty array of schedulers, got ${describe(list)}`);
    }
    list.forEach((x, i) => {
      if (x.optimizer !== optimizer) throw optErr(`schedulers[${i}]: made for another optimizer`);
      if (x instanceof ReduceLROnPlateau || x instanceof SequentialLR) throw optErr(`schedulers[${i}]: a ${x.constructor.name} cannot run inside SequentialLR`);
    });
    const m = options.milestones;
    if (!Array.isArray(m) || m.length !== list.length - 1 || !m.every((x, i) => Number.isSafeInteger(x) && x >= 1 && (i === 0 || x >= m[i - 1]))) {
      throw optErr(`milestones: expected ${list.length - 1} ascending epoch numbers >= 1 (one fewer than the schedulers), got ${describe(m)}`);
    }
    this.schedulers = list.slice();
    this.milestones = m.slice();
    if (!restoring) {
      // As PyTorch: back to the initial rate, the others' first steps undone, and the
      // first scheduler's first step taken again.
      optimizer.lr = this.baseLr;
      for (const x of this.schedulers) x.lastEpoch--;
      this.schedulers[0].step();
    }
  }

  override step(): void {
    this.lastEpoch++;
    let idx = 0;
    while (idx < this.milestones.length && this.milestones[idx] <= this.lastEpoch) idx++;
    const current = this.schedulers[idx];
    if (idx > 0 && this.milestones[idx - 1] === this.lastEpoch) current.restart();
    else current.step();
  }

  override restart(): void {
    throw optErr('a SequentialLR cannot run inside another');
  }

  protected next(lr: number): number {
    return lr;
  }

  get config() {
    return { name: 'SequentialLR', schedulers: this.schedulers.map((x) => x.config), milestones: this.milestones.slice() };
  }

  override state(): SchedulerState {
    return { ...super.state(), children: this.schedulers.map((x) => x.state()) };
  }

  override loadState(state: SchedulerState): void {
    super.loadState(state);
    const c = state.children;
    if (!Array.isArray(c) || c.length !== this.schedulers.length) {
      throw new LstmError('LSTM_FORMAT', `SequentialLR state: expected ${this.schedulers.length} children, got ${describe(c)}`);
    }
    this.schedulers.forEach((x, i) => x.loadState(c[i]));
  }
}

// The schedulers schedulerFromConfig makes, by their config's name.
const BUILTIN = { StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR, ConstantLR, PolynomialLR, CosineAnnealingWarmRestarts, OneCycleLR, ReduceLROnPlateau };

/** One of the schedulers above (not a subclass), or a SequentialLR of them: schedulerFromConfig makes it again, so fit can move it to a worker. */
export function isBuiltinScheduler(s: LRScheduler): boolean {
  if (s.constructor === SequentialLR) return (s as SequentialLR).schedulers.every(isBuiltinScheduler);
  return Object.values(BUILTIN).some((C) => s.constructor === C);
}

/**
 * A scheduler of `config`'s kind and options (LRScheduler.config) for `optimizer`: a new
 * one (taking its first step, as its constructor does), or with `state` (state()) the same
 * one continued, touching nothing the optimizer already has (its rate, momentum).
 */
export function schedulerFromConfig(optimizer: Optimizer, config: { name: string } & Record<string, unknown>, state?: SchedulerState): LRScheduler {
  const outer = restoring;
  restoring = outer || state !== undefined;
  try {
    const made = make(optimizer, config);
    if (state !== undefined) made.loadState(state);
    return made;
  } finally {
    restoring = outer;
  }
}

function make(optimizer: Optimizer, config: { name: string } & Record<string, unknown>): LRScheduler {
  const { name, ...o } = config ?? ({} as never);
  if (name === 'SequentialLR') {
    const kids = o.schedulers;
    if (!Array.isArray(kids)) throw optErr(`SequentialLR: expected schedulers' configs, got ${describe(kids)}`);
    return new SequentialLR(optimizer, { schedulers: kids.map((k) => make(optimizer, k)), milestones: o.milestones as number[] });
  }
  const Kind = typeof name === 'string' && Object.hasOwn(BUILTIN, name) ? BUILTIN[name as keyof typeof BUILTIN] : undefined;
  if (!Kind) throw optErr(`scheduler: unknown kind ${describe(name)}`);
  return new Kind(optimizer, o as never);
}

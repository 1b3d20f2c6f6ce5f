// Learning-rate schedules with torch.optim.lr_scheduler's exact rules (its chainable forms:
// each step() derives the new rate from the optimizer's current one, as PyTorch does, so
// the rates match it bit for bit). A scheduler changes optimizer.lr; call step() once per
// epoch (SequenceModel.fit does, given `scheduler`), ReduceLROnPlateau with the metric.
import { checkEnum } from '../config.js';
import { LstmError, describe } from '../errors.js';
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
}

export abstract class LRScheduler {
  readonly optimizer: Optimizer;
  /** The optimizer's learning rate when the scheduler was made (PyTorch's base_lrs / initial_lr). */
  baseLr: number;
  /** Steps taken (PyTorch's last_epoch: 0 after construction). */
  lastEpoch = 0;

  constructor(optimizer: Optimizer) {
    if (optimizer === null || typeof optimizer !== 'object' || typeof (optimizer as { lr?: unknown }).lr !== 'number') {
      throw optErr(`scheduler: expected an optimizer (SGD, Adam, AdamW), got ${describe(optimizer)}`);
    }
    this.optimizer = optimizer;
    this.baseLr = optimizer.lr;
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

  protected abstract next(lr: number): number;

  /** Name and options, to make the same scheduler again (see schedulerFromConfig). */
  abstract get config(): { name: string } & Record<string, unknown>;

  state(): SchedulerState {
    return { lastEpoch: this.lastEpoch, baseLr: this.baseLr };
  }

  /** Continue from another scheduler's state() (the optimizer's lr is the optimizer's own). */
  loadState(state: SchedulerState): void {
    if (state === null || typeof state !== 'object' || !Number.isSafeInteger(state.lastEpoch) || state.lastEpoch < 0 || typeof state.baseLr !== 'number' || !Number.isFinite(state.baseLr)) {
      throw new LstmError('LSTM_FORMAT', `scheduler state: expected { lastEpoch, baseLr, ... }, got ${describe(state)}`);
    }
    this.lastEpoch = state.lastEpoch;
    this.baseLr = state.baseLr;
  }
}

/** torch.optim.lr_scheduler.StepLR: the rate times gamma every stepSize epochs. */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;
  constructor(optimizer: Optimizer, options: { stepSize: number; gamma?: number }) {
    super(optimizer);
    this.stepSize = positiveInt(options?.stepSize, 'stepSize');
    this.gamma = num(options.gamma, 'gamma', 0.1, (x) => x >= 0, 'a finite number >= 0');
  }
  protected next(lr: number): number {
    return this.lastEpoch % this.stepSize !== 0 ? lr : lr * this.gamma;
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
    const m = options?.milestones;
    if (!Array.isArray(m) || !m.every((x) => Number.isSafeInteger(x) && x >= 0)) throw optErr(`milestones: expected an array of epoch numbers, got ${describe(m)}`);
    this.milestones = m.slice().sort((a, b) => a - b);
    this.gamma = num(options.gamma, 'gamma', 0.1, (x) => x >= 0, 'a finite number >= 0');
  }
  protected next(lr: number): number {
    const count = this.milestones.filter((x) => x === this.lastEpoch).length;
    return count === 0 ? lr : lr * this.gamma ** count;
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
    this.gamma = num(options?.gamma, 'gamma', NaN, (x) => x >= 0, 'a finite number >= 0');
  }
  protected next(lr: number): number {
    return lr * this.gamma;
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
    this.tMax = positiveInt(options?.tMax, 'tMax');
    this.etaMin = num(options.etaMin, 'etaMin', 0, (x) => x >= 0, 'a finite number >= 0');
  }
  protected next(lr: number): number {
    const { lastEpoch: e, tMax, etaMin, baseLr } = this;
    if ((e - 1 - tMax) % (2 * tMax) === 0) return lr + ((baseLr - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2;
    return ((1 + Math.cos((Math.PI * e) / tMax)) / (1 + Math.cos((Math.PI * (e - 1)) / tMax))) * (lr - etaMin) + etaMin;
  }
  get config() {
    return { name: 'CosineAnnealingLR', tMax: this.tMax, etaMin: this.etaMin };
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
    super(optimizer);
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

/** One of the schedulers above (not a subclass): schedulerFromConfig makes it again, so fit can move it to a worker. */
export function isBuiltinScheduler(s: LRScheduler): boolean {
  return [StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau].some((C) => s.constructor === C);
}

/** A scheduler of `config`'s kind and options (LRScheduler.config) for `optimizer`. */
export function schedulerFromConfig(optimizer: Optimizer, config: { name: string } & Record<string, unknown>): LRScheduler {
  const { name, ...o } = config ?? ({} as never);
  switch (name) {
    case 'StepLR':
      return new StepLR(optimizer, o as never);
    case 'MultiStepLR':
      return new MultiStepLR(optimizer, o as never);
    case 'ExponentialLR':
      return new ExponentialLR(optimizer, o as never);
    case 'CosineAnnealingLR':
      return new CosineAnnealingLR(optimizer, o as never);
    case 'ReduceLROnPlateau':
      return new ReduceLROnPlateau(optimizer, o as never);
    default:
      throw optErr(`scheduler: unknown kind ${describe(name)}`);
  }
}

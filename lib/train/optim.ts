// Optimizers with torch.optim's exact update rules (single-tensor implementations),
// and clip_grad_norm_. State is float32 like the parameters (as PyTorch keeps it in the
// parameter's dtype), so a checkpoint holds it exactly; arithmetic is in float64.
import { checkBool } from '../config.js';
import { LstmError, checkKnownKeys, describe } from '../errors.js';

/** A trainable tensor: its live values, its gradient, and a name for checkpoints. */
export interface Parameter {
  name: string;
  value: Float32Array;
  grad: Float32Array;
  shape: number[];
  /** Called after an optimizer changed `value` (models repack their weights). */
  onUpdate?: () => void;
}

/** An option's number (finite, >= min); undefined gives dflt, or with dflt undefined is refused. */
function num(v: unknown, name: string, dflt: number | undefined, min = 0): number {
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new LstmError('LSTM_OPTION', `${name}: expected a finite number >= ${min}, got ${describe(v)}`);
  return v;
}

export abstract class Optimizer {
  protected readonly params: Parameter[];
  /** Per-parameter state buffers by parameter name, e.g. momentum_buffer or exp_avg. */
  readonly state = new Map<string, Record<string, Float32Array>>();
  stepCount = 0;
  /**
   * The rate the first scheduler made for this optimizer found (PyTorch's
   * param_groups[0]['initial_lr']): every later scheduler takes it as its base rate.
   */
  initialLr: number | undefined;
  private rate = NaN;

  /**
   * The learning rate the next step uses. Schedulers (StepLR, ...) change it, and so may the
   * caller between steps, as with param_groups[0]['lr'] in PyTorch.
   */
  get lr(): number {
    return this.rate;
  }
  set lr(value: number) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new LstmError('LSTM_OPTION', `lr: expected a finite number >= 0, got ${describe(value)}`);
    this.rate = value;
  }

  constructor(params: Parameter[]) {
    if (!Array.isArray(params) || params.length === 0) throw new LstmError('LSTM_OPTION', 'optimizer: expected a non-empty array of parameters (model.parameters())');
    this.params = params;
  }

  /** Apply one update from the current gradients. */
  step(): void {
    this.stepCount++;
    for (const p of this.params) {
      this.update(p, this.buffers(p));
      p.onUpdate?.();
    }
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad.fill(0);
  }

  protected buffers(p: Parameter): Record<string, Float32Array> {
    let s = this.state.get(p.name);
    if (!s) {
      s = {};
      this.state.set(p.name, s);
    }
    return s;
  }

  protected abstract update(p: Parameter, state: Record<string, Float32Array>): void;

  /** Hyper-parameters, for checkpoints. */
  abstract get config(): Record<string, unknown>;
}

export interface SGDOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

/** SGD's and RMSprop's momentum factor, which OneCycleLR cycles as param_groups[0]['momentum'] (Adam's are betas). */
abstract class MomentumOptimizer extends Optimizer {
  private mom = 0;
  /** The momentum factor the next step uses. */
  get momentum(): number {
    return this.mom;
  }
  set momentum(value: number) {
    this.mom = num(value, 'momentum', undefined);
  }
}

export class SGD extends MomentumOptimizer {
  readonly dampening: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;

  constructor(params: Parameter[], options: SGDOptions) {
    super(params);
    const o: Partial<SGDOptions> = options ?? {};
    checkKnownKeys(o, 'SGD options', ['lr', 'momentum', 'dampening', 'nesterov', 'weightDecay']);
    this.lr = o.lr as number; // required, as in torch.optim.SGD
    this.momentum = num(o.momentum, 'momentum', 0);
    this.dampening = num(o.dampening, 'dampening', 0);
    this.nesterov = checkBool(o.nesterov, 'nesterov', false);
    this.weightDecay = num(o.weightDecay, 'weightDecay', 0);
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) throw new LstmError('LSTM_OPTION', 'nesterov momentum requires a momentum and zero dampening');
  }

  get config() {
    return { name: 'sgd', lr: this.lr, momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov, weightDecay: this.weightDecay };
  }

  protected update(p: Parameter, s: Record<string, Float32Array>): void {
    const { lr, momentum, dampening, nesterov, weightDecay } = this;
    const fresh = s.momentum_buffer === undefined;
    if (momentum !== 0 && fresh) s.momentum_buffer = new Float32Array(p.value.length);
    const buf = s.momentum_buffer;
    for (let i = 0; i < p.value.length; i++) {
      let d = p.grad[i];
      if (weightDecay !== 0) d += weightDecay * p.value[i];
      if (momentum !== 0) {
        buf[i] = fresh ? d : momentum * buf[i] + (1 - dampening) * d;
        d = nesterov ? d + momentum * buf[i] : buf[i];
      }
      p.value[i] -= lr * d;
    }
  }
}

export interface AdamOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
}

export class Adam extends Optimizer {
  private coefs: [number, number] = [0.9, 0.999];
  readonly eps: number;
  readonly weightDecay: number;
  readonly amsgrad: boolean;
  /** AdamW: decay the weights directly instead of adding to the gradient. */
  protected readonly decoupled: boolean = false;

  constructor(params: Parameter[], options: AdamOptions = {}, defaultWeightDecay = 0) {
    super(params);
    const o = options ?? {};
    checkKnownKeys(o, `${new.target.name} options`, ['lr', 'betas', 'eps', 'weightDecay', 'amsgrad']);
    this.lr = num(o.lr, 'lr', 1e-3);
    this.betas = o.betas ?? [0.9, 0.999];
    this.eps = num(o.eps, 'eps', 1e-8);
    this.weightDecay = num(o.weightDecay, 'weightDecay', defaultWeightDecay);
    this.amsgrad = checkBool(o.amsgrad, 'amsgrad', false);
  }

  /** The moving-average coefficients the next step uses (a copy; OneCycleLR cycles the first, as param_groups[0]['betas']). */
  get betas(): [number, number] {
    return [this.coefs[0], this.coefs[1]];
  }
  set betas(value: [number, number]) {
    const v: unknown[] | null = Array.isArray(value) && value.length === 2 ? [value[0], value[1]] : null;
    if (v === null || !v.every((b) => typeof b === 'number' && b >= 0 && b < 1)) {
      throw new LstmError('LSTM_OPTION', `betas: expected two numbers in [0, 1), got ${describe(value)}`);
    }
    this.coefs = v as [number, number];
  }

  get config() {
    return { name: this.decoupled ? 'adamw' : 'adam', lr: this.lr, betas: this.betas, eps: this.eps, weightDecay: this.weightDecay, amsgrad: this.amsgrad };
  }

  protected update(p: Parameter, s: Record<string, Float32Array>): void {
    const n = p.value.length;
    s.exp_avg ??= new Float32Array(n);
    s.exp_avg_sq ??= new Float32Array(n);
    if (this.amsgrad) s.max_exp_avg_sq ??= new Float32Array(n);
    s.step ??= new Float32Array(1);
    const step = ++s.step[0];
    const [b1, b2] = this.coefs;
    const { lr, eps, weightDecay } = this;
    const bc1 = 1 - b1 ** step;
    const bc2Sqrt = Math.sqrt(1 - b2 ** step);
    const stepSize = lr / bc1;
    const m = s.exp_avg;
    const v = s.exp_avg_sq;
    const vmax = s.max_exp_avg_sq;
    for (let i = 0; i < n; i++) {
      let g = p.grad[i];
      let w = p.value[i];
      if (weightDecay !== 0) {
        if (this.decoupled) w *= 1 - lr * weightDecay;
        else g += weightDecay * w;
      }
      m[i] += (g - m[i]) * (1 - b1);
      v[i] = v[i] * b2 + (1 - b2) * g * g;
      let second = v[i];
      if (vmax) {
        vmax[i] = Math.max(vmax[i], v[i]);
        second = vmax[i];
      }
      const denom = Math.sqrt(second) / bc2Sqrt + eps;
      p.value[i] = w - (stepSize * m[i]) / denom;
    }
  }
}

export class AdamW extends Adam {
  protected override readonly decoupled: boolean = true;
  constructor(params: Parameter[], options: AdamOptions = {}) {
    super(params, options, 1e-2);
  }
}

export interface RMSpropOptions {
  lr?: number;
  alpha?: number;
  eps?: number;
  weightDecay?: number;
  momentum?: number;
  centered?: boolean;
}

/** torch.optim.RMSprop: a running mean of squared gradients scales each step (optionally centered, with momentum). */
export class RMSprop extends MomentumOptimizer {
  readonly alpha: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly centered: boolean;

  constructor(params: Parameter[], options: RMSpropOptions = {}) {
    super(params);
    const o = options ?? {};
    checkKnownKeys(o, 'RMSprop options', ['lr', 'alpha', 'eps', 'weightDecay', 'momentum', 'centered']);
    this.lr = num(o.lr, 'lr', 1e-2);
    this.alpha = num(o.alpha, 'alpha', 0.99);
    this.eps = num(o.eps, 'eps', 1e-8);
    this.weightDecay = num(o.weightDecay, 'weightDecay', 0);
    this.momentum = num(o.momentum, 'momentum', 0);
    this.centered = checkBool(o.centered, 'centered', false);
  }

  get config() {
    return { name: 'rmsprop', lr: this.lr, alpha: this.alpha, eps: this.eps, weightDecay: this.weightDecay, momentum: this.momentum, centered: this.centered };
  }

  protected update(p: Parameter, s: Record<string, Float32Array>): void {
    const n = p.value.length;
    s.square_avg ??= new Float32Array(n);
    if (this.momentum > 0) s.momentum_buffer ??= new Float32Array(n);
    if (this.centered) s.grad_avg ??= new Float32Array(n);
    s.step ??= new Float32Array(1);
    s.step[0]++;
    const { lr, alpha, eps, weightDecay, momentum } = this;
    const sq = s.square_avg;
    const buf = s.momentum_buffer;
    const ga = s.grad_avg;
    for (let i = 0; i < n; i++) {
      let g = p.grad[i];
      if (weightDecay !== 0) g += weightDecay * p.value[i];
      sq[i] = sq[i] * alpha + (1 - alpha) * g * g;
      let avg: number;
      if (ga) {
        ga[i] = ga[i] * alpha + (1 - alpha) * g;
        avg = Math.sqrt(sq[i] - ga[i] * ga[i]);
      } else {
        avg = Math.sqrt(sq[i]);
      }
      avg += eps;
      if (buf) {
        buf[i] = buf[i] * momentum + g / avg;
        p.value[i] -= lr * buf[i];
      } else {
        p.value[i] -= (lr * g) / avg;
      }
    }
  }
}

export interface AdagradOptions {
  lr?: number;
  lrDecay?: number;
  weightDecay?: number;
  initialAccumulatorValue?: number;
  eps?: number;
}

/** torch.optim.Adagrad: each element's step shrinks with the sum of its squared gradients. */
export class Adagrad extends Optimizer {
  readonly lrDecay: number;
  readonly weightDecay: number;
  readonly initialAccumulatorValue: number;
  readonly eps: number;

  constructor(params: Parameter[], options: AdagradOptions = {}) {
    super(params);
    const o = options ?? {};
    checkKnownKeys(o, 'Adagrad options', ['lr', 'lrDecay', 'weightDecay', 'initialAccumulatorValue', 'eps']);
    this.lr = num(o.lr, 'lr', 1e-2);
    this.lrDecay = num(o.lrDecay, 'lrDecay', 0);
    this.weightDecay = num(o.weightDecay, 'weightDecay', 0);
    this.initialAccumulatorValue = num(o.initialAccumulatorValue, 'initialAccumulatorValue', 0);
    this.eps = num(o.eps, 'eps', 1e-10);
  }

  get config() {
    return { name: 'adagrad', lr: this.lr, lrDecay: this.lrDecay, weightDecay: this.weightDecay, initialAccumulatorValue: this.initialAccumulatorValue, eps: this.eps };
  }

  protected update(p: Parameter, s: Record<string, Float32Array>): void {
    const n = p.value.length;
    s.sum ??= new Float32Array(n).fill(this.initialAccumulatorValue);
    s.step ??= new Float32Array(1);
    const step = ++s.step[0];
    const { weightDecay, eps } = this;
    const clr = this.lr / (1 + (step - 1) * this.lrDecay);
    const sum = s.sum;
    for (let i = 0; i < n; i++) {
      let g = p.grad[i];
      if (weightDecay !== 0) g += weightDecay * p.value[i];
      sum[i] += g * g;
      p.value[i] -= (clr * g) / (Math.sqrt(sum[i]) + eps);
    }
  }
}

/** torch.nn.utils.clip_grad_norm_: scales every gradient so their joint L2 norm is at most maxNorm. Returns the norm before clipping. */
export function clipGradNorm(params: Parameter[], maxNorm: number): number {
  const max = num(maxNorm, 'maxNorm', undefined);
  let sq = 0;
  for (const p of params) for (let i = 0; i < p.grad.length; i++) sq += p.grad[i] * p.grad[i];
  const total = Math.sqrt(sq);
  const coef = Math.min(1, max / (total + 1e-6));
  if (coef < 1) for (const p of params) for (let i = 0; i < p.grad.length; i++) p.grad[i] *= coef;
  return total;
}

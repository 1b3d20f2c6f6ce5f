import type { ResolvedActivation } from '../config.js';

/** Scalar activation by kind index (see ACTIVATIONS in config.ts); the oracle for both engines. */
export function activate(kind: number, alpha: number, beta: number, x: number): number {
  switch (kind) {
    case 0:
      return 1 / (1 + Math.exp(-x));
    case 1:
      return Math.tanh(x);
    case 2:
      return x > 0 ? x : 0;
    case 3: {
      const v = alpha * x + beta;
      return v < 0 ? 0 : v > 1 ? 1 : v;
    }
    case 4:
      return x >= 0 ? x : alpha * x;
    case 5:
      return x > alpha ? x : 0;
    case 6:
      return alpha * Math.tanh(beta * x);
    case 7:
      return alpha * x + beta;
    case 8:
      return x >= 0 ? x : alpha * (Math.exp(x) - 1);
    case 9:
      return x / (1 + Math.abs(x));
    case 10:
      return x > 20 ? x : Math.log1p(Math.exp(x));
    default:
      throw new Error(`unknown activation kind ${kind}`);
  }
}

export type ActFn = (x: number) => number;

/** A closure for one resolved activation; the common ones without the switch. */
export function activationFn(a: ResolvedActivation): ActFn {
  switch (a.kind) {
    case 0:
      return (x) => 1 / (1 + Math.exp(-x));
    case 1:
      return Math.tanh;
    default: {
      const { kind, alpha, beta } = a;
      return (x) => activate(kind, alpha, beta, x);
    }
  }
}

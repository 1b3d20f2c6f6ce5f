// The pure-TypeScript step kernels of backpropagation through time (the native engine has
// the same in native/kernels/train_cell.cc): the cell forward that records the tape and the
// fused gate backward, for any activation, peepholes, clip and coupled gates.
import type { ResolvedActivation } from '../config.js';
import type { CellKernels, CellSpec, DirTape, StepCell } from '../train/bptt.js';
import { activationFn, type ActFn } from './activations.js';

/** dy/dz of an activation, from its input z and output y. */
function derivative(a: ResolvedActivation): (z: number, y: number) => number {
  const { alpha, beta } = a;
  switch (a.kind) {
    case 0:
      return (_z, y) => y * (1 - y);
    case 1:
      return (_z, y) => 1 - y * y;
    case 2:
      return (z) => (z > 0 ? 1 : 0);
    case 3:
      return (z) => {
        const v = alpha * z + beta;
        return v > 0 && v < 1 ? alpha : 0;
      };
    case 4:
      return (z) => (z >= 0 ? 1 : alpha);
    case 5:
      return (z) => (z > alpha ? 1 : 0);
    case 6:
      return (z) => {
        const t = Math.tanh(beta * z);
        return alpha * beta * (1 - t * t);
      };
    case 7:
      return () => alpha;
    case 8:
      return (z, y) => (z >= 0 ? 1 : y + alpha);
    case 9:
      return (z) => 1 / ((1 + Math.abs(z)) * (1 + Math.abs(z)));
    case 10:
      return (z) => 1 / (1 + Math.exp(-z));
    default:
      throw new Error(`unknown activation kind ${a.kind}`);
  }
}

class JsStepCell implements StepCell {
  private readonly fa: ActFn;
  private readonly ga: ActFn;
  private readonly ha: ActFn;
  private readonly dfa: (z: number, y: number) => number;
  private readonly dga: (z: number, y: number) => number;
  private readonly dha: (z: number, y: number) => number;

  constructor(
    private readonly s: CellSpec,
    private readonly t: DirTape,
  ) {
    this.fa = activationFn(s.gate);
    this.ga = activationFn(s.cell);
    this.ha = activationFn(s.hidden);
    this.dfa = derivative(s.gate);
    this.dga = derivative(s.cell);
    this.dha = derivative(s.hidden);
  }

  forward(row0: number, B: number, gates: Float32Array, cPrev: Float32Array, cNew: Float32Array, rNew: Float32Array): void {
    const { s, t, fa, ga, ha } = this;
    const H = s.hiddenSize;
    const clip = s.clip;
    const { wCi, wCf, wCo } = s;
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < H; j++) {
        const cp = cPrev[b * H + j];
        let zi = gates[b * 4 * H + j];
        let zf = gates[b * 4 * H + H + j];
        let zg = gates[b * 4 * H + 2 * H + j];
        let zo = gates[b * 4 * H + 3 * H + j];
        if (wCi) {
          zi += wCi[j] * cp;
          zf += wCf![j] * cp;
        }
        const k = (row0 + b) * H + j;
        if (t.pass) {
          t.pass[0][k] = zi >= -clip && zi <= clip ? 1 : 0;
          t.pass[1][k] = zf >= -clip && zf <= clip ? 1 : 0;
          t.pass[2][k] = zg >= -clip && zg <= clip ? 1 : 0;
          zi = Math.min(clip, Math.max(-clip, zi));
          zf = Math.min(clip, Math.max(-clip, zf));
          zg = Math.min(clip, Math.max(-clip, zg));
        }
        const i = fa(zi);
        const f = s.coupled ? 1 - i : fa(zf);
        const g = ga(zg);
        const cc = Math.fround(f * cp + i * g);
        if (wCo) zo += wCo[j] * cc;
        if (t.pass) {
          t.pass[3][k] = zo >= -clip && zo <= clip ? 1 : 0;
          zo = Math.min(clip, Math.max(-clip, zo));
        }
        const o = fa(zo);
        const hcv = ha(cc);
        t.z[0][k] = zi;
        t.z[1][k] = zf;
        t.z[2][k] = zg;
        t.z[3][k] = zo;
        t.act[0][k] = i;
        t.act[1][k] = f;
        t.act[2][k] = g;
        t.act[3][k] = o;
        t.cPrev[k] = cp;
        t.c[k] = cc;
        t.hc[k] = hcv;
        cNew[b * H + j] = cc;
        rNew[b * H + j] = o * hcv;
      }
    }
  }

  backward(
    row0: number,
    B: number,
    lengths: Int32Array | null,
    tt: number,
    dr: Float32Array,
    dc: Float32Array,
    dgates: Float32Array,
    dwci: Float32Array | null,
    dwcf: Float32Array | null,
    dwco: Float32Array | null,
  ): void {
    const { s, t, dfa, dga, dha } = this;
    const H = s.hiddenSize;
    const { wCi, wCf, wCo } = s;
    dgates.fill(0);
    for (let b = 0; b < B; b++) {
      if (!(lengths === null || tt < lengths[b])) continue; // a padded step left the state untouched
      for (let j = 0; j < H; j++) {
        const k = (row0 + b) * H + j;
        const i = t.act[0][k];
        const f = t.act[1][k];
        const g = t.act[2][k];
        const o = t.act[3][k];
        const drv = dr[b * H + j];
        let dzo = drv * t.hc[k] * dfa(t.z[3][k], o);
        if (t.pass) dzo *= t.pass[3][k];
        let dcv = dc[b * H + j] + drv * o * dha(t.c[k], t.hc[k]);
        if (wCo) {
          dcv += dzo * wCo[j];
          dwco![j] += dzo * t.c[k];
        }
        let di = dcv * g;
        const dg = dcv * i;
        const df = dcv * t.cPrev[k];
        let dzf = 0;
        if (s.coupled) di -= df;
        else dzf = df * dfa(t.z[1][k], f) * (t.pass ? t.pass[1][k] : 1);
        const dzi = di * dfa(t.z[0][k], i) * (t.pass ? t.pass[0][k] : 1);
        const dzg = dg * dga(t.z[2][k], g) * (t.pass ? t.pass[2][k] : 1);
        let dcp = dcv * f;
        if (wCi) {
          dcp += dzi * wCi[j] + dzf * wCf![j];
          dwci![j] += dzi * t.cPrev[k];
          dwcf![j] += dzf * t.cPrev[k];
        }
        dc[b * H + j] = dcp; // carried to the previous step
        const gb = b * 4 * H;
        dgates[gb + j] = dzi;
        dgates[gb + H + j] = dzf;
        dgates[gb + 2 * H + j] = dzg;
        dgates[gb + 3 * H + j] = dzo;
      }
    }
  }
}

export const jsCells: CellKernels = {
  acquire: (spec, _rows, tape) => new JsStepCell(spec, tape),
  release: () => {},
};

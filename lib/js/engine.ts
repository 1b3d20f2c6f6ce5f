import { directionActs, type Engine, type EngineLayer, type LayerDesc, type LayerRun, type StackResult, type StackRun } from '../engine.js';
import type { DirectionParams } from '../params.js';
import { activationFn, type ActFn } from './activations.js';
import type { Gemm, PreparedMatrix } from '../train/bptt.js';
import { GemmScratch, gemmNT, packW, type PackedW } from './gemm.js';
import { jsCells } from './train-cell.js';
import { nextTask } from '../platform.js';
import { checkStepMemory } from '../tensor.js';

interface JsDirection {
  wIh: PackedW;
  wHh: PackedW;
  wHr: PackedW | null;
  wCh: PackedW | null;
  /** b_ih + b_hh, or null without bias. */
  bias: Float32Array | null;
  /** Diagonal peepholes i, f, o, or null. */
  wCi: Float32Array | null;
  wCf: Float32Array | null;
  wCo: Float32Array | null;
}

/** One layer on the pure-TypeScript engine: weights packed once, no allocation per step. */
class JsLayer implements EngineLayer {
  readonly desc: LayerDesc;
  private dirs: JsDirection[];
  /** Per direction: the gate, cell and hidden functions, and whether they are PyTorch's. */
  private readonly acts: { fa: ActFn; ga: ActFn; ha: ActFn; standard: boolean }[];
  private readonly scratch = new GemmScratch();

  constructor(desc: LayerDesc, dirs: DirectionParams[]) {
    this.desc = desc;
    this.dirs = JsLayer.pack(desc, dirs);
    this.acts = Array.from({ length: desc.numDirections }, (_, d) => {
      const a = directionActs(desc, d);
      return { fa: activationFn(a.gate), ga: activationFn(a.cell), ha: activationFn(a.hidden), standard: a.gate.kind === 0 && a.cell.kind === 1 && a.hidden.kind === 1 };
    });
  }

  /** A forward already running holds the old `dirs` array: replacing it is safe. */
  update(dirs: DirectionParams[]): void {
    this.dirs = JsLayer.pack(this.desc, dirs);
  }

  private static pack(desc: LayerDesc, dirs: DirectionParams[]): JsDirection[] {
    const H = desc.hiddenSize;
    const Hout = desc.projSize || H;
    return dirs.map((p) => {
      let bias: Float32Array | null = null;
      if (desc.bias && p.bIh && p.bHh) {
        bias = new Float32Array(4 * H);
        for (let i = 0; i < 4 * H; i++) bias[i] = p.bIh[i] + p.bHh[i];
      }
      return {
        wIh: packW(p.wIh, 4 * H, desc.inputSize),
        wHh: packW(p.wHh, 4 * H, Hout),
        wHr: desc.projSize > 0 && p.wHr ? packW(p.wHr, desc.projSize, H) : null,
        wCh: desc.peephole === 2 && p.wCh ? packW(p.wCh, 4 * H, H) : null,
        bias,
        wCi: desc.peephole === 1 ? p.wCi!.slice() : null,
        wCf: desc.peephole === 1 ? p.wCf!.slice() : null,
        wCo: desc.peephole === 1 ? p.wCo!.slice() : null,
      };
    });
  }

  /** Nothing to free by hand: once the model drops this layer the GC reclaims it, and a
   * forwardAsync still in flight keeps it alive until it finishes (as native does). */
  dispose(): void {}

  forward(run: LayerRun): void {
    const { desc } = this;
    const { x, T, B, lengths, y } = run;
    const H = desc.hiddenSize;
    const G4 = 4 * H;
    const Hout = desc.projSize || H;
    const D = desc.numDirections;
    const gates = new Float32Array(T * B * G4);
    const h = new Float32Array(B * Hout);
    const c = new Float32Array(B * H);
    const cNew = new Float32Array(B * H);
    const r = new Float32Array(B * H);
    const hNew = desc.projSize > 0 ? new Float32Array(B * Hout) : r;

    const dirs = this.dirs;
    for (let d = 0; d < D; d++) {
      const p = dirs[d];
      const reverse = D === 2 ? d === 1 : desc.reverse;
      if (p.bias) {
        for (let row = 0; row < T * B; row++) gates.set(p.bias, row * G4);
      } else {
        gates.fill(0);
      }
      gemmNT(T * B, x, 0, desc.inputSize, p.wIh, gates, 0, G4, this.scratch);
      h.set(run.h0.subarray(d * B * Hout, (d + 1) * B * Hout));
      c.set(run.c0.subarray(d * B * H, (d + 1) * B * H));

      for (let s = 0; s < T; s++) {
        const t = reverse ? T - 1 - s : s;
        const gOff = t * B * G4;
        gemmNT(B, h, 0, Hout, p.wHh, gates, gOff, G4, this.scratch);
        if (p.wCh) gemmNT(B, c, 0, H, p.wCh, gates, gOff, G4, this.scratch);
        if (this.acts[d].standard && desc.peephole !== 1 && desc.clip === 0 && !desc.coupled) {
          cellStandard(gates, gOff, B, H, c, cNew, r);
        } else {
          this.cellGeneral(p, this.acts[d], gates, gOff, B, c, cNew, r);
        }
        if (p.wHr) {
          hNew.fill(0);
          gemmNT(B, r, 0, H, p.wHr, hNew, 0, Hout, this.scratch);
        }
        for (let b = 0; b < B; b++) {
          const yOff = (t * B + b) * D * Hout + d * Hout;
          if (lengths === null || t < lengths[b]) {
            for (let j = 0; j < H; j++) c[b * H + j] = cNew[b * H + j];
            for (let j = 0; j < Hout; j++) {
              const v = hNew[b * Hout + j];
              h[b * Hout + j] = v;
              y[yOff + j] = v;
            }
          } else {
            y.fill(0, yOff, yOff + Hout);
          }
        }
      }
      run.hn.set(h, d * B * Hout);
      run.cn.set(c, d * B * H);
    }
  }

  /** Every option: peepholes, clip, coupled gates, any activations. ONNX's order of operations. */
  private cellGeneral(
    p: JsDirection,
    acts: { fa: ActFn; ga: ActFn; ha: ActFn },
    g: Float32Array,
    gOff: number,
    B: number,
    cPrev: Float32Array,
    cOut: Float32Array,
    r: Float32Array,
  ): void {
    const H = this.desc.hiddenSize;
    const clip = this.desc.clip;
    const lo = clip > 0 ? -clip : -Infinity;
    const hi = clip > 0 ? clip : Infinity;
    const coupled = this.desc.coupled;
    const { fa, ga, ha } = acts;
    const { wCi, wCf, wCo } = p;
    for (let b = 0; b < B; b++) {
      const base = gOff + b * 4 * H;
      for (let j = 0; j < H; j++) {
        const cp = cPrev[b * H + j];
        let zi = g[base + j];
        let zf = g[base + H + j];
        let zg = g[base + 2 * H + j];
        let zo = g[base + 3 * H + j];
        if (wCi) {
          zi += wCi[j] * cp;
          zf += wCf![j] * cp;
        }
        zi = zi < lo ? lo : zi > hi ? hi : zi;
        zf = zf < lo ? lo : zf > hi ? hi : zf;
        zg = zg < lo ? lo : zg > hi ? hi : zg;
        const i = fa(zi);
        const f = coupled ? 1 - i : fa(zf);
        const cc = Math.fround(f * cp + i * ga(zg));
        if (wCo) zo += wCo[j] * cc;
        zo = zo < lo ? lo : zo > hi ? hi : zo;
        cOut[b * H + j] = cc;
        r[b * H + j] = fa(zo) * ha(cc);
      }
    }
  }
}

/** PyTorch's cell (sigmoid, tanh, tanh; no peephole, clip or coupling): the hot path. */
function cellStandard(
  g: Float32Array,
  gOff: number,
  B: number,
  H: number,
  cPrev: Float32Array,
  cOut: Float32Array,
  r: Float32Array,
): void {
  for (let b = 0; b < B; b++) {
    const base = gOff + b * 4 * H;
    const sb = b * H;
    for (let j = 0; j < H; j++) {
      const i = 1 / (1 + Math.exp(-g[base + j]));
      const f = 1 / (1 + Math.exp(-g[base + H + j]));
      const gg = Math.tanh(g[base + 2 * H + j]);
      const o = 1 / (1 + Math.exp(-g[base + 3 * H + j]));
      const cc = Math.fround(f * cPrev[sb + j] + i * gg);
      cOut[sb + j] = cc;
      r[sb + j] = o * Math.tanh(cc);
    }
  }
}

/** Runs the stack layer by layer; hn/cn slices of each layer are views into the outputs. */
function forwardStack(layers: EngineLayer[], run: StackRun, out: StackResult): void {
  let input = run.x;
  let hOff = 0;
  let cOff = 0;
  layers.forEach((engineLayer, l) => {
    const layer = engineLayer as JsLayer;
    const { numDirections: D, hiddenSize: H } = layer.desc;
    const Hout = layer.desc.projSize || H;
    const hLen = D * run.B * Hout;
    const cLen = D * run.B * H;
    const y = l === layers.length - 1 ? out.y : new Float32Array(run.T * run.B * D * Hout);
    layer.forward({
      x: input,
      T: run.T,
      B: run.B,
      h0: run.h0.subarray(hOff, hOff + hLen),
      c0: run.c0.subarray(cOff, cOff + cLen),
      lengths: run.lengths,
      y,
      hn: out.hn.subarray(hOff, hOff + hLen),
      cn: out.cn.subarray(cOff, cOff + cLen),
    });
    input = y;
    hOff += hLen;
    cOff += cLen;
  });
}

const trainScratch = new GemmScratch();
const jsGemm: Gemm = {
  prepare: (w, n, k): PreparedMatrix => packW(w, n, k),
  nt(M, a, w, c, accumulate) {
    const p = w as PackedW;
    if (!accumulate) c.fill(0, 0, M * p.n);
    gemmNT(M, a, 0, p.k, p, c, 0, p.n, trainScratch);
  },
  release: () => {},
  cells: jsCells,
};

export const jsEngine: Engine = {
  name: 'js',
  gemm: () => jsGemm,
  createLayer(desc: LayerDesc, dirs: DirectionParams[]): EngineLayer {
    return new JsLayer(desc, dirs);
  },
  forward: forwardStack,
  forwardAsync(layers, run) {
    // The pure-JS engine has no thread to move to: it runs on the next turn of the
    // event loop (inputs are copied now, so the caller may reuse them at once).
    const copy: StackRun = { ...run, x: run.x.slice(), h0: run.h0.slice(), c0: run.c0.slice(), lengths: run.lengths?.slice() ?? null };
    const last = layers[layers.length - 1] as JsLayer;
    const Hout = last.desc.projSize || last.desc.hiddenSize;
    return new Promise((resolve, reject) => {
      nextTask(() => {
        try {
          const out: StackResult = {
            y: new Float32Array(copy.T * copy.B * last.desc.numDirections * Hout),
            // the copies' lengths: the caller's arrays may be detached by now
            hn: new Float32Array(copy.h0.length),
            cn: new Float32Array(copy.c0.length),
          };
          forwardStack(layers, copy, out);
          resolve(out);
        } catch (err) {
          reject(err);
        }
      });
    });
  },
  step(layers, x, B, h, c, out) {
    checkStepMemory(x, h, c, out);
    forwardStack(layers, { x, T: 1, B, h0: h, c0: c, lengths: null, threads: 1 }, { y: out, hn: h, cn: c });
  },
};

// Backpropagation through time for every configuration forward supports: layers,
// directions, projection, both peephole kinds, clip (zero gradient where clipped),
// coupled gates, any activation, lengths and initial states. One implementation
// serves both engines; the heavy products go through the engine's GEMM.
import { configActivations, type LSTMConfig, type ResolvedActivation } from '../config.js';
import { layerInputSize } from '../params.js';
import { transpose2d } from '../tensor.js';
import type { Rng } from '../rng.js';

/** A right-hand matrix W [N, K] prepared once (packed) for C (+)= A · W^T. */
export interface PreparedMatrix {
  readonly n: number;
  readonly k: number;
}

/** The matrix products training needs, supplied by an engine. */
export interface Gemm {
  prepare(w: Float32Array, n: number, k: number): PreparedMatrix;
  /** C[M, N] (+)= A[M, K] · W^T, all row-major and contiguous. */
  nt(M: number, a: Float32Array, w: PreparedMatrix, c: Float32Array, accumulate: boolean): void;
  /** Free a prepared matrix now rather than whenever the GC gets to it. */
  release(w: PreparedMatrix): void;
  /**
   * Scratch memory reused across the calls of one model (ScratchBuffers.get): length
   * floats, contents unspecified, valid until the next request for the same key.
   */
  buffer?(key: string, length: number): Float32Array;
  /** The element-wise step kernels (native C++, or the pure-TS ones of the js engine). */
  cells: CellKernels;
  /**
   * Where the engine can skip the transposes backpropagation needs (else they are made
   * in TypeScript): prepare W from its transpose Wt [K, N] (the same matrix as
   * prepare(transpose(Wt), N, K)), and C[M, N] (+)= At^T · W^T from At [K, M]. Either
   * both or neither.
   */
  prepareT?(wt: Float32Array, n: number, k: number): PreparedMatrix;
  tn?(M: number, at: Float32Array, w: PreparedMatrix, c: Float32Array, accumulate: boolean): void;
  /** Sums of the columns of src [rows, cols], each in row order in double precision (as columnSums). */
  columnSums?(src: Float32Array, rows: number, cols: number, dst: Float32Array): void;
}

export interface CellSpec {
  hiddenSize: number;
  gate: ResolvedActivation;
  cell: ResolvedActivation;
  hidden: ResolvedActivation;
  clip: number;
  coupled: boolean;
  wCi?: Float32Array;
  wCf?: Float32Array;
  wCo?: Float32Array;
}

/** The element-wise part of one step, bound to one layer direction's tape. */
export interface StepCell {
  forward(row0: number, B: number, gates: Float32Array, cPrev: Float32Array, cNew: Float32Array, rNew: Float32Array): void;
  backward(row0: number, B: number, lengths: Int32Array | null, t: number, dr: Float32Array, dc: Float32Array, dgates: Float32Array, dwci: Float32Array | null, dwcf: Float32Array | null, dwco: Float32Array | null): void;
}

export interface CellKernels {
  acquire(spec: CellSpec, rows: number, tape: DirTape): StepCell;
  release(cell: StepCell): void;
}

export type Params = Map<string, Float32Array>;

export interface DirTape {
  /** Post-clip pre-activations zi, zf, zg, zo and activations i, f, g, o: [T*B, H] each (time-indexed rows). */
  z: Float32Array[];
  act: Float32Array[];
  /** 1 where a pre-activation was within [-clip, clip] (its gradient flows), per gate; null without clip. */
  pass: Uint8Array[] | null;
  cPrev: Float32Array; // [T*B, H]
  c: Float32Array; // [T*B, H]
  hc: Float32Array; // h(c): [T*B, H]
  hPrev: Float32Array; // [T*B, Hout]
  r: Float32Array | null; // o*h(c) before projection: [T*B, H]
}

interface LayerTape {
  x: Float32Array; // [T*B, In]
  dirs: DirTape[];
}

export interface TrainTape {
  T: number;
  B: number;
  lengths: Int32Array | null;
  layers: LayerTape[];
  /** The buffers taken from a TapePool, by key. */
  owned: Array<[string, Float32Array | Uint8Array]>;
  /** Set when a later tape reuses one of these buffers: its contents are gone. */
  overwritten: boolean;
}

type PoolEntry = { a: Float32Array | Uint8Array; tape: TrainTape };

/**
 * The buffers of a model's most recent finished tape (about 14 per layer, 4 MiB each on
 * S2), handed to its next forwardTrain instead of new ones: a training step then does
 * not allocate and page-fault them again. Every buffer taken is written in full before
 * it is read (y is zeroed where lengths leave rows unwritten).
 */
export class TapePool {
  private readonly free = new Map<string, PoolEntry>();

  f32(tape: TrainTape, key: string, length: number): Float32Array {
    return this.take(tape, key, length, Float32Array);
  }

  u8(tape: TrainTape, key: string, length: number): Uint8Array {
    return this.take(tape, key, length, Uint8Array);
  }

  /** The tape is done with (for now): its buffers may serve the next forwardTrain. */
  giveBack(tape: TrainTape): void {
    for (const [key, a] of tape.owned) this.free.set(key, { a, tape });
  }

  /**
   * Take a tape's buffers out of the pool if they were given back: true if it is intact
   * (also when it was never given back), false if a later forwardTrain has written into
   * any of them.
   */
  reclaim(tape: TrainTape): boolean {
    if (tape.overwritten) return false;
    for (const [key] of tape.owned) if (this.free.get(key)?.tape === tape) this.free.delete(key);
    return true;
  }

  clear(): void {
    this.free.clear();
  }

  /** The pooled buffer under key if it fits (its previous tape loses it), else a new one. */
  private take<A extends Float32Array | Uint8Array>(tape: TrainTape, key: string, length: number, Kind: new (n: number) => A): A {
    const e = this.free.get(key);
    this.free.delete(key);
    let out: A;
    if (e && e.a instanceof Kind && e.a.length === length) {
      e.tape.overwritten = true;
      out = e.a;
    } else {
      out = new Kind(length);
    }
    tape.owned.push([key, out]);
    return out;
  }
}

/**
 * An engine's Gemm.buffer: one growable buffer per key. Training asks for its large
 * temporaries here (16 MiB each on S2), so a training step neither allocates nor
 * page-faults them again.
 */
export class ScratchBuffers {
  private readonly buffers = new Map<string, Float32Array>();

  readonly get = (key: string, length: number): Float32Array => {
    let b = this.buffers.get(key);
    if (!b || b.length < length) {
      b = new Float32Array(length);
      this.buffers.set(key, b);
    }
    return b.subarray(0, length);
  };

  /** Drop every buffer (the model is disposed). */
  clear(): void {
    this.buffers.clear();
  }
}

const scratch = (gemm: Gemm, key: string, length: number): Float32Array =>
  gemm.buffer ? gemm.buffer(key, length) : new Float32Array(length);

// Gate pre-activations computed ahead per chunk of steps: 512 KiB, so the input
// projection's output is still in L2 when its steps read it (as in native inference).
const CHUNK_FLOATS = 1 << 17;

const suffix = (l: number, d: number): string => `_l${l}${d === 1 ? '_reverse' : ''}`;

/** The cell kernels' view of one layer direction (d: 0 forward, 1 reverse). */
function cellSpec(cfg: LSTMConfig, params: Params, l: number, d: number): CellSpec {
  const sfx = suffix(l, d);
  const acts = configActivations(cfg, d);
  return {
    hiddenSize: cfg.hiddenSize,
    gate: acts.gate,
    cell: acts.cell,
    hidden: acts.hidden,
    clip: cfg.clip,
    coupled: cfg.coupledInputForget,
    wCi: params.get(`weight_ci${sfx}`),
    wCf: params.get(`weight_cf${sfx}`),
    wCo: params.get(`weight_co${sfx}`),
  };
}

// The per-step bookkeeping of BPTT lives in small functions: called every step, they are
// optimised by the JIT after a few calls, where the same loops inline in the long
// forwardTrain/backwardTrain bodies ran in baseline code for most of a training step.

/** The new state of rows still inside their sequence, and their output at step tt. */
function advanceState(
  lengths: Int32Array | null, tt: number, B: number, H: number, Hout: number, D: number, d: number,
  cNew: Float32Array, hNew: Float32Array, c: Float32Array, h: Float32Array, y: Float32Array,
): void {
  if (lengths === null && D === 1) {
    // Every row advances and the step's outputs are one block of y.
    c.set(cNew);
    h.set(hNew);
    y.set(hNew, tt * B * Hout);
    return;
  }
  for (let b = 0; b < B; b++) {
    if (lengths !== null && tt >= lengths[b]) continue;
    const yOff = (tt * B + b) * D * Hout + d * Hout;
    for (let j = 0; j < H; j++) c[b * H + j] = cNew[b * H + j];
    for (let j = 0; j < Hout; j++) {
      const v = hNew[b * Hout + j];
      h[b * Hout + j] = v;
      y[yOff + j] = v;
    }
  }
}

/** dL/dh_t in total: carried from step t+1 plus this step's output gradient (0 on padded rows). */
function stepOutputGrad(
  lengths: Int32Array | null, tt: number, B: number, Hout: number, D: number, d: number,
  dh: Float32Array, dOut: Float32Array, dhTot: Float32Array,
): void {
  if (lengths === null && D === 1) {
    for (let i = 0, off = tt * B * Hout, n = B * Hout; i < n; i++) dhTot[i] = dh[i] + dOut[off + i];
    return;
  }
  for (let b = 0; b < B; b++) {
    const base = b * Hout;
    if (lengths !== null && tt >= lengths[b]) {
      dhTot.fill(0, base, base + Hout);
      continue;
    }
    const off = (tt * B + b) * D * Hout + d * Hout;
    for (let j = 0; j < Hout; j++) dhTot[base + j] = dh[base + j] + dOut[off + j];
  }
}

/** Carry dL/dh_{t-1} (and the full peephole's dL/dc_{t-1} share) to the previous step. */
function carryStateGrad(
  lengths: Int32Array | null, tt: number, B: number, H: number, Hout: number,
  dhPrev: Float32Array, dcPrevFull: Float32Array | null, dh: Float32Array, dc: Float32Array,
): void {
  if (lengths === null) {
    dh.set(dhPrev);
    if (dcPrevFull) for (let i = 0, n = B * H; i < n; i++) dc[i] += dcPrevFull[i];
    return;
  }
  for (let b = 0; b < B; b++) {
    if (tt >= lengths[b]) continue; // a padded step left the state untouched
    for (let j = 0; j < Hout; j++) dh[b * Hout + j] = dhPrev[b * Hout + j];
    if (dcPrevFull) for (let j = 0; j < H; j++) dc[b * H + j] += dcPrevFull[b * H + j];
  }
}

/** Sums of the columns of a [rows, cols] matrix, each in row order in double precision. */
function columnSums(m: Float32Array, rows: number, cols: number, dst: Float32Array): void {
  const sum = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) sum[c] += m[base + c];
  }
  dst.set(sum);
}

/**
 * Dropout masks for the outputs of layers 0..L-2 ([T*B, D*Hout] each): 0 where an element
 * is dropped (probability p), 1/(1-p) where it is kept; none when p is 0 or there is one
 * layer. Drawn from `stream()` (asked for only when there are masks) in layer order, so the
 * same state gives the same masks on every engine.
 */
export function dropoutMasks(cfg: LSTMConfig, rows: number, stream: () => Rng): Float32Array[] | null {
  const p = cfg.dropout;
  if (!(p > 0) || cfg.numLayers < 2) return null;
  const rng = stream();
  const keep = Math.fround(1 / (1 - p));
  const masks: Float32Array[] = [];
  for (let l = 0; l < cfg.numLayers - 1; l++) {
    const m = new Float32Array(rows * cfg.numDirections * cfg.outSize);
    rng.fillUniform(m, 0, 1);
    for (let i = 0; i < m.length; i++) m[i] = m[i] < p ? 0 : keep;
    masks.push(m);
  }
  return masks;
}

/** Forward that records what backward needs. x, h0, c0 time-major; returns y (last layer), hn, cn. */
export function forwardTrain(
  cfg: LSTMConfig,
  params: Params,
  gemm: Gemm,
  x: Float32Array,
  T: number,
  B: number,
  h0: Float32Array,
  c0: Float32Array,
  lengths: Int32Array | null,
  pool: TapePool = new TapePool(),
  masks: readonly Float32Array[] | null = null,
): { y: Float32Array; hn: Float32Array; cn: Float32Array; tape: TrainTape } {
  const H = cfg.hiddenSize;
  const Hout = cfg.outSize;
  const D = cfg.numDirections;
  const clip = cfg.clip;
  const hn = new Float32Array(cfg.numLayers * D * B * Hout);
  const cn = new Float32Array(cfg.numLayers * D * B * H);
  const tape: TrainTape = { T, B, lengths, layers: [], owned: [], overwritten: false };
  const f32 = (key: string, n: number): Float32Array => pool.f32(tape, key, n);
  let input = x;
  const rows = T * B;
  for (let l = 0; l < cfg.numLayers; l++) {
    const In = layerInputSize(cfg, l);
    // The last layer's output is returned to the caller: never a pooled buffer.
    let y: Float32Array;
    if (l === cfg.numLayers - 1) {
      y = new Float32Array(rows * D * Hout);
    } else {
      y = f32(`y${l}`, rows * D * Hout);
      // Rows past a sequence's end are not written; the next layer multiplies them by zero
      // gradients, so they must hold zeros, not a previous run's values (Infinity * 0).
      if (lengths) y.fill(0);
    }
    const layer: LayerTape = { x: input, dirs: [] };
    for (let d = 0; d < D; d++) {
      const sfx = suffix(l, d);
      const reverse = D === 2 ? d === 1 : cfg.direction === 'reverse';
      const wIh = gemm.prepare(params.get(`weight_ih${sfx}`)!, 4 * H, In);
      const wHh = gemm.prepare(params.get(`weight_hh${sfx}`)!, 4 * H, Hout);
      const wCh = cfg.peephole === 'full' ? gemm.prepare(params.get(`weight_ch${sfx}`)!, 4 * H, H) : null;
      const wHr = cfg.projSize > 0 ? gemm.prepare(params.get(`weight_hr${sfx}`)!, Hout, H) : null;
      const bIh = params.get(`bias_ih${sfx}`);
      const bHh = params.get(`bias_hh${sfx}`);
      let bias: Float32Array | null = null;
      if (bIh && bHh) {
        bias = new Float32Array(4 * H);
        for (let j = 0; j < 4 * H; j++) bias[j] = bIh[j] + bHh[j];
      }
      const chunk = Math.max(1, Math.min(T, Math.floor(CHUNK_FLOATS / (B * 4 * H))));
      const G = scratch(gemm, 'gates', chunk * B * 4 * H);
      const k = `${l}.${d}.`;
      const t: DirTape = {
        z: [0, 1, 2, 3].map((q) => f32(`${k}z${q}`, rows * H)),
        act: [0, 1, 2, 3].map((q) => f32(`${k}a${q}`, rows * H)),
        pass: clip > 0 ? [0, 1, 2, 3].map((q) => pool.u8(tape, `${k}p${q}`, rows * H)) : null,
        cPrev: f32(`${k}cPrev`, rows * H),
        c: f32(`${k}c`, rows * H),
        hc: f32(`${k}hc`, rows * H),
        hPrev: f32(`${k}hPrev`, rows * Hout),
        r: wHr ? f32(`${k}r`, rows * H) : null,
      };
      const h = h0.slice((l * D + d) * B * Hout, (l * D + d + 1) * B * Hout);
      const c = c0.slice((l * D + d) * B * H, (l * D + d + 1) * B * H);
      const kernel = gemm.cells.acquire(cellSpec(cfg, params, l, d), rows, t);
      const hNew = new Float32Array(B * Hout);
      const rNew = new Float32Array(B * H);
      const cNew = new Float32Array(B * H);
      for (let done = 0; done < T; done += chunk) {
        // Steps [lo, lo + n) in processing order: biases and input projection first.
        const n = Math.min(chunk, T - done);
        const lo = reverse ? T - done - n : done;
        const Gn = G.subarray(0, n * B * 4 * H);
        if (bias) for (let rr = 0; rr < n * B; rr++) Gn.set(bias, rr * 4 * H);
        else Gn.fill(0);
        gemm.nt(n * B, input.subarray(lo * B * In, (lo + n) * B * In), wIh, Gn, true);
        for (let s = 0; s < n; s++) {
          const tt = reverse ? lo + n - 1 - s : lo + s;
          // This step's gates: the input projection already in G, plus the recurrent products.
          const z = G.subarray((tt - lo) * B * 4 * H, (tt - lo + 1) * B * 4 * H);
          gemm.nt(B, h, wHh, z, true);
          if (wCh) gemm.nt(B, c, wCh, z, true);
          kernel.forward(tt * B, B, z, c, cNew, rNew);
          t.hPrev.set(h, tt * B * Hout);
          if (wHr) {
            t.r!.set(rNew, tt * B * H);
            gemm.nt(B, rNew, wHr, hNew, false);
          } else {
            hNew.set(rNew);
          }
          advanceState(lengths, tt, B, H, Hout, D, d, cNew, hNew, c, h, y);
        }
      }
      hn.set(h, (l * D + d) * B * Hout);
      cn.set(c, (l * D + d) * B * H);
      layer.dirs.push(t);
      for (const w of [wIh, wHh, wCh, wHr]) if (w) gemm.release(w);
      gemm.cells.release(kernel);
    }
    tape.layers.push(layer);
    // Dropout between layers: the next layer reads (and its weight gradient sees) the
    // masked output; hn and cn stay as the layer left them.
    const mask = masks?.[l];
    if (mask) for (let i = 0; i < y.length; i++) y[i] *= mask[i];
    input = y;
  }
  return { y: input, hn, cn, tape };
}

export interface Gradients {
  input: Float32Array;
  h0: Float32Array;
  c0: Float32Array;
  params: Map<string, Float32Array>;
}

/** Gradients of sum(y*dy) + sum(hn*dhn) + sum(cn*dcn) (time-major dy). */
export function backwardTrain(
  cfg: LSTMConfig,
  params: Params,
  gemm: Gemm,
  tape: TrainTape,
  dy: Float32Array,
  dhn: Float32Array,
  dcn: Float32Array,
  masks: readonly Float32Array[] | null = null,
): Gradients {
  // W [N, K] prepared from its transpose Wt [K, N], and C (+)= At^T · W^T from At [K, M]:
  // directly where the engine can, else through a transpose.
  const prepareT = (wt: Float32Array, n: number, k: number): PreparedMatrix =>
    gemm.prepareT ? gemm.prepareT(wt, n, k) : gemm.prepare(transpose2d(wt, k, n), n, k);
  // A left operand given transposed, At [K, M]: kept as it is for tn, or transposed once
  // here (it may serve several products).
  type Left = { M: number; at: Float32Array; a: null } | { M: number; at: null; a: Float32Array };
  const leftT = (at: Float32Array, K: number, M: number): Left =>
    gemm.tn ? { M, at, a: null } : { M, at: null, a: transpose2d(at, K, M) };
  const mulT = (left: Left, w: PreparedMatrix, c: Float32Array): void => {
    if (left.at) gemm.tn!(left.M, left.at, w, c, false);
    else gemm.nt(left.M, left.a, w, c, false);
  };
  const { T, B, lengths } = tape;
  const H = cfg.hiddenSize;
  const Hout = cfg.outSize;
  const D = cfg.numDirections;
  const rows = T * B;
  const grads = new Map<string, Float32Array>();
  const dh0 = new Float32Array(cfg.numLayers * D * B * Hout);
  const dc0 = new Float32Array(cfg.numLayers * D * B * H);
  let dOut = dy; // gradient w.r.t. this layer's output [T*B, D*Hout]
  let dInput = new Float32Array(0);
  for (let l = cfg.numLayers - 1; l >= 0; l--) {
    const In = layerInputSize(cfg, l);
    const layer = tape.layers[l];
    // Through the dropout after this layer: the gradient of its unmasked output.
    const mask = masks?.[l];
    if (mask) for (let i = 0; i < dOut.length; i++) dOut[i] *= mask[i];
    dInput = new Float32Array(rows * In);
    for (let d = 0; d < D; d++) {
      const sfx = suffix(l, d);
      const t = layer.dirs[d];
      const reverse = D === 2 ? d === 1 : cfg.direction === 'reverse';
      const spec = cellSpec(cfg, params, l, d);
      const wHhT = prepareT(params.get(`weight_hh${sfx}`)!, Hout, 4 * H);
      const wChT = cfg.peephole === 'full' ? prepareT(params.get(`weight_ch${sfx}`)!, H, 4 * H) : null;
      const wHrT = cfg.projSize > 0 ? prepareT(params.get(`weight_hr${sfx}`)!, H, Hout) : null;
      // Written in full by the step loop (zero rows where a sequence has ended).
      const dG = scratch(gemm, 'dgates', rows * 4 * H);
      const dHtot = cfg.projSize > 0 ? new Float32Array(rows * Hout) : null;
      const dwci = spec.wCi ? new Float32Array(H) : null;
      const dwcf = spec.wCf ? new Float32Array(H) : null;
      const dwco = spec.wCo ? new Float32Array(H) : null;
      const dh = dhn.slice((l * D + d) * B * Hout, (l * D + d + 1) * B * Hout);
      const dc = dcn.slice((l * D + d) * B * H, (l * D + d + 1) * B * H);
      const dhTot = new Float32Array(B * Hout);
      const dr = new Float32Array(B * H);
      const dhPrev = new Float32Array(B * Hout);
      const dcPrevFull = new Float32Array(B * H);
      const kernel = gemm.cells.acquire(spec, rows, t);
      for (let s = T - 1; s >= 0; s--) {
        const tt = reverse ? T - 1 - s : s;
        stepOutputGrad(lengths, tt, B, Hout, D, d, dh, dOut, dhTot);
        if (dHtot) {
          dHtot.set(dhTot, tt * B * Hout);
          gemm.nt(B, dhTot, wHrT!, dr, false);
        } else {
          dr.set(dhTot);
        }
        // This step's gate gradients, written straight into dG (zero on padded rows).
        const dgRow = dG.subarray(tt * B * 4 * H, (tt + 1) * B * 4 * H);
        kernel.backward(tt * B, B, lengths, tt, dr, dc, dgRow, dwci, dwcf, dwco);
        gemm.nt(B, dgRow, wHhT, dhPrev, false);
        if (wChT) gemm.nt(B, dgRow, wChT, dcPrevFull, false);
        carryStateGrad(lengths, tt, B, H, Hout, dhPrev, wChT ? dcPrevFull : null, dh, dc);
      }
      gemm.cells.release(kernel);
      dh0.set(dh, (l * D + d) * B * Hout);
      dc0.set(dc, (l * D + d) * B * H);

      // Weight gradients: one GEMM each over all steps. dW [4H, In] = dG^T · X with
      // At = dG [rows, 4H] and W = X^T, prepared from X [rows, In].
      const once = (w: PreparedMatrix, fn: (w: PreparedMatrix) => void): void => {
        try {
          fn(w);
        } finally {
          gemm.release(w);
        }
      };
      const dGleft = leftT(dG, rows, 4 * H);
      const wgrad = (src: Float32Array, cols: number): Float32Array => {
        const out = new Float32Array(4 * H * cols);
        once(prepareT(src, cols, rows), (w) => mulT(dGleft, w, out));
        return out;
      };
      for (const w of [wHhT, wChT, wHrT]) if (w) gemm.release(w);
      grads.set(`weight_ih${sfx}`, wgrad(layer.x, In));
      grads.set(`weight_hh${sfx}`, wgrad(t.hPrev, Hout));
      if (cfg.peephole === 'full') grads.set(`weight_ch${sfx}`, wgrad(t.cPrev, H));
      if (cfg.bias) {
        const db = new Float32Array(4 * H);
        if (gemm.columnSums) gemm.columnSums(dG, rows, 4 * H, db);
        else columnSums(dG, rows, 4 * H, db);
        grads.set(`bias_ih${sfx}`, db);
        grads.set(`bias_hh${sfx}`, db.slice());
      }
      if (dHtot) {
        const out = new Float32Array(Hout * H);
        once(prepareT(t.r!, H, rows), (w) => mulT(leftT(dHtot, rows, Hout), w, out));
        grads.set(`weight_hr${sfx}`, out);
      }
      if (dwci) {
        grads.set(`weight_ci${sfx}`, dwci);
        grads.set(`weight_cf${sfx}`, dwcf!);
        grads.set(`weight_co${sfx}`, dwco!);
      }
      // Input gradient: dX += dG · W_ih.
      once(prepareT(params.get(`weight_ih${sfx}`)!, In, 4 * H), (w) => gemm.nt(rows, dG, w, dInput, true));
    }
    dOut = dInput;
  }
  return { input: dInput, h0: dh0, c0: dc0, params: grads };
}

/**
 * Blocked fp32 GEMM for the pure-JS engine: C[m, n] += sum_k A[m, k] * W[n, k].
 *
 * V8 does not vectorise, so speed comes from register blocking (4 rows x 4 columns,
 * 16 accumulators) and from walking both operands with one incrementing index:
 * W is packed once into 4-column panels laid out [panel][k][4], and A is packed
 * per call into 4-row panels [panel][k][4].
 */

export const NR = 4;
export const MR = 4;

/** W [N, K] packed into ceil(N/4) panels of [K][4], zero-padded past N. */
export interface PackedW {
  n: number;
  k: number;
  data: Float32Array;
}

export function packW(w: Float32Array, n: number, k: number): PackedW {
  const panels = Math.ceil(n / NR);
  const data = new Float32Array(panels * k * NR);
  for (let r = 0; r < n; r++) {
    const base = Math.floor(r / NR) * k * NR + (r % NR);
    const src = r * k;
    for (let c = 0; c < k; c++) data[base + c * NR] = w[src + c];
  }
  return { n, k, data };
}

/** Pack rows [m0, m0+4) of A (row stride lda) into ap as [k][4]. */
function packA4(a: Float32Array, aOff: number, lda: number, k: number, ap: Float32Array): void {
  const r0 = aOff;
  const r1 = r0 + lda;
  const r2 = r1 + lda;
  const r3 = r2 + lda;
  for (let c = 0, p = 0; c < k; c++, p += 4) {
    ap[p] = a[r0 + c];
    ap[p + 1] = a[r1 + c];
    ap[p + 2] = a[r2 + c];
    ap[p + 3] = a[r3 + c];
  }
}

/** Scratch for packed A panels; grown on demand, reused across calls. */
export class GemmScratch {
  ap = new Float32Array(0);
  get(k: number): Float32Array {
    if (this.ap.length < k * MR) this.ap = new Float32Array(k * MR);
    return this.ap;
  }
}

/**
 * C[cOff + m*ldc + n] += sum_k A[aOff + m*lda + k] * W[n, k] for m < M, n < W.n.
 */
export function gemmNT(
  M: number,
  a: Float32Array,
  aOff: number,
  lda: number,
  w: PackedW,
  c: Float32Array,
  cOff: number,
  ldc: number,
  scratch: GemmScratch,
): void {
  const K = w.k;
  const N = w.n;
  const panels = Math.ceil(N / NR);
  const fullPanels = Math.floor(N / NR);
  const wp = w.data;
  let m = 0;
  if (M >= MR) {
    const ap = scratch.get(K);
    for (; m + MR <= M; m += MR) {
      packA4(a, aOff + m * lda, lda, K, ap);
      const c0 = cOff + m * ldc;
      const c1 = c0 + ldc;
      const c2 = c1 + ldc;
      const c3 = c2 + ldc;
      for (let p = 0; p < fullPanels; p++) {
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
        let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
        let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
        let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
        let q = p * K * NR;
        const end = K * MR;
        for (let i = 0; i < end; i += 4, q += 4) {
          const y0 = wp[q];
          const y1 = wp[q + 1];
          const y2 = wp[q + 2];
          const y3 = wp[q + 3];
          let x = ap[i];
          s00 += x * y0; s01 += x * y1; s02 += x * y2; s03 += x * y3;
          x = ap[i + 1];
          s10 += x * y0; s11 += x * y1; s12 += x * y2; s13 += x * y3;
          x = ap[i + 2];
          s20 += x * y0; s21 += x * y1; s22 += x * y2; s23 += x * y3;
          x = ap[i + 3];
          s30 += x * y0; s31 += x * y1; s32 += x * y2; s33 += x * y3;
        }
        const n = p * NR;
        c[c0 + n] += s00; c[c0 + n + 1] += s01; c[c0 + n + 2] += s02; c[c0 + n + 3] += s03;
        c[c1 + n] += s10; c[c1 + n + 1] += s11; c[c1 + n + 2] += s12; c[c1 + n + 3] += s13;
        c[c2 + n] += s20; c[c2 + n + 1] += s21; c[c2 + n + 2] += s22; c[c2 + n + 3] += s23;
        c[c3 + n] += s30; c[c3 + n + 1] += s31; c[c3 + n + 2] += s32; c[c3 + n + 3] += s33;
      }
      if (fullPanels < panels) {
        for (let r = 0; r < MR; r++) tailColumns(a, aOff + (m + r) * lda, w, fullPanels, c, cOff + (m + r) * ldc);
      }
    }
  }
  for (; m < M; m++) gemvRow(a, aOff + m * lda, w, c, cOff + m * ldc);
}

/** One row of A against every panel of W: the B = 1 path. */
function gemvRow(a: Float32Array, aRow: number, w: PackedW, c: Float32Array, cRow: number): void {
  const K = w.k;
  const fullPanels = Math.floor(w.n / NR);
  const wp = w.data;
  for (let p = 0; p < fullPanels; p++) {
    let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    let q = p * K * NR;
    for (let k = 0; k < K; k++, q += 4) {
      const x = a[aRow + k];
      s0 += x * wp[q];
      s1 += x * wp[q + 1];
      s2 += x * wp[q + 2];
      s3 += x * wp[q + 3];
    }
    const n = cRow + p * NR;
    c[n] += s0;
    c[n + 1] += s1;
    c[n + 2] += s2;
    c[n + 3] += s3;
  }
  if (fullPanels * NR < w.n) tailColumns(a, aRow, w, fullPanels, c, cRow);
}

/** The last, partial panel (N not a multiple of 4) for one row. */
function tailColumns(a: Float32Array, aRow: number, w: PackedW, panel: number, c: Float32Array, cRow: number): void {
  const K = w.k;
  const base = panel * K * NR;
  for (let j = 0; panel * NR + j < w.n; j++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += a[aRow + k] * w.data[base + k * NR + j];
    c[cRow + panel * NR + j] += s;
  }
}

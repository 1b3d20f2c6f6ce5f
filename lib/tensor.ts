import { LstmError, describe } from './errors.js';

/** Dense row-major float32 tensor. Inputs are never mutated by the library (unless the caller points an out tensor at them). */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

/** Largest element count any tensor may have: both engines index with 32-bit signed sizes per dimension. */
export const MAX_ELEMENTS = 2 ** 31 - 1;

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Product of a shape, checked for overflow past MAX_ELEMENTS. */
export function shapeSize(shape: readonly number[], name: string): number {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (n > MAX_ELEMENTS) {
      throw new LstmError('LSTM_SHAPE', `${name}: shape ${shapeStr(shape)} has more than ${MAX_ELEMENTS} elements`);
    }
  }
  return n;
}

function isDim(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** More dimensions than any tensor the library reads or writes (PyTorch allows 64 too). */
export const MAX_RANK = 64;

/**
 * Validate a user-supplied tensor: a Float32Array whose length matches a shape of
 * non-negative integers. Detached buffers show up as length 0 and fail the match.
 * The result holds the data and a copy of the shape as they were validated: each is read
 * from the caller's object once, so a getter or Proxy that answers differently on a
 * second read cannot make the engines use a shape that was never checked.
 */
export function checkTensor(value: unknown, name: string): Tensor {
  if (value === null || typeof value !== 'object' || ArrayBuffer.isView(value)) {
    throw new LstmError(
      'LSTM_SHAPE',
      `${name}: expected a tensor { data: Float32Array, shape: number[] }, got ${describe(value)}` +
        (ArrayBuffer.isView(value) ? ' (a bare array has no shape: pass { data, shape })' : ''),
    );
  }
  const { data, shape: given } = value as { data?: unknown; shape?: unknown };
  if (!(data instanceof Float32Array)) {
    throw new LstmError('LSTM_DTYPE', `${name}.data: expected a Float32Array, got ${describe(data)}`);
  }
  const shape = Array.isArray(given) ? snapshot(given, name) : null;
  if (shape === null) {
    throw new LstmError(
      'LSTM_SHAPE',
      `${name}.shape: expected an array of non-negative integers, got ${Array.isArray(given) ? `[${(given as unknown[]).map(describe).join(', ')}]` : describe(given)}`,
    );
  }
  const n = shapeSize(shape, name);
  if (n !== data.length) {
    throw new LstmError(
      'LSTM_SHAPE',
      `${name}: shape ${shapeStr(shape)} needs ${n} elements but data has ${data.length}` +
        (data.length === 0 && n > 0 ? ' (is its ArrayBuffer detached?)' : ''),
    );
  }
  return { data, shape: shape as number[] };
}

/**
 * The entries of an array, each read once (its length too), in a plain array of its own;
 * null if one is not a dimension (a non-negative safe integer).
 */
function snapshot(arr: readonly unknown[], name: string): number[] | null {
  const n = arr.length;
  if (n > MAX_RANK) throw new LstmError('LSTM_SHAPE', `${name}.shape: expected at most ${MAX_RANK} dimensions, got ${n}`);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const d = arr[i];
    if (!isDim(d)) return null;
    out.push(d);
  }
  return out;
}

/** Whether a shares memory with any of others. */
export function sharesMemory(a: Float32Array, others: readonly Float32Array[]): boolean {
  return others.some((b) => overlaps(a, b));
}

function overlaps(a: Float32Array, b: Float32Array): boolean {
  return (
    a.length > 0 && b.length > 0 && a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength
  );
}

/**
 * A streaming step updates h and c in place and writes out while x is still read: out may
 * not overlap x, h or c, nor h overlap c (LSTM_SHAPE). x may overlap the state (the
 * output fed back as the next input). The engines check it (the native addon from the
 * arrays' addresses, the others here).
 */
export function checkStepMemory(x: Float32Array, h: Float32Array, c: Float32Array, out: Float32Array): void {
  if (overlaps(out, x) || overlaps(out, h) || overlaps(out, c)) {
    throw new LstmError('LSTM_SHAPE', 'out: must not share memory with x or the state');
  }
  if (overlaps(h, c)) throw new LstmError('LSTM_SHAPE', 'state.h and state.c must not share memory');
}

/** Copy [A, B, F] into [B, A, F] (swaps the two leading axes), into dst when given. */
export function swapLeadingAxes(src: Float32Array, a: number, b: number, f: number, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      const s = (i * b + j) * f;
      dst.set(src.subarray(s, s + f), (j * a + i) * f);
    }
  }
  return dst;
}

/** Transpose a row-major [rows, cols] matrix (into dst, [cols, rows]). */
export function transpose2d(src: ArrayLike<number>, rows: number, cols: number, dst = new Float32Array(rows * cols)): Float32Array {
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) dst[c * rows + r] = src[base + c];
  }
  return dst;
}

/**
 * A strided view of src read out in row-major order: element (i0, i1, ...) of `dims` is
 * src[offset + i0 * strides[0] + i1 * strides[1] + ...]. A slice, a transpose, or a saved
 * tensor's view of its storage.
 */
export function gatherStrided<T extends Float32Array | Float64Array>(src: ArrayLike<number>, offset: number, dims: readonly number[], strides: readonly number[], dst: T): T {
  const rank = dims.length;
  const idx = new Array<number>(rank).fill(0);
  for (let i = 0; i < dst.length; i++) {
    let o = offset;
    for (let k = 0; k < rank; k++) o += idx[k] * strides[k];
    dst[i] = src[o];
    for (let k = rank - 1; k >= 0; k--) {
      if (++idx[k] < dims[k]) break;
      idx[k] = 0;
    }
  }
  return dst;
}

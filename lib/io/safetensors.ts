import { LstmError, describe } from '../errors.js';
import { MAX_ELEMENTS, checkTensor, shapeStr, type Tensor } from '../tensor.js';

/** dtypes read (converted to float32) and written. */
export type Dtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL';

export interface SafetensorsTensor extends Tensor {
  /** The dtype stored in the file; data is always float32. */
  dtype: Dtype;
}

/** Bytes per element of each dtype (also the torch.save reader's). */
export const DTYPE_SIZE: Record<Dtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

/** The header may not be larger than this (the reference implementation's own limit). */
const MAX_HEADER = 100_000_000;

function fmtErr(msg: string): LstmError {
  return new LstmError('LSTM_FORMAT', `safetensors: ${msg}`);
}

/** IEEE half-precision bits to a number (also used by the ONNX reader). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

/** `count` little-endian elements of `dtype` at `off`, as float32 (also read by the torch.save reader). */
export function decodeTensorBytes(view: DataView, off: number, count: number, dtype: Dtype): Float32Array {
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(off + 4 * i, true);
      break;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(off + 8 * i, true);
      break;
    case 'F16':
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(off + 2 * i, true));
      break;
    case 'BF16':
      for (let i = 0; i < count; i++) {
        u32[0] = view.getUint16(off + 2 * i, true) << 16;
        out[i] = f32[0];
      }
      break;
    case 'I64':
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(off + 8 * i, true));
      break;
    case 'U64':
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigUint64(off + 8 * i, true));
      break;
    case 'I32':
      for (let i = 0; i < count; i++) out[i] = view.getInt32(off + 4 * i, true);
      break;
    case 'U32':
      for (let i = 0; i < count; i++) out[i] = view.getUint32(off + 4 * i, true);
      break;
    case 'I16':
      for (let i = 0; i < count; i++) out[i] = view.getInt16(off + 2 * i, true);
      break;
    case 'U16':
      for (let i = 0; i < count; i++) out[i] = view.getUint16(off + 2 * i, true);
      break;
    case 'I8':
      for (let i = 0; i < count; i++) out[i] = view.getInt8(off + i);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < count; i++) out[i] = view.getUint8(off + i);
      break;
  }
  return out;
}

/** decodeTensorBytes from bytes[at..] in either byte order: big-endian elements are swapped first. */
export function decodeNumbers(bytes: Uint8Array, at: number, count: number, dtype: Dtype, bigEndian: boolean): Float32Array {
  const size = DTYPE_SIZE[dtype];
  if (!bigEndian || size === 1) return decodeTensorBytes(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), at, count, dtype);
  const swapped = new Uint8Array(count * size);
  for (let i = 0; i < count; i++) {
    for (let b = 0; b < size; b++) swapped[i * size + b] = bytes[at + (i + 1) * size - 1 - b];
  }
  return decodeTensorBytes(new DataView(swapped.buffer), 0, count, dtype);
}

function encode(view: DataView, off: number, data: Float32Array, dtype: Dtype): void {
  const n = data.length;
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) view.setFloat32(off + 4 * i, data[i], true);
      break;
    case 'F64':
      for (let i = 0; i < n; i++) view.setFloat64(off + 8 * i, data[i], true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) view.setUint16(off + 2 * i, floatToHalf(data[i]), true);
      break;
    case 'BF16':
      for (let i = 0; i < n; i++) {
        f32[0] = data[i];
        const x = u32[0];
        // round to nearest even; a NaN stays a (quiet) NaN
        const bf = Number.isNaN(data[i]) ? 0x7fc0 | ((x >>> 16) & 0x8000) : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
        view.setUint16(off + 2 * i, bf, true);
      }
      break;
    case 'I64':
      for (let i = 0; i < n; i++) view.setBigInt64(off + 8 * i, BigInt(intOf(data[i], dtype)), true);
      break;
    case 'U64':
      for (let i = 0; i < n; i++) view.setBigUint64(off + 8 * i, BigInt(intOf(data[i], dtype)), true);
      break;
    case 'I32':
      for (let i = 0; i < n; i++) view.setInt32(off + 4 * i, intOf(data[i], dtype), true);
      break;
    case 'U32':
      for (let i = 0; i < n; i++) view.setUint32(off + 4 * i, intOf(data[i], dtype), true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) view.setInt16(off + 2 * i, intOf(data[i], dtype), true);
      break;
    case 'U16':
      for (let i = 0; i < n; i++) view.setUint16(off + 2 * i, intOf(data[i], dtype), true);
      break;
    case 'I8':
      for (let i = 0; i < n; i++) view.setInt8(off + i, intOf(data[i], dtype));
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < n; i++) view.setUint8(off + i, intOf(data[i], dtype));
      break;
  }
}

function intOf(v: number, dtype: Dtype): number {
  if (!Number.isInteger(v)) throw new LstmError('LSTM_DTYPE', `saveSafetensors: value ${v} cannot be stored as ${dtype}`);
  return v;
}

/**
 * Parse a safetensors file. Every tensor comes back as float32 (F16, BF16, F64 and
 * integer dtypes are converted) with its stored dtype. Malformed files throw
 * LSTM_FORMAT; nothing is allocated beyond what the file's own bytes justify.
 */
export function loadSafetensors(bytes: Uint8Array): { tensors: Record<string, SafetensorsTensor>; metadata: Record<string, string> } {
  if (!(bytes instanceof Uint8Array)) throw new LstmError('LSTM_FORMAT', `loadSafetensors: expected a Uint8Array, got ${describe(bytes)}`);
  if (bytes.byteLength < 8) throw fmtErr(`file of ${bytes.byteLength} bytes is shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = view.getBigUint64(0, true);
  if (n64 > BigInt(Math.min(MAX_HEADER, bytes.byteLength - 8))) {
    throw fmtErr(`header length ${n64} exceeds the ${bytes.byteLength - 8} bytes after it (or the ${MAX_HEADER}-byte limit)`);
  }
  const n = Number(n64);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (err) {
    throw fmtErr(`header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw fmtErr('header is not a JSON object');
  const dataStart = 8 + n;
  const dataLen = bytes.byteLength - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: Record<string, SafetensorsTensor> = {};
  const ranges: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw fmtErr('__metadata__ is not an object of strings');
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw fmtErr(`__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (entry === null || typeof entry !== 'object') throw fmtErr(`tensor '${name}': entry is not an object`);
    const { dtype, shape, data_offsets: offs } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof dtype !== 'string' || !Object.prototype.hasOwnProperty.call(DTYPE_SIZE, dtype)) {
      throw fmtErr(`tensor '${name}': unsupported dtype ${describe(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0)) {
      throw fmtErr(`tensor '${name}': shape must be an array of non-negative integers`);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0)) {
      throw fmtErr(`tensor '${name}': data_offsets must be two non-negative integers`);
    }
    const [begin, end] = offs as [number, number];
    if (begin > end || end > dataLen) throw fmtErr(`tensor '${name}': data_offsets [${begin}, ${end}] fall outside the ${dataLen} data bytes`);
    let count = 1;
    for (const d of shape as number[]) {
      count *= d;
      if (count > MAX_ELEMENTS) throw fmtErr(`tensor '${name}': shape ${shapeStr(shape as number[])} is too large`);
    }
    const size = DTYPE_SIZE[dtype as Dtype];
    if (count * size !== end - begin) {
      throw fmtErr(`tensor '${name}': shape ${shapeStr(shape as number[])} of ${dtype} needs ${count * size} bytes, data_offsets give ${end - begin}`);
    }
    ranges.push([begin, end, name]);
    tensors[name] = { data: decodeTensorBytes(view, dataStart + begin, count, dtype as Dtype), shape: (shape as number[]).slice(), dtype: dtype as Dtype };
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i][0] < ranges[i - 1][1]) throw fmtErr(`tensors '${ranges[i - 1][2]}' and '${ranges[i][2]}' overlap`);
  }
  return { tensors, metadata };
}

/**
 * Write tensors as safetensors, laid out as the reference implementation does
 * (larger dtypes first, then by name; header padded with spaces to 8 bytes), so a
 * file it wrote and we read writes back byte for byte.
 */
export function saveSafetensors(tensors: Record<string, Tensor & { dtype?: Dtype }>, metadata?: Record<string, string>): Uint8Array {
  if (tensors === null || typeof tensors !== 'object') throw new LstmError('LSTM_FORMAT', `saveSafetensors: expected an object of tensors, got ${describe(tensors)}`);
  const entries = Object.keys(tensors).map((name) => {
    const raw = tensors[name];
    const t = checkTensor(raw, `tensors['${name}']`);
    const dtype = (raw as { dtype?: unknown }).dtype ?? 'F32';
    if (typeof dtype !== 'string' || !Object.prototype.hasOwnProperty.call(DTYPE_SIZE, dtype)) {
      throw new LstmError('LSTM_DTYPE', `tensors['${name}'].dtype: unsupported ${describe(dtype)}`);
    }
    return { name, t, dtype: dtype as Dtype, size: DTYPE_SIZE[dtype as Dtype] };
  });
  if (entries.some((e) => e.name === '__metadata__')) throw new LstmError('LSTM_FORMAT', 'saveSafetensors: "__metadata__" is reserved');
  entries.sort((a, b) => b.size - a.size || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== 'object') throw new LstmError('LSTM_FORMAT', `saveSafetensors: metadata must be an object of strings`);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new LstmError('LSTM_FORMAT', `saveSafetensors: metadata.${k} must be a string, got ${describe(v)}`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const e of entries) {
    const bytes = e.t.data.length * e.size;
    header[e.name] = { dtype: e.dtype, shape: e.t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded !== json.length) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let pos = 8 + json.length;
  for (const e of entries) {
    encode(view, pos, e.t.data, e.dtype);
    pos += e.t.data.length * e.size;
  }
  return out;
}

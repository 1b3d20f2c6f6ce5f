/**
 * numpy's files: `.npy` (one array: a magic string, a header that is a Python dict literal,
 * the raw data) and `.npz` (a zip of `.npy` files, stored by np.savez, deflated by
 * np.savez_compressed). The header is parsed as data, never evaluated; object arrays (which
 * hold a pickle), structured and complex dtypes are not read (loadNpy refuses them, loadNpz
 * lists them as unread). Every number type is read as float32.
 */
import { LstmError, describe } from '../errors.js';
import { MAX_ELEMENTS, checkTensor, shapeStr, type Tensor } from '../tensor.js';
import { DTYPE_SIZE, decodeNumbers, type Dtype } from './safetensors.js';
import { readZip, writeZip, zipEntryBytes } from './torch.js';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

function fail(what: string, msg: string): LstmError {
  return new LstmError('LSTM_FORMAT', `${what}: ${msg}`);
}

/** numpy's type codes (kind and size) as the dtypes read here. */
const DTYPES: Record<string, Dtype> = {
  f2: 'F16', f4: 'F32', f8: 'F64',
  i1: 'I8', i2: 'I16', i4: 'I32', i8: 'I64',
  u1: 'U8', u2: 'U16', u4: 'U32', u8: 'U64',
  b1: 'BOOL',
};

export interface NpzFile {
  /** Every array of numbers by its name (the key given to np.savez), as float32. */
  tensors: Record<string, Tensor>;
  /**
   * Arrays this reader does not read, by name, with the reason: object arrays (a pickle),
   * structured and complex dtypes. The rest of the file still reads.
   */
  unread: Record<string, string>;
}

/** A dtype this reader does not read: the reason, which loadNpz lists and loadNpy throws. */
class Unreadable {
  constructor(readonly reason: string) {}
}

/** Whether bytes start with the .npy magic string. */
export function isNpy(bytes: Uint8Array): boolean {
  return bytes.length >= 6 && MAGIC.every((b, i) => bytes[i] === b);
}

/** A `.npy` file (np.save) as a float32 tensor of its shape; C or Fortran order. */
export function loadNpy(bytes: Uint8Array): Tensor {
  const t = readNpy(bytes, 'npy');
  if (t instanceof Unreadable) throw fail('npy', t.reason);
  return t;
}

function readNpy(bytes: Uint8Array, what: string): Tensor | Unreadable {
  if (!(bytes instanceof Uint8Array)) throw new LstmError('LSTM_FORMAT', `${what}: expected the file's bytes as a Uint8Array, got ${describe(bytes)}`);
  if (!isNpy(bytes)) throw fail(what, 'not a .npy file (no \\x93NUMPY magic string)');
  if (bytes.length < 10) throw fail(what, `a file of ${bytes.length} bytes`);
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let at: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    at = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw fail(what, `a file of ${bytes.length} bytes`);
    headerLen = view.getUint32(8, true);
    at = 12;
  } else {
    throw fail(what, `format version ${major}.${bytes[7]} (1.0 to 3.0 are read)`);
  }
  if (at + headerLen > bytes.length) throw fail(what, `a header of ${headerLen} bytes runs past the file's ${bytes.length}`);
  // versions 1 and 2 are latin-1, version 3 UTF-8; the keys and values read here are ASCII
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(at, at + headerLen));
  at += headerLen;
  const dict = parseHeader(header, what);
  const descr = dict.get('descr');
  const fortran = dict.get('fortran_order');
  const shape = dict.get('shape');
  if (descr === undefined) throw fail(what, "the header has no descr");
  if (typeof descr !== 'string') return new Unreadable('a structured dtype is not read (save each field as its own array)');
  if (typeof fortran !== 'boolean') throw fail(what, "the header's fortran_order is missing or not True / False");
  if (!Array.isArray(shape)) throw fail(what, "the header's shape is missing or not a tuple");
  const m = /^([<>|=])([a-zA-Z])(\d+)$/.exec(descr);
  const dtype = m ? DTYPES[`${m[2]}${m[3]}`] : undefined;
  if (!m || !dtype) {
    const kind = /O/.test(descr) ? 'an object array (a pickle, which is never run here; save numbers)' : /[cC]/.test(descr[1] ?? '') ? 'complex numbers' : `the type '${descr}'`;
    return new Unreadable(`${kind} cannot be read: only integers, booleans and 16-, 32- and 64-bit floats`);
  }
  let count = 1;
  for (const d of shape) {
    count *= d;
    if (count > MAX_ELEMENTS) throw fail(what, `an array of shape ${shapeStr(shape)} is too large`);
  }
  const size = DTYPE_SIZE[dtype];
  if (bytes.length - at < count * size) throw fail(what, `an array of shape ${shapeStr(shape)} (${descr}) needs ${count * size} bytes, the file holds ${bytes.length - at}`);
  const data = decodeNumbers(bytes, at, count, dtype, m[1] === '>');
  return { data: fortran && shape.length > 1 ? fromFortran(data, shape) : data, shape };
}

/** Column-major values of `shape` in row-major order. */
function fromFortran(data: Float32Array, shape: number[]): Float32Array {
  const out = new Float32Array(data.length);
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  // walk the output in row-major order, tracking the column-major offset
  const stride = new Array<number>(rank);
  for (let i = 0, s = 1; i < rank; i++) {
    stride[i] = s;
    s *= shape[i];
  }
  let src = 0;
  for (let k = 0; k < out.length; k++) {
    out[k] = data[src];
    for (let i = rank - 1; i >= 0; i--) {
      if (++idx[i] < shape[i]) {
        src += stride[i];
        break;
      }
      src -= (shape[i] - 1) * stride[i];
      idx[i] = 0;
    }
  }
  return out;
}

type HeaderValue = string | boolean | number[] | number | null;

/**
 * The header's dict literal (`{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`),
 * parsed as data: strings, True / False / None, integers and tuples of integers.
 */
function parseHeader(text: string, what: string): Map<string, HeaderValue> {
  let i = 0;
  const bad = (msg: string) => fail(what, `the header is not numpy's dict literal (${msg} at character ${i})`);
  const ws = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const str = (): string => {
    const q = text[i];
    const end = text.indexOf(q, i + 1);
    if (end < 0) throw bad('an unterminated string');
    const s = text.slice(i + 1, end);
    i = end + 1;
    return s;
  };
  const int = (): number => {
    const m = /^\d+L?/.exec(text.slice(i, i + 24));
    if (!m) throw bad('a number expected');
    i += m[0].length;
    const n = Number(m[0].replace('L', ''));
    if (!Number.isSafeInteger(n)) throw bad('a dimension too large');
    return n;
  };
  const value = (): HeaderValue => {
    ws();
    const c = text[i];
    if (c === "'" || c === '"') return str();
    if (c === '(') {
      i++;
      const dims: number[] = [];
      for (;;) {
        ws();
        if (text[i] === ')') {
          i++;
          return dims;
        }
        dims.push(int());
        ws();
        if (text[i] === ',') i++;
        else if (text[i] !== ')') throw bad("',' or ')' expected");
      }
    }
    for (const [word, v] of [['True', true], ['False', false], ['None', null]] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return v;
      }
    }
    if (/\d/.test(c ?? '')) return int();
    // a list: a structured dtype's fields, not read (loadNpy says so)
    if (c === '[') {
      let depth = 0;
      for (; i < text.length; i++) {
        if (text[i] === '[') depth++;
        else if (text[i] === ']' && --depth === 0) break;
      }
      if (depth !== 0) throw bad('an unterminated list');
      i++;
      return null;
    }
    throw bad('a value expected');
  };
  const out = new Map<string, HeaderValue>();
  ws();
  if (text[i++] !== '{') throw bad("'{' expected");
  for (;;) {
    ws();
    if (text[i] === '}') break;
    if (text[i] !== "'" && text[i] !== '"') throw bad('a key expected');
    const key = str();
    ws();
    if (text[i++] !== ':') throw bad("':' expected");
    out.set(key, value());
    ws();
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw bad("',' or '}' expected");
  }
  return out;
}

/** A `.npz` file (np.savez or np.savez_compressed): every array by its name. */
export function loadNpz(bytes: Uint8Array): NpzFile {
  if (!(bytes instanceof Uint8Array)) throw new LstmError('LSTM_FORMAT', `npz: expected the file's bytes as a Uint8Array, got ${describe(bytes)}`);
  const tensors: Record<string, Tensor> = Object.create(null);
  const unread: Record<string, string> = Object.create(null);
  for (const e of readZip(bytes, 'npz').values()) {
    if (e.name.endsWith('/')) continue; // a directory entry
    const name = e.name.endsWith('.npy') ? e.name.slice(0, -4) : e.name;
    const t = readNpy(zipEntryBytes(bytes, e, 'npz'), `npz: '${e.name}'`);
    if (t instanceof Unreadable) unread[name] = t.reason;
    else tensors[name] = t;
  }
  return { tensors, unread };
}

/**
 * Tensors as a `.npz` that np.load reads (float32 arrays, C order, stored uncompressed):
 * `dict(np.load('weights.npz'))` is a state dict torch.from_numpy takes.
 */
export function saveNpz(tensors: Record<string, Tensor>): Uint8Array {
  if (tensors === null || typeof tensors !== 'object') throw new LstmError('LSTM_OPTION', `saveNpz: expected an object of tensors, got ${describe(tensors)}`);
  const entries: [string, Uint8Array][] = [];
  for (const [name, value] of Object.entries(tensors)) {
    const t = checkTensor(value, name);
    const dims = t.shape.length === 1 ? `${t.shape[0]},` : t.shape.join(', ');
    let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
    // padded with spaces and a newline so the data starts at a multiple of 64, as numpy writes it
    const total = Math.ceil((10 + header.length + 1) / 64) * 64;
    header = header.padEnd(total - 10 - 1, ' ') + '\n';
    if (header.length > 0xffff) throw new LstmError('LSTM_SHAPE', `saveNpz: '${name}' has too many dimensions for a .npy header`);
    const out = new Uint8Array(10 + header.length + t.data.byteLength);
    const view = new DataView(out.buffer);
    out.set(MAGIC, 0);
    out[6] = 1; // format version 1.0
    view.setUint16(8, header.length, true);
    for (let k = 0; k < header.length; k++) out[10 + k] = header.charCodeAt(k);
    for (let k = 0, at = 10 + header.length; k < t.data.length; k++, at += 4) view.setFloat32(at, t.data[k], true);
    entries.push([`${name}.npy`, out]);
  }
  return writeZip(entries);
}

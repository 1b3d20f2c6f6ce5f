/**
 * A reader for the HDF5 that h5py writes (Keras model files, and weights saved by hand):
 * superblock 0 to 3, object headers v1 and v2 (with continuation blocks), old-style groups
 * (symbol table: v1 B-tree and local heap), new-style groups with their links in the header
 * or stored densely (fractal heap and v2 B-tree), attributes likewise; contiguous, compact and
 * chunked datasets (chunk indexes: v1 B-tree, single chunk, implicit, fixed array, extensible
 * array, v2 B-tree) of integers and IEEE floats, through the filters h5py writes (gzip,
 * shuffle, fletcher32), with their fill values; attributes of numbers and of fixed- or
 * variable-length strings (the global heap). Other filters (lzf, szip, scaleoffset...), paged
 * extensible arrays (past 33,000 chunks) and virtual datasets are listed as unread, with the
 * reason. Every read is bounds-checked, and the
 * work a file can ask for (header bytes, links, elements, inflated bytes) is bounded by its
 * size, so a hostile file gives LSTM_FORMAT.
 */
import { LstmError, describe } from '../errors.js';
import { MAX_ELEMENTS, shapeStr, type Tensor } from '../tensor.js';
import { decodeNumbers as decodeBytes, type Dtype } from './safetensors.js';
import { MAX_RATIO, inflateZlib } from './inflate.js';

/** An attribute's value: text, a list of texts, or numbers (scalars and arrays alike, flattened). */
export type Hdf5Value = string | string[] | number[];

export interface Hdf5File {
  /** Every numeric dataset by its path ('model_weights/lstm/lstm/lstm_cell/kernel:0'), as float32. */
  tensors: Record<string, Tensor>;
  /** Each group's and dataset's attributes by its path ('' is the root group). */
  attributes: Record<string, Record<string, Hdf5Value>>;
  /**
   * Datasets this reader does not read, by path, with the reason: a filter it does not decode
   * (lzf, szip, scaleoffset...), an extensible chunk index with paged data blocks, virtual
   * storage.
   */
  unread: Record<string, string>;
}

const SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];
/** Objects (groups and datasets) a file may hold, links a group may list, messages an object may carry. */
const MAX_OBJECTS = 100_000;
const MAX_DEPTH = 64;

function fail(msg: string): LstmError {
  return new LstmError('LSTM_FORMAT', `hdf5: ${msg}`);
}

/** Whether bytes start with HDF5's signature (at offset 0, where h5py puts it). */
export function isHdf5(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

interface Datatype {
  cls: number;
  size: number;
  /** Numbers: the Dtype decodeTensorBytes reads; null when the class is not numeric. */
  dtype: Dtype | null;
  bigEndian: boolean;
  /** Variable-length strings (class 9, type 1). */
  vlenString: boolean;
}

interface Dataspace {
  /** null: the null dataspace (no elements). */
  dims: number[] | null;
  /** The maximum shape when the file gives one (Infinity where unlimited). */
  maxDims: number[] | null;
}

interface ObjectInfo {
  messages: { type: number; at: number; size: number }[];
}

class Reader {
  readonly view: DataView;
  offsetSize = 8;
  lengthSize = 8;
  base = 0;
  budget = 0;
  /**
   * Work spent so far on header bytes, links and tensor elements. In a well-formed file each
   * header, link and data byte is read once, so each stays near the file's size; structures
   * shared by many objects (which a hostile file can make) cannot multiply it.
   */
  headerBytes = 0;
  links = 0;
  elements = 0;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(at: number, n: number, what: string): void {
    if (!Number.isSafeInteger(at) || at < 0 || n < 0 || at + n > this.bytes.length) {
      throw fail(`${what} at byte ${at} (${n} bytes) is outside the file (${this.bytes.length} bytes)`);
    }
  }
  u8(at: number, what: string): number {
    this.need(at, 1, what);
    return this.bytes[at];
  }
  u16(at: number, what: string): number {
    this.need(at, 2, what);
    return this.view.getUint16(at, true);
  }
  u32(at: number, what: string): number {
    this.need(at, 4, what);
    return this.view.getUint32(at, true);
  }
  /** An unsigned little-endian integer of 1-8 bytes; -1 when every byte is 0xff (HDF5's undefined address). */
  uint(at: number, size: number, what: string): number {
    this.need(at, size, what);
    let v = 0;
    let ones = true;
    for (let i = size - 1; i >= 0; i--) {
      const b = this.bytes[at + i];
      if (b !== 0xff) ones = false;
      v = v * 256 + b;
    }
    if (ones) return -1;
    if (!Number.isSafeInteger(v)) throw fail(`${what} at byte ${at} is ${v}, past any file`);
    return v;
  }
  addr(at: number, what: string): number {
    const a = this.uint(at, this.offsetSize, what);
    return a < 0 ? -1 : a + this.base;
  }
  len(at: number, what: string): number {
    const n = this.uint(at, this.lengthSize, what);
    if (n < 0) throw fail(`${what} at byte ${at} is undefined`);
    return n;
  }
  sig(at: number, s: string, what: string): void {
    this.need(at, 4, what);
    for (let i = 0; i < 4; i++) if (this.bytes[at + i] !== s.charCodeAt(i)) throw fail(`${what} at byte ${at} does not start with '${s}'`);
  }
  /** A null-terminated string starting at `at`, at most `max` bytes. */
  cstr(at: number, max: number, what: string): string {
    this.need(at, 0, what);
    const end = Math.min(this.bytes.length, at + max);
    let i = at;
    while (i < end && this.bytes[i] !== 0) i++;
    if (i === end && (i === this.bytes.length || max === Infinity)) throw fail(`${what} at byte ${at} is not terminated`);
    return utf8(this.bytes.subarray(at, i));
  }
  /** Charge `n` units of work of a kind against the file's size (see headerBytes). */
  charge(kind: 'headerBytes' | 'links' | 'elements', n: number, what: string): void {
    this[kind] += n;
    const limit = 4 * this.bytes.length + (1 << 20);
    if (this[kind] > limit) throw fail(`${what}: the file's structures add up to more than ${limit} ${kind === 'headerBytes' ? 'header and string bytes' : kind} (more than a file of its size holds: its structures overlap, or describe data it does not contain)`);
  }
  /** Count one more structure visited: a hostile file cannot make the walk long. */
  tick(what: string): void {
    if (++this.budget > 4 * MAX_OBJECTS) throw fail(`the file has more than ${4 * MAX_OBJECTS} structures (at ${what})`);
  }
}

const decoder = new TextDecoder('utf-8', { fatal: false });
function utf8(b: Uint8Array): string {
  return decoder.decode(b);
}

/** Read an HDF5 file: every numeric dataset as float32, and every object's attributes. */
export function loadHdf5(bytes: Uint8Array): Hdf5File {
  if (!(bytes instanceof Uint8Array)) throw new LstmError('LSTM_FORMAT', `hdf5: expected the file's bytes as a Uint8Array, got ${describe(bytes)}`);
  if (!isHdf5(bytes)) throw fail('the file does not start with the HDF5 signature');
  const r = new Reader(bytes);
  const version = r.u8(8, 'superblock version');
  let root: number;
  if (version === 0 || version === 1) {
    r.offsetSize = r.u8(13, 'size of offsets');
    r.lengthSize = r.u8(14, 'size of lengths');
    checkSizes(r);
    let at = 24 + (version === 1 ? 4 : 0);
    r.base = r.addr(at, 'base address');
    if (r.base < 0) r.base = 0;
    at += 4 * r.offsetSize;
    // the root group's symbol table entry: link name offset, then its object header address
    root = r.addr(at + r.offsetSize, 'root object header address');
  } else if (version === 2 || version === 3) {
    r.offsetSize = r.u8(9, 'size of offsets');
    r.lengthSize = r.u8(10, 'size of lengths');
    checkSizes(r);
    r.base = r.addr(12, 'base address');
    if (r.base < 0) r.base = 0;
    root = r.addr(12 + 3 * r.offsetSize, 'root object header address');
  } else {
    throw fail(`superblock version ${version} is not one HDF5 1.8-1.14 writes (0 to 3)`);
  }
  if (root < 0) throw fail('the root group has no object header');
  const out: Hdf5File = { tensors: Object.create(null), attributes: Object.create(null), unread: Object.create(null) };
  const seen = new Set<number>();
  walk(r, root, '', out, seen, 0);
  return out;
}

function checkSizes(r: Reader): void {
  for (const [n, what] of [[r.offsetSize, 'size of offsets'], [r.lengthSize, 'size of lengths']] as const) {
    if (![2, 4, 8].includes(n)) throw fail(`${what} is ${n} (2, 4 or 8 expected)`);
  }
}

/** One object (group or dataset) at `addr`, under `path`, and everything below it. */
function walk(r: Reader, addr: number, path: string, out: Hdf5File, seen: Set<number>, depth: number): void {
  if (depth > MAX_DEPTH) throw fail(`'${path}' is nested more than ${MAX_DEPTH} groups deep`);
  // A hard link to an object already read (a cycle, or the same object under two names) is read once.
  if (seen.has(addr)) return;
  seen.add(addr);
  if (seen.size > MAX_OBJECTS) throw fail(`the file holds more than ${MAX_OBJECTS} objects`);
  const where = `'${path || '/'}'`;
  const obj = readObjectHeader(r, addr, where);
  const attrs: Record<string, Hdf5Value> = Object.create(null);
  let datatype: Datatype | null = null;
  let dataspace: Dataspace | null = null;
  let layout: { at: number; size: number } | null = null;
  let filters: Filter[] = [];
  let fill: FillValue = null;
  const links: { name: string; addr: number }[] = [];
  let symbolTable: { btree: number; heap: number } | null = null;
  let denseGroup: { heap: number; index: number } | null = null;
  let denseAttrs: { heap: number; index: number } | null = null;
  for (const m of obj.messages) {
    switch (m.type) {
      case 0x0001:
        dataspace = readDataspace(r, m.at, m.size, `${where} dataspace`);
        break;
      case 0x0003:
        datatype = readDatatype(r, m.at, m.size, `${where} datatype`);
        break;
      case 0x0008:
        layout = { at: m.at, size: m.size };
        break;
      case 0x000b:
        filters = readFilters(r, m.at, m.size, `${where} filter pipeline`);
        break;
      case 0x0004:
      case 0x0005:
        fill = readFillValue(r, m.type, m.at, m.size, `${where} fill value`);
        break;
      case 0x000c: {
        const a = readAttribute(r, m.at, m.size, where);
        if (a) attrs[a.name] = a.value;
        break;
      }
      case 0x0011:
        symbolTable = { btree: r.addr(m.at, `${where} symbol table`), heap: r.addr(m.at + r.offsetSize, `${where} symbol table`) };
        break;
      case 0x0006: {
        const l = readLink(r, m.at, m.size, where);
        r.charge('links', 1, where);
        if (l) links.push(l);
        break;
      }
      case 0x0002: {
        // Link info: a defined fractal heap address means the links are stored densely.
        const p = m.at + 2 + (r.u8(m.at + 1, `${where} link info`) & 1 ? 8 : 0);
        const heap = r.addr(p, `${where} link info`);
        if (heap >= 0) denseGroup = { heap, index: r.addr(p + r.offsetSize, `${where} link info`) };
        break;
      }
      case 0x0015: {
        const p = m.at + 2 + (r.u8(m.at + 1, `${where} attribute info`) & 1 ? 2 : 0);
        const heap = r.addr(p, `${where} attribute info`);
        if (heap >= 0) denseAttrs = { heap, index: r.addr(p + r.offsetSize, `${where} attribute info`) };
        break;
      }
      default:
        break;
    }
  }
  out.attributes[path] = attrs;
  if (denseAttrs) denseAttributes(r, denseAttrs.heap, denseAttrs.index, where, attrs);
  if (datatype && dataspace && layout) {
    // Keras 3 marks bfloat16 variables with a dtype attribute (h5py has no bfloat16 type)
    if (attrs.dtype === 'bfloat16' && datatype.size === 2 && [0, 1, 5].includes(datatype.cls)) datatype = { ...datatype, dtype: 'BF16', bigEndian: false };
    const t = readDataset(r, { type: datatype, space: dataspace, layout, filters, fill }, where);
    if (typeof t === 'string') out.unread[path] = t;
    else if (t) out.tensors[path] = t;
    return;
  }
  if (denseGroup) denseLinks(r, denseGroup.heap, denseGroup.index, where, links);
  if (symbolTable) readSymbolTable(r, symbolTable.btree, symbolTable.heap, where, links);
  if (links.length > MAX_OBJECTS) throw fail(`group ${where} lists more than ${MAX_OBJECTS} links`);
  // by name, as HDF5 iterates: an object under two names is read under the first
  links.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const l of links) walk(r, l.addr, path ? `${path}/${l.name}` : l.name, out, seen, depth + 1);
}

/** Whether n is 2^k: exact for any safe integer (a 32-bit `n & (n - 1)` is not, past 2^31). */
function isPowerOf2(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

/** An object header's messages (v1 or v2), continuation blocks followed. */
function readObjectHeader(r: Reader, addr: number, where: string): ObjectInfo {
  const messages: ObjectInfo['messages'] = [];
  const blocks: { at: number; size: number; v2: boolean; first: boolean }[] = [];
  if (r.u8(addr, `${where} object header`) === 1) {
    const size = r.u32(addr + 8, `${where} object header size`);
    blocks.push({ at: addr + 16, size, v2: false, first: true });
  } else {
    r.sig(addr, 'OHDR', `${where} object header`);
    const version = r.u8(addr + 4, `${where} object header version`);
    if (version !== 2) throw fail(`${where} object header version ${version}`);
    const flags = r.u8(addr + 5, `${where} object header flags`);
    let at = addr + 6 + (flags & 0x20 ? 16 : 0) + (flags & 0x10 ? 4 : 0);
    const sizeBytes = 1 << (flags & 3);
    const size = r.uint(at, sizeBytes, `${where} object header size`);
    if (size < 0) throw fail(`${where} object header size is undefined`);
    at += sizeBytes;
    blocks.push({ at, size, v2: true, first: true });
  }
  const v2 = blocks[0].v2;
  const creationOrder = v2 && (r.u8(addr + 5, `${where} object header flags`) & 0x04) !== 0;
  const visited = new Set<number>();
  for (let b = 0; b < blocks.length; b++) {
    r.tick(where);
    if (blocks.length > 1024) throw fail(`${where} object header has more than 1024 continuation blocks`);
    let { at, size } = blocks[b];
    if (visited.has(at)) throw fail(`${where} object header continues into itself`);
    visited.add(at);
    if (v2 && !blocks[b].first) {
      r.sig(at, 'OCHK', `${where} continuation block`);
      at += 4;
      size -= 8; // signature and checksum
    }
    r.need(at, Math.max(0, size), `${where} object header messages`);
    r.charge('headerBytes', Math.max(0, size), where);
    const end = at + size;
    const headerSize = v2 ? 4 + (creationOrder ? 2 : 0) : 8;
    while (at + headerSize <= end) {
      const type = v2 ? r.u8(at, where) : r.u16(at, where);
      const msize = v2 ? r.u16(at + 1, where) : r.u16(at + 2, where);
      const flags = v2 ? r.u8(at + 3, where) : r.u8(at + 4, where);
      const data = at + headerSize;
      if (data + msize > end) throw fail(`${where} object header message of ${msize} bytes runs past its block`);
      if (flags & 0x02) throw fail(`${where} uses a shared message, which this reader does not read`);
      if (type === 0x0010) {
        blocks.push({ at: r.addr(data, `${where} continuation`), size: r.len(data + r.offsetSize, `${where} continuation`), v2, first: false });
      } else if (type !== 0) {
        messages.push({ type, at: data, size: msize });
        if (messages.length > MAX_OBJECTS) throw fail(`${where} has more than ${MAX_OBJECTS} header messages`);
      }
      at = data + msize;
    }
  }
  return { messages };
}

function readDataspace(r: Reader, at: number, size: number, what: string): Dataspace {
  r.need(at, Math.min(size, 8), what);
  const version = r.u8(at, what);
  const rank = r.u8(at + 1, what);
  let dimsAt: number;
  if (version === 1) {
    dimsAt = at + 8;
  } else if (version === 2) {
    const type = r.u8(at + 3, what);
    if (type === 2) return { dims: null, maxDims: null };
    dimsAt = at + 4;
  } else {
    throw fail(`${what}: version ${version}`);
  }
  if (rank > 32) throw fail(`${what}: rank ${rank} (HDF5 allows 32)`);
  if (dimsAt + rank * r.lengthSize > at + size) throw fail(`${what}: ${rank} dimensions do not fit in its ${size} bytes`);
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(r.len(dimsAt + i * r.lengthSize, what));
  let maxDims: number[] | null = null;
  if (r.u8(at + 2, what) & 1) {
    const maxAt = dimsAt + rank * r.lengthSize;
    if (maxAt + rank * r.lengthSize > at + size) throw fail(`${what}: ${rank} maximum dimensions do not fit in its ${size} bytes`);
    maxDims = [];
    for (let i = 0; i < rank; i++) {
      const m = r.uint(maxAt + i * r.lengthSize, r.lengthSize, what);
      maxDims.push(m < 0 ? Infinity : Math.max(m, dims[i]));
    }
  }
  return { dims, maxDims };
}

function readDatatype(r: Reader, at: number, size: number, what: string): Datatype {
  r.need(at, 8, what);
  const b0 = r.u8(at, what);
  const cls = b0 & 0x0f;
  const bits = r.u8(at + 1, what);
  const esize = r.u32(at + 4, what);
  const dt: Datatype = { cls, size: esize, dtype: null, bigEndian: (bits & 1) === 1, vlenString: false };
  if (size < 8) throw fail(`${what}: ${size} bytes`);
  if (cls === 0) {
    const signed = (bits & 0x08) !== 0;
    const map: Record<number, Dtype> = signed ? { 1: 'I8', 2: 'I16', 4: 'I32', 8: 'I64' } : { 1: 'U8', 2: 'U16', 4: 'U32', 8: 'U64' };
    dt.dtype = map[esize] ?? null;
  } else if (cls === 1) {
    // IEEE layouts by their exponent and mantissa sizes; bfloat16 is 8 and 7 bits in 2 bytes
    if (size < 20) throw fail(`${what}: a float type in ${size} bytes (20 needed)`);
    const exponent = r.u8(at + 13, what);
    const mantissa = r.u8(at + 15, what);
    const layouts: Record<string, Dtype> = { '2/5/10': 'F16', '2/8/7': 'BF16', '4/8/23': 'F32', '8/11/52': 'F64' };
    dt.dtype = layouts[`${esize}/${exponent}/${mantissa}`] ?? null;
  } else if (cls === 9) {
    dt.vlenString = (bits & 0x0f) === 1;
  }
  return dt;
}

/** One attribute message: its name and value, or null for a type this reader leaves out. */
function readAttribute(r: Reader, at: number, size: number, where: string): { name: string; value: Hdf5Value } | null {
  const what = `${where} attribute`;
  r.need(at, Math.min(size, 8), what);
  const version = r.u8(at, what);
  if (version < 1 || version > 3) throw fail(`${what}: version ${version}`);
  const nameSize = r.u16(at + 2, what);
  const typeSize = r.u16(at + 4, what);
  const spaceSize = r.u16(at + 6, what);
  const pad = (n: number) => (version === 1 ? Math.ceil(n / 8) * 8 : n);
  let p = at + 8 + (version === 3 ? 1 : 0);
  const name = r.cstr(p, nameSize, `${what} name`);
  p += pad(nameSize);
  const type = readDatatype(r, p, typeSize, `${what} '${name}' datatype`);
  p += pad(typeSize);
  const space = readDataspace(r, p, spaceSize, `${what} '${name}' dataspace`);
  p += pad(spaceSize);
  if (p > at + size) throw fail(`${what} '${name}' runs past its message`);
  const count = elementCount(space, `${what} '${name}'`);
  // the values (or, for variable-length strings, references to them) sit in the message
  const step = type.cls === 9 ? 4 + r.offsetSize + 4 : type.size;
  if (p + count * step > at + size) throw fail(`${what} '${name}': ${count} values of ${step} bytes run past its message`);
  const scalar = space.dims !== null && space.dims.length === 0;
  if (type.cls === 3) {
    // Fixed-length strings, each `size` bytes, padded with nulls or spaces.
    r.need(p, count * type.size, `${what} '${name}' data`);
    const list: string[] = [];
    for (let i = 0; i < count; i++) {
      const s = r.bytes.subarray(p + i * type.size, p + (i + 1) * type.size);
      let e = s.indexOf(0);
      if (e < 0) e = s.length;
      list.push(utf8(s.subarray(0, e)).replace(/ +$/, ''));
    }
    return { name, value: scalar ? list[0] ?? '' : list };
  }
  if (type.cls === 9 && type.vlenString) {
    r.need(p, count * step, `${what} '${name}' data`);
    const list: string[] = [];
    for (let i = 0; i < count; i++) list.push(globalHeapString(r, p + i * step, `${what} '${name}'`));
    return { name, value: scalar ? list[0] ?? '' : list };
  }
  if (type.dtype) {
    r.need(p, count * type.size, `${what} '${name}' data`);
    // in full: an attribute is metadata (a float64 stays a float64, an int64 an integer)
    const value: number[] = [];
    const le = !type.bigEndian;
    for (let i = 0, q = p; i < count; i++, q += type.size) {
      switch (type.dtype) {
        case 'F64': value.push(r.view.getFloat64(q, le)); break;
        case 'I64': value.push(Number(r.view.getBigInt64(q, le))); break;
        case 'U64': value.push(Number(r.view.getBigUint64(q, le))); break;
        case 'I32': value.push(r.view.getInt32(q, le)); break;
        case 'U32': value.push(r.view.getUint32(q, le)); break;
        default: value.push(decodeNumbers(r.bytes, q, 1, type)[0]);
      }
    }
    return { name, value };
  }
  return null;
}

/** A variable-length string: its length, then the global heap collection and object that hold it. */
function globalHeapString(r: Reader, at: number, what: string): string {
  const length = r.u32(at, what);
  const collection = r.addr(at + 4, what);
  const index = r.u32(at + 4 + r.offsetSize, what);
  if (length === 0 || collection < 0) return '';
  r.sig(collection, 'GCOL', `${what} global heap`);
  const total = r.len(collection + 8, `${what} global heap size`);
  r.need(collection, total, `${what} global heap`);
  let p = collection + 8 + r.lengthSize;
  const end = collection + total;
  while (p + 8 + r.lengthSize <= end) {
    r.tick(what);
    const id = r.u16(p, what);
    if (id === 0) break;
    const size = r.len(p + 8, what);
    const data = p + 8 + r.lengthSize;
    if (id === index) {
      if (length > size) throw fail(`${what}: a string of ${length} bytes in a heap object of ${size}`);
      r.need(data, length, what);
      r.charge('headerBytes', length, what);
      return utf8(r.bytes.subarray(data, data + length));
    }
    const next = data + Math.ceil(size / 8) * 8;
    if (next <= p) throw fail(`${what}: a global heap object of size ${size}`);
    p = next;
  }
  throw fail(`${what}: object ${index} is not in its global heap collection`);
}

/** A link message: a hard link's name and target; soft and external links are left out. */
function readLink(r: Reader, at: number, size: number, where: string): { name: string; addr: number } | null {
  const what = `${where} link`;
  const version = r.u8(at, what);
  if (version !== 1) throw fail(`${what}: version ${version}`);
  const flags = r.u8(at + 1, what);
  let p = at + 2;
  let type = 0;
  if (flags & 0x08) type = r.u8(p++, what);
  if (flags & 0x04) p += 8;
  if (flags & 0x10) p += 1;
  const lenBytes = 1 << (flags & 3);
  const nameLen = r.uint(p, lenBytes, what);
  p += lenBytes;
  if (nameLen < 1 || p + nameLen > at + size) throw fail(`${what}: a name of ${nameLen} bytes`);
  const name = utf8(r.bytes.subarray(p, p + nameLen));
  p += nameLen;
  if (type !== 0) return null;
  return { name, addr: r.addr(p, `${what} '${name}'`) };
}

/** An old-style group's links: its v1 B-tree of symbol table nodes, names in the local heap. */
function readSymbolTable(r: Reader, btree: number, heapAddr: number, where: string, links: { name: string; addr: number }[]): void {
  r.sig(heapAddr, 'HEAP', `${where} local heap`);
  const heapSize = r.len(heapAddr + 8, `${where} local heap`);
  const heapData = r.addr(heapAddr + 8 + 2 * r.lengthSize, `${where} local heap`);
  r.need(heapData, heapSize, `${where} local heap data`);
  walkBtree1(r, btree, 0, r.lengthSize, `${where} B-tree`, (child) => {
    readSymbolNode(r, child, heapData, heapSize, where, links);
    if (links.length > MAX_OBJECTS) throw fail(`group ${where} lists more than ${MAX_OBJECTS} links`);
  });
}

/**
 * A v1 B-tree ("TREE": type 0 indexes a group's symbol nodes, type 1 a dataset's chunks):
 * `leaf` gets each leaf entry's child address (undefined ones too) and its key's offset, in
 * order. Undefined children of inner nodes are passed over.
 */
function walkBtree1(r: Reader, root: number, type: number, keySize: number, what: string, leaf: (child: number, key: number) => void): void {
  const visit = (node: number, depth: number): void => {
    r.tick(what);
    if (depth > MAX_DEPTH) throw fail(`${what} is deeper than ${MAX_DEPTH}`);
    r.sig(node, 'TREE', `${what} node`);
    const t = r.u8(node + 4, what);
    if (t !== type) throw fail(`${what}: a node of type ${t} (${type === 0 ? '0, groups' : '1, chunks'}, expected)`);
    const level = r.u8(node + 5, what);
    const used = r.u16(node + 6, what);
    // after the two sibling addresses: key 0, child 0, key 1, child 1, ... key `used`
    const first = node + 8 + 2 * r.offsetSize;
    r.need(first, used * (keySize + r.offsetSize), `${what} node`);
    r.charge('links', used, what);
    for (let i = 0; i < used; i++) {
      const key = first + i * (keySize + r.offsetSize);
      const child = r.addr(key + keySize, `${what} child`);
      if (level === 0) leaf(child, key);
      else if (child >= 0) visit(child, depth + 1);
    }
  };
  if (root >= 0) visit(root, 0);
}

function readSymbolNode(r: Reader, node: number, heapData: number, heapSize: number, where: string, links: { name: string; addr: number }[]): void {
  r.tick(where);
  r.sig(node, 'SNOD', `${where} symbol table node`);
  const count = r.u16(node + 6, where);
  const entry = 2 * r.offsetSize + 24;
  r.need(node + 8, count * entry, `${where} symbol table node`);
  for (let i = 0; i < count; i++) {
    const e = node + 8 + i * entry;
    const nameOff = r.uint(e, r.offsetSize, where);
    if (nameOff < 0 || nameOff >= heapSize) throw fail(`${where}: a link name at heap offset ${nameOff}, past its ${heapSize} bytes`);
    const name = r.cstr(heapData + nameOff, heapSize - nameOff, `${where} link name`);
    const target = r.addr(e + r.offsetSize, `${where} '${name}'`);
    r.charge('links', 1, where);
    if (target >= 0 && name) links.push({ name, addr: target });
  }
}

function elementCount(space: Dataspace, what: string): number {
  if (space.dims === null) return 0;
  let n = 1;
  for (const d of space.dims) {
    n *= d;
    if (n > MAX_ELEMENTS) throw fail(`${what} of shape ${shapeStr(space.dims)} is too large`);
  }
  return n;
}

/** A filter of a dataset's pipeline, listed in the order HDF5 applied them when writing. */
interface Filter {
  id: number;
  name: string;
  values: number[];
}

/** One element's fill value (what storage never written reads as), or null for zeros. */
type FillValue = Uint8Array | null;

interface DatasetInfo {
  type: Datatype;
  space: Dataspace;
  layout: { at: number; size: number };
  filters: Filter[];
  fill: FillValue;
}

/** HDF5's registered filters by id: the first three are decoded here. */
const FILTER_NAMES: Record<number, string> = {
  1: 'deflate',
  2: 'shuffle',
  3: 'fletcher32',
  4: 'szip',
  5: 'nbit',
  6: 'scaleoffset',
  32000: 'lzf',
  32001: 'blosc',
  32004: 'lz4',
  32008: 'bitshuffle',
  32015: 'zstd',
};
const DEFLATE = 1;
const SHUFFLE = 2;
const FLETCHER32 = 3;

function readFilters(r: Reader, at: number, size: number, what: string): Filter[] {
  const version = r.u8(at, what);
  if (version !== 1 && version !== 2) throw fail(`${what}: version ${version}`);
  const n = r.u8(at + 1, what);
  if (n > 32) throw fail(`${what}: ${n} filters (HDF5 allows 32)`);
  let p = at + (version === 1 ? 8 : 2);
  const filters: Filter[] = [];
  for (let i = 0; i < n; i++) {
    const id = r.u16(p, what);
    p += 2;
    let nameLen = 0;
    if (version === 1 || id >= 256) {
      nameLen = r.u16(p, what);
      p += 2;
    }
    const nvalues = r.u16(p + 2, what); // after the flags
    p += 4;
    const given = nameLen > 0 ? r.cstr(p, nameLen, `${what} filter name`) : '';
    p += nameLen; // version 1 pads names to 8 bytes, and counts the padding
    r.need(p, 4 * nvalues, what);
    const values: number[] = [];
    for (let k = 0; k < nvalues; k++) values.push(r.u32(p + 4 * k, what));
    p += 4 * nvalues + (version === 1 && nvalues % 2 === 1 ? 4 : 0);
    if (p > at + size) throw fail(`${what}: filter ${i} runs past its message`);
    filters.push({ id, name: FILTER_NAMES[id] ?? (given || `filter ${id}`), values });
  }
  return filters;
}

/** The fill value message (type 5, or the old type 4): its value when one is defined. */
function readFillValue(r: Reader, type: number, at: number, size: number, what: string): FillValue {
  let p = at;
  if (type === 0x0005) {
    const version = r.u8(at, what);
    if (version === 1 || version === 2) {
      if (version === 2 && r.u8(at + 3, what) === 0) return null; // no value given
      p = at + 4;
    } else if (version === 3) {
      if (!(r.u8(at + 1, what) & 0x20)) return null;
      p = at + 2;
    } else {
      throw fail(`${what}: version ${version}`);
    }
  }
  const n = r.u32(p, what);
  if (n === 0) return null;
  if (p + 4 + n > at + size) throw fail(`${what}: a value of ${n} bytes runs past its message`);
  const value = r.bytes.slice(p + 4, p + 4 + n);
  return value.every((b) => b === 0) ? null : value;
}

/**
 * A numeric dataset's values as float32; null for other types (strings, compounds); the
 * reason, for storage this reader leaves out (a filter it does not decode, an extensible
 * array's paged data blocks, virtual datasets).
 */
function readDataset(r: Reader, d: DatasetInfo, where: string): Tensor | null | string {
  const what = `dataset ${where}`;
  const { type, space, layout } = d;
  const version = r.u8(layout.at, `${what} layout`);
  if (version < 1 || version > 5) throw fail(`${what}: layout version ${version}`);
  const cls = r.u8(layout.at + (version >= 3 ? 1 : 2), `${what} layout`);
  if (!type.dtype) return null;
  if (cls === 2) return readChunked(r, d, version, what);
  if (cls !== 0 && cls !== 1) return `its layout is class ${cls} (virtual); this reader reads compact, contiguous and chunked datasets`;
  if (d.filters.length) throw fail(`${what}: a filter pipeline on ${cls === 0 ? 'compact' : 'contiguous'} storage (HDF5 filters chunks only)`);
  const count = elementCount(space, what);
  r.charge('elements', count, what);
  const shape = space.dims ?? [0];
  const bytes = count * type.size;
  let at: number;
  if (version >= 3) {
    if (cls === 0) {
      const size = r.u16(layout.at + 2, `${what} layout`);
      if (size < bytes) throw fail(`${what} holds ${size} bytes, its shape ${shapeStr(shape)} needs ${bytes}`);
      at = layout.at + 4;
    } else {
      // contiguous (class 1)
      at = r.addr(layout.at + 2, `${what} layout`);
      const size = r.len(layout.at + 2 + r.offsetSize, `${what} layout`);
      // never written: HDF5 reads its fill value
      if (at < 0 || count === 0) return { data: filled(count, type, d.fill, what), shape };
      if (size < bytes) throw fail(`${what} holds ${size} bytes, its shape ${shapeStr(shape)} needs ${bytes}`);
    }
  } else {
    const rank = r.u8(layout.at + 1, `${what} layout`);
    if (cls === 0) {
      const p = layout.at + 8 + rank * 4;
      const size = r.u32(p, `${what} layout`);
      if (size < bytes) throw fail(`${what} holds ${size} bytes, its shape ${shapeStr(shape)} needs ${bytes}`);
      at = p + 4;
    } else {
      // contiguous (class 1)
      at = r.addr(layout.at + 8, `${what} layout`);
      if (at < 0 || count === 0) return { data: filled(count, type, d.fill, what), shape };
    }
  }
  r.need(at, bytes, `${what} data`);
  return { data: decodeNumbers(r.bytes, at, count, type), shape };
}

/** `count` elements of the fill value, as float32. */
function filled(count: number, type: Datatype, fill: FillValue, what: string): Float32Array {
  if (!fill || count === 0) return new Float32Array(count);
  if (fill.length !== type.size) throw fail(`${what}: a fill value of ${fill.length} bytes for elements of ${type.size}`);
  return new Float32Array(count).fill(decodeNumbers(fill, 0, 1, type)[0]);
}

/** Where a chunked dataset's index is; a single chunk's filtered size and mask are in the layout. */
interface ChunkIndex {
  kind: 'btree' | 'btree2' | 'single' | 'implicit' | 'fixed' | 'earray';
  addr: number;
  size?: number;
  mask?: number;
}

/** One stored chunk: its first element's coordinates, where its bytes are, which filters it skipped. */
interface Chunk {
  offsets: number[];
  addr: number;
  size: number;
  mask: number;
}

/**
 * A chunked dataset (layout version 3's v1 B-tree, or version 4's single-chunk, implicit,
 * fixed-array, extensible-array and v2 B-tree indexes), its chunks decoded through the filter
 * pipeline (deflate, shuffle, fletcher32) and placed; chunks never written read as the fill
 * value.
 */
function readChunked(r: Reader, d: DatasetInfo, version: number, what: string): Tensor | string {
  const { type, space, layout } = d;
  const at = layout.at;
  const chunk: number[] = [];
  let index: ChunkIndex;
  let p: number;
  if (version === 3) {
    const nd = r.u8(at + 2, `${what} layout`);
    index = { kind: 'btree', addr: r.addr(at + 3, `${what} layout`) };
    p = at + 3 + r.offsetSize;
    for (let i = 0; i < nd; i++, p += 4) chunk.push(r.u32(p, `${what} layout`));
  } else if (version === 4) {
    const flags = r.u8(at + 2, `${what} layout`);
    const nd = r.u8(at + 3, `${what} layout`);
    const enc = r.u8(at + 4, `${what} layout`);
    if (enc < 1 || enc > 8) throw fail(`${what} layout: dimension sizes of ${enc} bytes`);
    p = at + 5;
    for (let i = 0; i < nd; i++, p += enc) chunk.push(r.uint(p, enc, `${what} layout`));
    const kind = r.u8(p++, `${what} layout`);
    if (kind === 1) {
      let size = -1;
      let mask = 0;
      if (flags & 0x02) {
        size = r.len(p, `${what} layout`);
        mask = r.u32(p + r.lengthSize, `${what} layout`);
        p += r.lengthSize + 4;
      }
      index = { kind: 'single', addr: r.addr(p, `${what} layout`), size, mask };
    } else if (kind === 2) {
      index = { kind: 'implicit', addr: r.addr(p, `${what} layout`) };
    } else if (kind === 3) {
      index = { kind: 'fixed', addr: r.addr(p + 1, `${what} layout`) }; // after the page bits
      p += 1;
    } else if (kind === 5) {
      index = { kind: 'btree2', addr: r.addr(p + 6, `${what} layout`) }; // after node size, split and merge percents
      p += 6;
    } else if (kind === 4) {
      index = { kind: 'earray', addr: r.addr(p + 5, `${what} layout`) }; // after its five parameters
      p += 5;
    } else {
      throw fail(`${what} layout: chunk index type ${kind}`);
    }
    p += r.offsetSize;
  } else {
    return `its chunked layout is version ${version}; this reader reads versions 3 and 4`;
  }
  if (p > at + layout.size) throw fail(`${what} layout runs past its message`);
  const dims = space.dims ?? [];
  const rank = dims.length;
  if (rank === 0 || chunk.length !== rank + 1) throw fail(`${what}: chunks of ${chunk.length - 1} dimensions for a dataset of ${rank}`);
  if (chunk[rank] !== type.size) throw fail(`${what}: chunks of ${chunk[rank]}-byte elements, its type's are ${type.size}`);
  const cdims = chunk.slice(0, rank);
  let chunkElems = 1;
  for (const c of cdims) {
    if (c < 1) throw fail(`${what}: a chunk of shape ${shapeStr(cdims)}`);
    chunkElems *= c;
    if (chunkElems > MAX_ELEMENTS) throw fail(`${what}: a chunk of shape ${shapeStr(cdims)} is too large`);
  }
  const chunkBytes = chunkElems * type.size;
  const other = d.filters.find((f) => f.id !== DEFLATE && f.id !== SHUFFLE && f.id !== FLETCHER32);
  if (other) return `it is filtered with ${other.name} (filter ${other.id}); this reader decodes deflate (gzip), shuffle and fletcher32`;
  const count = elementCount(space, what);
  // Unfiltered chunks hold their elements in the file, as contiguous storage does: charged
  // before the index is listed, this also bounds how many chunks (each >= 1 element) it lists.
  if (d.filters.length === 0) r.charge('elements', count, what);
  // A fixed-array or implicit index covers the chunks of the dataset's maximum shape.
  const gridDims = (space.maxDims ?? dims).map((n, i) => Math.ceil(n / cdims[i]));
  const chunks = listChunks(r, index, rank, cdims, dims, gridDims, chunkBytes, d.filters.length > 0, what);
  if (typeof chunks === 'string') return chunks;
  const inShape = dims.reduce((a, n, i) => a * Math.ceil(n / cdims[i]), 1);
  if (chunks.length > Math.max(inShape, gridDims.reduce((a, g) => a * g, 1) || 0)) throw fail(`${what}: its index lists ${chunks.length} chunks, more than the dataset has`);
  let stored = 0;
  for (const c of chunks) {
    r.need(c.addr, c.size, `${what} chunk`);
    r.charge('headerBytes', c.size, what);
    stored += c.size;
  }
  // Filtered chunks hold at most DEFLATE's expansion of their bytes: that bounds the allocation.
  if (d.filters.length > 0 && count * type.size > MAX_RATIO * stored + 4 * r.bytes.length + (1 << 20)) {
    throw fail(`${what}: ${count} elements of ${type.size} bytes cannot come from ${stored} bytes of compressed chunks`);
  }
  const out = new Uint8Array(count * type.size);
  if (d.fill) {
    if (d.fill.length !== type.size) throw fail(`${what}: a fill value of ${d.fill.length} bytes for elements of ${type.size}`);
    for (let i = 0; i < out.length; i += type.size) out.set(d.fill, i);
  }
  for (const c of chunks) {
    if (c.offsets.some((o, i) => o % cdims[i] !== 0)) throw fail(`${what}: a chunk at ${shapeStr(c.offsets)}, not on the chunk grid ${shapeStr(cdims)}`);
    if (c.offsets.some((o, i) => o >= dims[i])) continue; // past the dataset's current shape: HDF5 ignores it too
    const data = unfilter(r, c, chunkBytes, d.filters, type.size, what);
    placeChunk(out, data, c.offsets, cdims, dims, type.size);
  }
  return { data: decodeNumbers(out, 0, count, type), shape: dims };
}

/** Every chunk the index lists (chunks never written are left out). */
function listChunks(
  r: Reader,
  index: ChunkIndex,
  rank: number,
  cdims: number[],
  dims: number[],
  gridDims: number[],
  chunkBytes: number,
  filtered: boolean,
  what: string,
): Chunk[] | string {
  const chunks: Chunk[] = [];
  if (index.addr < 0) return chunks;
  let gridCount = 1;
  for (const g of gridDims) gridCount *= g;
  if (!Number.isFinite(gridCount) && (index.kind === 'implicit' || index.kind === 'fixed')) throw fail(`${what}: an unlimited dimension with a ${index.kind} chunk index`);
  if (index.kind === 'earray') return extensibleArrayChunks(r, index.addr, cdims, dims, gridDims, chunkBytes, filtered, what);
  // the k-th chunk of the grid, row-major
  const offsetsOf = (k: number): number[] => {
    const o = new Array<number>(rank);
    for (let i = rank - 1; i >= 0; i--) {
      o[i] = (k % gridDims[i]) * cdims[i];
      k = Math.floor(k / gridDims[i]);
    }
    return o;
  };
  if (index.kind === 'single') {
    chunks.push({ offsets: new Array<number>(rank).fill(0), addr: index.addr, size: index.size! >= 0 ? index.size! : chunkBytes, mask: index.mask ?? 0 });
  } else if (index.kind === 'implicit') {
    if (filtered) throw fail(`${what}: an implicit chunk index with filters (HDF5 uses it for unfiltered chunks only)`);
    r.need(index.addr, gridCount * chunkBytes, `${what} chunks`);
    for (let k = 0; k < gridCount; k++) chunks.push({ offsets: offsetsOf(k), addr: index.addr + k * chunkBytes, size: chunkBytes, mask: 0 });
  } else if (index.kind === 'fixed') {
    const h = index.addr;
    r.sig(h, 'FAHD', `${what} fixed array header`);
    const client = r.u8(h + 5, `${what} fixed array header`);
    const entrySize = r.u8(h + 6, `${what} fixed array header`);
    const pageBits = r.u8(h + 7, `${what} fixed array header`);
    const entries = r.len(h + 8, `${what} fixed array header`);
    const block = r.addr(h + 8 + r.lengthSize, `${what} fixed array header`);
    if (client !== (filtered ? 1 : 0)) throw fail(`${what}: a fixed array of client ${client} for ${filtered ? 'filtered' : 'unfiltered'} chunks`);
    const sizeBytes = entrySize - r.offsetSize - 4;
    if (filtered ? sizeBytes < 1 || sizeBytes > 8 : entrySize !== r.offsetSize) throw fail(`${what}: fixed array entries of ${entrySize} bytes`);
    if (entries !== gridCount) throw fail(`${what}: a fixed array of ${entries} entries for ${gridCount} chunks`);
    if (block < 0) return chunks;
    r.sig(block, 'FADB', `${what} fixed array data block`);
    r.charge('links', entries, what);
    // Past 2^pageBits entries the block is paged: a bitmap of the pages written (most
    // significant bit first) and its checksum, then each page's entries and checksum.
    const perPage = pageBits < 32 && entries > 2 ** pageBits ? 2 ** pageBits : 0;
    const pages = perPage ? Math.ceil(entries / perPage) : 0;
    const bitmap = block + 6 + r.offsetSize;
    const first = bitmap + (perPage ? Math.ceil(pages / 8) + 4 : 0);
    r.need(first, entries * entrySize + pages * 4, `${what} fixed array data block`);
    for (let k = 0; k < entries; k++) {
      let e = first + k * entrySize;
      if (perPage) {
        const page = Math.floor(k / perPage);
        if (!(r.bytes[bitmap + (page >> 3)] & (0x80 >> (page & 7)))) continue; // a page never written
        e += page * 4; // the checksums of the pages before
      }
      const addr = r.addr(e, `${what} chunk address`);
      if (addr < 0) continue;
      const size = filtered ? r.uint(e + r.offsetSize, sizeBytes, `${what} chunk size`) : chunkBytes;
      const mask = filtered ? r.u32(e + r.offsetSize + sizeBytes, `${what} chunk filter mask`) : 0;
      if (size < 0) throw fail(`${what}: a chunk of undefined size`);
      chunks.push({ offsets: offsetsOf(k), addr, size, mask });
    }
  } else if (index.kind === 'btree2') {
    // records of type 10 (address, then each axis' offset in chunks) or 11 (address, stored
    // size, filter mask, offsets), by the dataset's filters
    const recordSize = r.u16(index.addr + 10, `${what} chunk index`);
    const sizeBytes = recordSize - r.offsetSize - 8 * rank - (filtered ? 4 : 0);
    if (filtered ? sizeBytes < 1 || sizeBytes > 8 : sizeBytes !== 0) throw fail(`${what}: chunk index records of ${recordSize} bytes`);
    for (const rec of btree2Records(r, index.addr, filtered ? 11 : 10, `${what} chunk index`)) {
      const addr = r.addr(rec, `${what} chunk address`);
      let q = rec + r.offsetSize;
      const size = filtered ? r.uint(q, sizeBytes, `${what} chunk size`) : chunkBytes;
      const mask = filtered ? r.u32(q + sizeBytes, `${what} chunk filter mask`) : 0;
      q += filtered ? sizeBytes + 4 : 0;
      const offsets: number[] = [];
      for (let k = 0; k < rank; k++) {
        const o = r.uint(q + 8 * k, 8, `${what} chunk offset`);
        if (o < 0 || !Number.isSafeInteger(o * cdims[k])) throw fail(`${what}: a chunk at an undefined offset`);
        offsets.push(o * cdims[k]);
      }
      if (addr >= 0 && size >= 0) chunks.push({ offsets, addr, size, mask });
    }
  } else {
    // a v1 B-tree of raw data chunks: keys hold each chunk's stored size, filter mask and offsets
    walkBtree1(r, index.addr, 1, 8 + 8 * (rank + 1), `${what} chunk B-tree`, (child, key) => {
      if (child < 0) return;
      const offsets: number[] = [];
      for (let k = 0; k < rank; k++) {
        const o = r.uint(key + 8 + 8 * k, 8, `${what} chunk offset`);
        if (o < 0) throw fail(`${what}: a chunk at an undefined offset`);
        offsets.push(o);
      }
      chunks.push({ offsets, addr: child, size: r.u32(key, what), mask: r.u32(key + 4, what) });
    });
  }
  return chunks;
}

/** A chunk's stored bytes through its filters, in reverse of the order HDF5 applied them. */
function unfilter(r: Reader, c: Chunk, chunkBytes: number, filters: Filter[], elementSize: number, what: string): Uint8Array {
  let data = r.bytes.subarray(c.addr, c.addr + c.size);
  // each filter's input size when writing: fletcher32 appends 4 bytes
  const sizes: number[] = [];
  let size = chunkBytes;
  filters.forEach((f, i) => {
    sizes.push(size);
    if (!(c.mask & (1 << i)) && f.id === FLETCHER32) size += 4;
  });
  for (let i = filters.length - 1; i >= 0; i--) {
    if (c.mask & (1 << i)) continue;
    const f = filters[i];
    const where = `${what} chunk at ${shapeStr(c.offsets)}`;
    if (f.id === DEFLATE) data = inflateZlib(data, sizes[i], `${where} (deflate)`);
    else if (f.id === SHUFFLE) data = unshuffle(data, f.values[0] || elementSize);
    else data = checkFletcher32(data, `${where} (fletcher32)`);
  }
  if (data.length < chunkBytes) throw fail(`${what}: a chunk of ${data.length} bytes, ${chunkBytes} expected`);
  return data;
}

/** Undo HDF5's shuffle: byte b of every element was stored together, plane by plane. */
function unshuffle(data: Uint8Array, size: number): Uint8Array {
  const n = Math.floor(data.length / size);
  if (size <= 1 || n <= 1) return data;
  const out = new Uint8Array(data.length);
  for (let b = 0; b < size; b++) {
    const plane = b * n;
    for (let i = 0; i < n; i++) out[i * size + b] = data[plane + i];
  }
  out.set(data.subarray(n * size), n * size); // a remainder is stored as it is
  return out;
}

/** Check and strip HDF5's Fletcher-32 checksum (little-endian, or byte-swapped as HDF5 before 1.6.3 wrote it). */
function checkFletcher32(data: Uint8Array, what: string): Uint8Array {
  if (data.length < 4) throw fail(`${what}: ${data.length} bytes, no checksum`);
  const n = data.length - 4;
  let sum1 = 0;
  let sum2 = 0;
  let i = 0;
  for (let words = n >> 1; words > 0; ) {
    const t = Math.min(words, 360);
    words -= t;
    for (let k = 0; k < t; k++, i += 2) {
      sum1 = (sum1 + ((data[i] << 8) | data[i + 1])) >>> 0;
      sum2 = (sum2 + sum1) >>> 0;
    }
    sum1 = (sum1 & 0xffff) + (sum1 >>> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >>> 16);
  }
  if (n % 2) {
    sum1 = (sum1 + (data[i] << 8)) >>> 0;
    sum2 = (sum2 + sum1) >>> 0;
    sum1 = (sum1 & 0xffff) + (sum1 >>> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >>> 16);
  }
  sum1 = (sum1 & 0xffff) + (sum1 >>> 16);
  sum2 = (sum2 & 0xffff) + (sum2 >>> 16);
  const sum = ((sum2 << 16) | sum1) >>> 0;
  const stored = (data[n] | (data[n + 1] << 8) | (data[n + 2] << 16) | (data[n + 3] << 24)) >>> 0;
  const swapped = (((sum & 0xff) << 8) | ((sum >>> 8) & 0xff) | (((sum >>> 16) & 0xff) << 24) | ((sum >>> 24) << 16)) >>> 0;
  if (stored !== sum && stored !== swapped) throw fail(`${what}: the chunk fails its checksum`);
  return data.subarray(0, n);
}

/** Copy the part of a decoded chunk (shape cdims, at `offsets`) that lies inside the dataset. */
function placeChunk(out: Uint8Array, data: Uint8Array, offsets: number[], cdims: number[], dims: number[], size: number): void {
  const rank = dims.length;
  const extent = dims.map((n, i) => Math.min(cdims[i], n - offsets[i]));
  const rowBytes = extent[rank - 1] * size;
  const idx = new Array<number>(rank - 1).fill(0);
  for (;;) {
    let src = 0;
    let dst = 0;
    for (let i = 0; i < rank - 1; i++) {
      src = (src + idx[i]) * cdims[i + 1];
      dst = (dst + offsets[i] + idx[i]) * dims[i + 1];
    }
    dst += offsets[rank - 1];
    out.set(data.subarray(src * size, src * size + rowBytes), dst * size);
    let i = rank - 2;
    while (i >= 0 && ++idx[i] === extent[i]) idx[i--] = 0;
    if (i < 0) break;
  }
}

/** `count` numbers of a numeric type at bytes[at..] (in bounds), as float32. */
function decodeNumbers(bytes: Uint8Array, at: number, count: number, type: Datatype): Float32Array {
  return decodeBytes(bytes, at, count, type.dtype!, type.bigEndian);
}

/**
 * The chunks an extensible array ("EAHD") lists: the index of a dataset resizable along one
 * axis under libver='latest'. Element k is the chunk whose coordinates, the unlimited axis
 * first and the others in order (H5VM_swizzle_coords), are k in row-major order. The first
 * elements sit in the index block; the rest in data blocks of doubling sizes, addressed from
 * the index block and then from super blocks.
 */
function extensibleArrayChunks(r: Reader, addr: number, cdims: number[], dims: number[], gridDims: number[], chunkBytes: number, filtered: boolean, what: string): Chunk[] | string {
  const w = `${what} extensible array`;
  r.sig(addr, 'EAHD', `${w} header`);
  const client = r.u8(addr + 5, w);
  const elementSize = r.u8(addr + 6, w);
  const maxBits = r.u8(addr + 7, w);
  const indexElements = r.u8(addr + 8, w);
  const blockMin = r.u8(addr + 9, w);
  const superMinPointers = r.u8(addr + 10, w);
  const pageBits = r.u8(addr + 11, w);
  const maxIndexSet = r.len(addr + 12 + 4 * r.lengthSize, w);
  const iblock = r.addr(addr + 12 + 6 * r.lengthSize, w);
  const sizeBytes = elementSize - r.offsetSize - 4;
  if (client !== (filtered ? 1 : 0) || (filtered ? sizeBytes < 1 || sizeBytes > 8 : elementSize !== r.offsetSize)) throw fail(`${w}: client ${client} with ${elementSize}-byte elements`);
  if (!isPowerOf2(blockMin) || !isPowerOf2(superMinPointers) || maxBits < 1 || maxBits > 64 || Math.log2(blockMin) >= maxBits || pageBits > 32) {
    throw fail(`${w}: blocks of at least ${blockMin} elements, super blocks of ${superMinPointers}, ${maxBits}-bit indexes`);
  }
  const unlimited = gridDims.findIndex((g) => !Number.isFinite(g));
  if (unlimited < 0 || gridDims.some((g, i) => i !== unlimited && !Number.isFinite(g))) throw fail(`${w}: indexes a dataset that is not resizable along exactly one axis`);
  // the chunks in the current shape: nothing past them is read
  const inner = gridDims.reduce((a, g, i) => (i === unlimited ? a : a * g), 1);
  const count = Math.min(maxIndexSet, Math.ceil(dims[unlimited] / cdims[unlimited]) * inner);
  const chunks: Chunk[] = [];
  if (iblock < 0 || count === 0) return chunks;
  r.charge('links', count, w);
  r.sig(iblock, 'EAIB', `${w} index block`);
  // Super block s holds 2^floor(s/2) data blocks of 2^floor((s+1)/2) · blockMin elements; the
  // index block addresses the data blocks of the first 2·log2(superMinPointers) directly.
  const arrOffSize = Math.ceil(maxBits / 8);
  const directSupers = 2 * Math.log2(superMinPointers);
  const dblockAddrs = iblock + 6 + r.offsetSize + indexElements * elementSize;
  const sblockAddrs = dblockAddrs + 2 * (superMinPointers - 1) * r.offsetSize;
  const pageElements = 2 ** pageBits;
  const elementAt = (k: number): number => {
    if (k < indexElements) return iblock + 6 + r.offsetSize + k * elementSize;
    const e = k - indexElements;
    const s = Math.floor(Math.log2(Math.floor(e / blockMin) + 1));
    let start = 0; // elements before super block s
    let startBlock = 0; // data blocks before it
    for (let u = 0; u < s; u++) {
      start += 2 ** Math.floor(u / 2) * 2 ** Math.floor((u + 1) / 2) * blockMin;
      startBlock += 2 ** Math.floor(u / 2);
    }
    const blockElements = 2 ** Math.floor((s + 1) / 2) * blockMin;
    const d = Math.floor((e - start) / blockElements);
    const off = (e - start) % blockElements;
    let block: number;
    if (s < directSupers) {
      block = r.addr(dblockAddrs + (startBlock + d) * r.offsetSize, w);
    } else {
      const sblock = r.addr(sblockAddrs + (s - directSupers) * r.offsetSize, w);
      if (sblock < 0) return -1;
      r.sig(sblock, 'EASB', `${w} super block`);
      block = r.addr(sblock + 6 + r.offsetSize + arrOffSize + d * r.offsetSize, w);
    }
    if (block < 0) return -1;
    r.sig(block, 'EADB', `${w} data block`);
    return block + 6 + r.offsetSize + arrOffSize + off * elementSize;
  };
  // Data blocks grow with the index: past 2^pageBits elements they are paged (HDF5's default
  // 1,024, reached past 33,000 chunks), which this reader leaves out.
  const last = Math.max(0, count - 1 - indexElements);
  const lastBlock = 2 ** Math.floor((Math.floor(Math.log2(Math.floor(last / blockMin) + 1)) + 1) / 2) * blockMin;
  if (lastBlock > pageElements) return `its extensible chunk index has paged data blocks (${count} chunks); this reader reads unpaged ones`;
  for (let k = 0; k < count; k++) {
    r.tick(w);
    const e = elementAt(k);
    if (e < 0) continue;
    const chunk = r.addr(e, `${w} chunk address`);
    if (chunk < 0) continue;
    const size = filtered ? r.uint(e + r.offsetSize, sizeBytes, `${w} chunk size`) : chunkBytes;
    const mask = filtered ? r.u32(e + r.offsetSize + sizeBytes, `${w} chunk filter mask`) : 0;
    if (size < 0) throw fail(`${w}: a chunk of undefined size`);
    // k in row-major order over the grid with the unlimited axis moved first
    const offsets = new Array<number>(dims.length);
    let rest = k % inner;
    for (let i = dims.length - 1; i >= 0; i--) {
      if (i === unlimited) continue;
      offsets[i] = (rest % gridDims[i]) * cdims[i];
      rest = Math.floor(rest / gridDims[i]);
    }
    offsets[unlimited] = Math.floor(k / inner) * cdims[unlimited];
    chunks.push({ offsets, addr: chunk, size, mask });
  }
  return chunks;
}

// ---------------------------------------------------------------- dense storage

/**
 * Records of a v2 B-tree (HDF5's "BTHD"), in key order: each record's bytes' offset. Dense
 * groups index their links by name hash in one (type 5), dense attributes in another (type 8).
 */
function btree2Records(r: Reader, addr: number, wantType: number, what: string): number[] {
  r.sig(addr, 'BTHD', `${what} v2 B-tree header`);
  const type = r.u8(addr + 5, what);
  if (type !== wantType) throw fail(`${what}: a v2 B-tree of type ${type} (${wantType} expected)`);
  const nodeSize = r.u32(addr + 6, what);
  const recordSize = r.u16(addr + 10, what);
  const depth = r.u16(addr + 12, what);
  const root = r.addr(addr + 16, what);
  const rootRecords = r.u16(addr + 16 + r.offsetSize, what);
  if (recordSize < 1 || nodeSize < 16 || depth > MAX_DEPTH) throw fail(`${what}: a v2 B-tree of ${nodeSize}-byte nodes, ${recordSize}-byte records, depth ${depth}`);
  // The sizes of the child pointers at each depth follow from how many records fit in a node
  // (H5B2's node_info): the number of records in a child, and below depth 1, in its subtree.
  const enc = (n: number) => Math.floor(Math.log2(Math.max(n, 1)) / 8) + 1;
  const maxRecords: number[] = [Math.floor((nodeSize - 10) / recordSize)];
  const cumMax: number[] = [maxRecords[0]];
  const pointerSize: number[] = [0];
  for (let d = 1; d <= depth; d++) {
    const ptr = r.offsetSize + enc(maxRecords[d - 1]) + (d > 1 ? enc(cumMax[d - 1]) : 0);
    pointerSize.push(ptr);
    maxRecords.push(Math.floor((nodeSize - 10 - ptr) / (recordSize + ptr)));
    cumMax.push((maxRecords[d] + 1) * cumMax[d - 1] + maxRecords[d]);
    if (maxRecords[d] < 1) throw fail(`${what}: v2 B-tree nodes of ${nodeSize} bytes hold no records at depth ${d}`);
  }
  const out: number[] = [];
  const visit = (node: number, n: number, d: number): void => {
    r.tick(what);
    if (n > maxRecords[d]) throw fail(`${what}: a v2 B-tree node of ${n} records (at most ${maxRecords[d]})`);
    r.sig(node, d === 0 ? 'BTLF' : 'BTIN', `${what} v2 B-tree node`);
    const records = node + 6;
    r.need(records, n * recordSize + (d > 0 ? (n + 1) * pointerSize[d] : 0), `${what} v2 B-tree node`);
    r.charge('links', n, what);
    if (d === 0) {
      for (let i = 0; i < n; i++) out.push(records + i * recordSize);
      return;
    }
    const ptrs = records + n * recordSize;
    const childCountSize = enc(maxRecords[d - 1]);
    for (let i = 0; i <= n; i++) {
      const p = ptrs + i * pointerSize[d];
      visit(r.addr(p, `${what} v2 B-tree child`), r.uint(p + r.offsetSize, childCountSize, what), d - 1);
      if (i < n) out.push(records + i * recordSize);
    }
  };
  if (root >= 0 && rootRecords > 0) visit(root, rootRecords, depth);
  return out;
}

/** A fractal heap ("FRHP"): reads its managed and tiny objects by heap ID. */
class FractalHeap {
  private readonly idLength: number;
  private readonly width: number;
  private readonly startBlock: number;
  private readonly maxDirect: number;
  private readonly offsetBytes: number;
  private readonly lengthBytes: number;
  private readonly root: number;
  private readonly rootRows: number;
  private readonly checksummed: boolean;
  private readonly filtered: boolean;
  private readonly maxDirectRows: number;

  constructor(
    private readonly r: Reader,
    private readonly addr: number,
    private readonly what: string,
  ) {
    r.sig(addr, 'FRHP', `${what} fractal heap`);
    this.idLength = r.u16(addr + 5, what);
    this.filtered = r.u16(addr + 7, what) > 0;
    const flags = r.u8(addr + 9, what);
    this.checksummed = (flags & 0x02) !== 0;
    const maxManaged = r.u32(addr + 10, what);
    let p = addr + 14 + r.lengthSize + r.offsetSize + r.lengthSize + r.offsetSize + 8 * r.lengthSize;
    this.width = r.u16(p, what);
    this.startBlock = r.len(p + 2, what);
    this.maxDirect = r.len(p + 2 + r.lengthSize, what);
    const maxHeapBits = r.u16(p + 2 + 2 * r.lengthSize, what);
    p += 2 + 2 * r.lengthSize + 4; // after the starting rows of the root
    this.root = r.addr(p, what);
    this.rootRows = r.u16(p + r.offsetSize, what);
    if (this.width < 1 || this.width > 65536 || !isPowerOf2(this.width) || !isPowerOf2(this.startBlock) || !isPowerOf2(this.maxDirect) || this.maxDirect < this.startBlock || maxHeapBits < 1 || maxHeapBits > 64) {
      throw fail(`${what}: a fractal heap of width ${this.width}, blocks of ${this.startBlock} to ${this.maxDirect} bytes, ${maxHeapBits}-bit offsets`);
    }
    this.offsetBytes = Math.ceil(maxHeapBits / 8);
    this.lengthBytes = Math.floor(Math.log2(Math.max(1, Math.min(this.maxDirect, maxManaged))) / 8) + 1;
    this.maxDirectRows = Math.log2(this.maxDirect) - Math.log2(this.startBlock) + 2;
  }

  /** The object a heap ID (at `at`, in the file) names: its bytes' offset and length. */
  object(at: number): { at: number; size: number } {
    const { r, what } = this;
    const first = r.u8(at, what);
    const kind = (first >> 4) & 3;
    if (first >> 6 !== 0) throw fail(`${what}: a heap ID of version ${first >> 6}`);
    if (kind === 2) {
      // tiny: the object is inside the ID
      const size = (first & 0x0f) + 1;
      if (1 + size > this.idLength) throw fail(`${what}: a tiny object of ${size} bytes in a ${this.idLength}-byte ID`);
      return { at: at + 1, size };
    }
    if (kind !== 0) throw fail(`${what}: a huge object, which this reader does not read`);
    if (this.filtered) throw fail(`${what}: a filtered fractal heap, which this reader does not read`);
    const offset = r.uint(at + 1, this.offsetBytes, what);
    const size = r.uint(at + 1 + this.offsetBytes, this.lengthBytes, what);
    if (offset < 0 || size < 0) throw fail(`${what}: a heap ID with an undefined offset or length`);
    const block = this.directBlock(offset);
    if (offset + size > block.offset + block.size) throw fail(`${what}: an object of ${size} bytes at ${offset} runs past its block`);
    const objectAt = block.addr + (offset - block.offset);
    r.need(objectAt, size, what);
    return { at: objectAt, size };
  }

  /** The direct block holding heap offset `offset`, found down the doubling table from the root. */
  private directBlock(offset: number): { addr: number; offset: number; size: number } {
    const { r, what } = this;
    let block = this.root;
    let rows = this.rootRows;
    let base = 0; // heap offset where the current (indirect) block starts
    let size = this.startBlock;
    for (let depth = 0; ; depth++) {
      r.tick(what);
      if (block < 0) throw fail(`${what}: heap offset ${offset} is in a block never written`);
      if (rows === 0) {
        // the root is a direct block
        this.checkDirect(block, base);
        if (offset - base >= size) throw fail(`${what}: heap offset ${offset} is past the root block`);
        return { addr: block, offset: base, size };
      }
      if (depth > MAX_DEPTH) throw fail(`${what}: fractal heap blocks nested deeper than ${MAX_DEPTH}`);
      r.sig(block, 'FHIB', `${what} fractal heap indirect block`);
      // row k holds `width` blocks of startBlock · 2^max(0, k - 1) bytes
      const rel = offset - base;
      let row = 0;
      let rowStart = 0;
      let blockSize = this.startBlock;
      while (rel >= rowStart + this.width * blockSize) {
        rowStart += this.width * blockSize;
        row++;
        if (row > 1) blockSize *= 2;
        if (row >= rows) throw fail(`${what}: heap offset ${offset} is past its indirect block's ${rows} rows`);
      }
      const col = Math.floor((rel - rowStart) / blockSize);
      const entries = block + 5 + r.offsetSize + this.offsetBytes;
      const directRows = Math.min(rows, this.maxDirectRows);
      if (row < directRows) {
        const child = r.addr(entries + (row * this.width + col) * r.offsetSize, what);
        if (child < 0) throw fail(`${what}: heap offset ${offset} is in a block never written`);
        const childBase = base + rowStart + col * blockSize;
        this.checkDirect(child, childBase);
        return { addr: child, offset: childBase, size: blockSize };
      }
      // an indirect child: as many rows as span its size
      const k = (row - directRows) * this.width + col;
      block = r.addr(entries + (directRows * this.width + k) * r.offsetSize, what);
      base += rowStart + col * blockSize;
      rows = Math.log2(blockSize) - Math.log2(this.startBlock * this.width) + 1;
      if (!Number.isInteger(rows) || rows < 1) throw fail(`${what}: an indirect block of ${blockSize} bytes`);
    }
  }

  private checkDirect(addr: number, offset: number): void {
    const { r, what } = this;
    r.sig(addr, 'FHDB', `${what} fractal heap direct block`);
    const stated = r.uint(addr + 5 + r.offsetSize, this.offsetBytes, what);
    if (stated !== offset) throw fail(`${what}: a direct block at heap offset ${stated}, ${offset} expected`);
  }
}

/** A dense group's links: link messages in its fractal heap, indexed by the name B-tree. */
function denseLinks(r: Reader, heapAddr: number, nameIndex: number, where: string, links: { name: string; addr: number }[]): void {
  const heap = new FractalHeap(r, heapAddr, `${where} links`);
  // records of type 5: the name's hash (4 bytes), then the heap ID
  for (const rec of btree2Records(r, nameIndex, 5, `${where} link name index`)) {
    const o = heap.object(rec + 4);
    r.charge('headerBytes', o.size, where);
    const l = readLink(r, o.at, o.size, where);
    if (l) links.push(l);
    if (links.length > MAX_OBJECTS) throw fail(`group ${where} lists more than ${MAX_OBJECTS} links`);
  }
}

/** Densely stored attributes: attribute messages in a fractal heap, indexed by the name B-tree. */
function denseAttributes(r: Reader, heapAddr: number, nameIndex: number, where: string, attrs: Record<string, Hdf5Value>): void {
  const heap = new FractalHeap(r, heapAddr, `${where} attributes`);
  // records of type 8: the heap ID (8 bytes), flags, creation order, hash
  for (const rec of btree2Records(r, nameIndex, 8, `${where} attribute name index`)) {
    const flags = r.u8(rec + 8, where);
    if (flags & 1) throw fail(`${where}: a shared attribute, which this reader does not read`);
    const o = heap.object(rec);
    r.charge('headerBytes', o.size, where);
    const a = readAttribute(r, o.at, o.size, where);
    if (a) attrs[a.name] = a.value;
  }
}

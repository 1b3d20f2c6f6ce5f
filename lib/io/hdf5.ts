/**
 * A reader for the part of HDF5 that h5py writes for Keras model files: superblock 0 to 3,
 * object headers v1 and v2 (with continuation blocks), old-style groups (symbol table: v1
 * B-tree and local heap) and new-style compact groups (link messages), contiguous and
 * compact datasets of integers and IEEE floats, and attributes of numbers and of fixed- or
 * variable-length strings (the global heap). Chunked or filtered datasets and dense
 * (fractal-heap) groups or attributes are listed as unread, with the reason. Every read is
 * bounds-checked, and the work a file can ask for (header bytes, links, elements) is bounded
 * by its size, so a hostile file gives LSTM_FORMAT.
 */
import { LstmError, describe } from '../errors.js';
import { MAX_ELEMENTS, shapeStr, type Tensor } from '../tensor.js';
import { decodeTensorBytes, type Dtype } from './safetensors.js';

/** An attribute's value: text, a list of texts, or numbers (scalars and arrays alike, flattened). */
export type Hdf5Value = string | string[] | number[];

export interface Hdf5File {
  /** Every numeric dataset by its path ('model_weights/lstm/lstm/lstm_cell/kernel:0'), as float32. */
  tensors: Record<string, Tensor>;
  /** Each group's and dataset's attributes by its path ('' is the root group). */
  attributes: Record<string, Record<string, Hdf5Value>>;
  /**
   * Datasets and groups this reader does not read, by path, with the reason: chunked or
   * compressed datasets, groups whose links are stored densely (a fractal heap).
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
  let filtered = false;
  const links: { name: string; addr: number }[] = [];
  let symbolTable: { btree: number; heap: number } | null = null;
  let denseLinks = false;
  let denseAttrs = false;
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
        filtered = true;
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
        const flags = r.u8(m.at + 1, `${where} link info`);
        const heap = r.addr(m.at + 2 + (flags & 1 ? 8 : 0), `${where} link info`);
        if (heap >= 0) denseLinks = true;
        break;
      }
      case 0x0015: {
        const flags = r.u8(m.at + 1, `${where} attribute info`);
        const heap = r.addr(m.at + 2 + (flags & 1 ? 2 : 0), `${where} attribute info`);
        if (heap >= 0) denseAttrs = true;
        break;
      }
      default:
        break;
    }
  }
  out.attributes[path] = attrs;
  const unread = (reason: string) => {
    out.unread[path] = out.unread[path] ? `${out.unread[path]}; ${reason}` : reason;
  };
  if (denseAttrs) unread('its attributes are stored densely (a fractal heap)');
  if (datatype && dataspace && layout) {
    // Keras 3 marks bfloat16 variables with a dtype attribute (h5py has no bfloat16 type)
    if (attrs.dtype === 'bfloat16' && datatype.size === 2 && [0, 1, 5].includes(datatype.cls)) datatype = { ...datatype, dtype: 'BF16', bigEndian: false };
    const t = filtered ? 'filtered' : readDataset(r, datatype, dataspace, layout, where);
    if (t === 'filtered') unread('it is filtered (compressed); this reader reads contiguous and compact datasets');
    else if (t === 'chunked') unread('it is chunked; this reader reads contiguous and compact datasets');
    else if (t) out.tensors[path] = t;
    return;
  }
  if (denseLinks) {
    unread("its links are stored densely (a fractal heap, as libver='latest' does past 8 links); save with h5py's default libver");
    return;
  }
  if (symbolTable) readSymbolTable(r, symbolTable.btree, symbolTable.heap, where, links);
  if (links.length > MAX_OBJECTS) throw fail(`group ${where} lists more than ${MAX_OBJECTS} links`);
  // by name, as HDF5 iterates: an object under two names is read under the first
  links.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const l of links) walk(r, l.addr, path ? `${path}/${l.name}` : l.name, out, seen, depth + 1);
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
    if (type === 2) return { dims: null };
    dimsAt = at + 4;
  } else {
    throw fail(`${what}: version ${version}`);
  }
  if (rank > 32) throw fail(`${what}: rank ${rank} (HDF5 allows 32)`);
  if (dimsAt + rank * r.lengthSize > at + size) throw fail(`${what}: ${rank} dimensions do not fit in its ${size} bytes`);
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(r.len(dimsAt + i * r.lengthSize, what));
  return { dims };
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
        default: value.push(decodeNumbers(r, q, 1, type)[0]);
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
  const visit = (node: number, depth: number): void => {
    r.tick(where);
    if (depth > MAX_DEPTH) throw fail(`${where} B-tree is deeper than ${MAX_DEPTH}`);
    if (node < 0) return;
    r.sig(node, 'TREE', `${where} B-tree node`);
    const type = r.u8(node + 4, where);
    if (type !== 0) throw fail(`${where} B-tree node of type ${type} (0, groups, expected)`);
    const level = r.u8(node + 5, where);
    const used = r.u16(node + 6, where);
    let p = node + 8 + 2 * r.offsetSize + r.lengthSize; // siblings, then key 0
    for (let i = 0; i < used; i++) {
      const child = r.addr(p, `${where} B-tree child`);
      if (level === 0) readSymbolNode(r, child, heapData, heapSize, where, links);
      else visit(child, depth + 1);
      p += r.offsetSize + r.lengthSize;
      if (links.length > MAX_OBJECTS) throw fail(`group ${where} lists more than ${MAX_OBJECTS} links`);
    }
  };
  visit(btree, 0);
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

/**
 * A numeric dataset's values as float32; null for other types (strings, compounds);
 * 'chunked' for chunked (or virtual) storage, which this reader leaves out.
 */
function readDataset(r: Reader, type: Datatype, space: Dataspace, layout: { at: number; size: number }, where: string): Tensor | null | 'chunked' {
  const what = `dataset ${where}`;
  const version = r.u8(layout.at, `${what} layout`);
  const cls = r.u8(layout.at + (version >= 3 ? 1 : 2), `${what} layout`);
  if (cls >= 2) return 'chunked';
  if (!type.dtype) return null;
  const count = elementCount(space, what);
  r.charge('elements', count, what);
  const shape = space.dims ?? [0];
  const bytes = count * type.size;
  let at: number;
  if (version === 3 || version === 4) {
    if (cls === 0) {
      const size = r.u16(layout.at + 2, `${what} layout`);
      if (size < bytes) throw fail(`${what} holds ${size} bytes, its shape ${shapeStr(shape)} needs ${bytes}`);
      at = layout.at + 4;
    } else {
      // contiguous (class 1)
      at = r.addr(layout.at + 2, `${what} layout`);
      const size = r.len(layout.at + 2 + r.offsetSize, `${what} layout`);
      if (count === 0) return { data: new Float32Array(0), shape };
      if (at < 0) {
        // never written: HDF5 reads its fill value, zeros by default
        return { data: new Float32Array(count), shape };
      }
      if (size < bytes) throw fail(`${what} holds ${size} bytes, its shape ${shapeStr(shape)} needs ${bytes}`);
    }
  } else if (version === 1 || version === 2) {
    const rank = r.u8(layout.at + 1, `${what} layout`);
    if (cls === 0) {
      const p = layout.at + 8 + rank * 4;
      const size = r.u32(p, `${what} layout`);
      if (size < bytes) throw fail(`${what} holds ${size} bytes, its shape ${shapeStr(shape)} needs ${bytes}`);
      at = p + 4;
    } else {
      // contiguous (class 1)
      at = r.addr(layout.at + 8, `${what} layout`);
      if (at < 0 || count === 0) return { data: new Float32Array(count), shape };
    }
  } else {
    throw fail(`${what}: layout version ${version}`);
  }
  r.need(at, bytes, `${what} data`);
  return { data: decodeNumbers(r, at, count, type), shape };
}

/** `count` numbers of a numeric type at `at` (in the file's bounds), as float32; big-endian ones byte-swapped first. */
function decodeNumbers(r: Reader, at: number, count: number, type: Datatype): Float32Array {
  if (!type.bigEndian || type.size === 1) return decodeTensorBytes(r.view, at, count, type.dtype!);
  const swapped = new Uint8Array(count * type.size);
  for (let i = 0; i < count; i++) {
    for (let b = 0; b < type.size; b++) swapped[i * type.size + b] = r.bytes[at + (i + 1) * type.size - 1 - b];
  }
  return decodeTensorBytes(new DataView(swapped.buffer), 0, count, type.dtype!);
}

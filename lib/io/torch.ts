// PyTorch's torch.save files (.pt / .pth / .bin): a zip archive holding a pickle (data.pkl)
// and one raw storage per tensor (data/<key>) — or, in the legacy format (PyTorch before
// 1.6, and `_use_new_zipfile_serialization=False` since), pickles and storages one after
// another in a single stream. TorchScript's torch.jit.save writes the zip format too. A state
// dict, a checkpoint of nested dicts and lists around state dicts, or a module saved whole
// comes back as flat named float32 tensors, so `loadStateDict(loadTorch(bytes).tensors,
// { prefix })` takes it as a safetensors file.
//
// The pickle is read by a small interpreter, not run: it knows the opcodes torch.save
// writes and builds only dicts, lists, tuples, scalars, tensors and inert objects (a class's
// instance is its state, as plain attributes; no class is ever called). Calling any function
// outside the short list below is LSTM_FORMAT, so a hostile file can do nothing but be
// refused; every size and offset is checked against the bytes present.
import { LstmError, describe } from '../errors.js';
import { inflateRaw } from './inflate.js';
import { MAX_ELEMENTS, checkTensor, gatherStrided, shapeStr, type Tensor } from '../tensor.js';
import { DTYPE_SIZE, decodeTensorBytes, type Dtype } from './safetensors.js';

function fmtErr(msg: string): LstmError {
  return new LstmError('LSTM_FORMAT', `torch.save file: ${msg}`);
}

// ---------------------------------------------------------------- zip (stored entries)

export interface ZipEntry {
  name: string;
  /** Offset of the entry's bytes in the file, and their length. */
  start: number;
  size: number;
  /** 0: stored. TorchScript archives deflate their code; torch.save stores what this reader reads. */
  method: number;
  /** The entry's uncompressed size and CRC-32, from the central directory. */
  usize: number;
  crc: number;
}

/**
 * An entry's bytes: stored ones in place, deflated ones (method 8) inflated to the size the
 * directory gives and checked against its CRC-32.
 */
export function zipEntryBytes(bytes: Uint8Array, e: ZipEntry, what: string): Uint8Array {
  if (e.method === 0) return bytes.subarray(e.start, e.start + e.size);
  if (e.method !== 8) throw new LstmError('LSTM_FORMAT', `${what}: entry '${e.name}' is compressed with method ${e.method} (stored and deflate are read)`);
  const data = inflateRaw(bytes, e.usize, `${what}: entry '${e.name}'`, e.start, e.start + e.size).data;
  if (crc32(data) !== e.crc) throw new LstmError('LSTM_FORMAT', `${what}: entry '${e.name}' fails its CRC-32`);
  return data;
}

/** A zip archive's entries from its central directory (zip64 too); `what` names the file in errors. */
export function readZip(bytes: Uint8Array, what = 'torch.save file'): Map<string, ZipEntry> {
  const fmtErr = (msg: string) => new LstmError('LSTM_FORMAT', `${what}: ${msg}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = bytes.byteLength;
  const u16 = (o: number) => view.getUint16(o, true);
  const u32 = (o: number) => view.getUint32(o, true);
  const u64 = (o: number) => {
    const v = view.getBigUint64(o, true);
    if (v > BigInt(len)) throw fmtErr(`a zip64 field (${v}) points past the file's ${len} bytes`);
    return Number(v);
  };
  // The end-of-central-directory record: within the last 64 KiB + 22 bytes.
  let eocd = -1;
  for (let o = len - 22; o >= Math.max(0, len - 22 - 0xffff); o--) {
    if (u32(o) === 0x06054b50) {
      eocd = o;
      break;
    }
  }
  if (eocd < 0) throw fmtErr('not a zip archive (no end-of-central-directory record)');
  let count = u16(eocd + 10);
  let cdSize = u32(eocd + 12);
  let cdStart = u32(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdStart === 0xffffffff) {
    // zip64: the locator sits just before the EOCD and points at the zip64 EOCD record.
    const loc = eocd - 20;
    if (loc < 0 || u32(loc) !== 0x07064b50) throw fmtErr('zip64 sizes without a zip64 end-of-central-directory locator');
    const rec = u64(loc + 8);
    if (rec + 56 > len || u32(rec) !== 0x06064b50) throw fmtErr('the zip64 end-of-central-directory record is missing');
    count = u64(rec + 32);
    cdSize = u64(rec + 40);
    cdStart = u64(rec + 48);
  }
  if (cdStart + cdSize > len) throw fmtErr(`the central directory (${cdSize} bytes at ${cdStart}) runs past the file's ${len} bytes`);
  // Each central directory entry takes at least 46 bytes: the count cannot claim more.
  if (count > cdSize / 46) throw fmtErr(`${count} entries cannot fit in a central directory of ${cdSize} bytes`);
  const entries = new Map<string, ZipEntry>();
  const utf8 = new TextDecoder('utf-8', { fatal: false });
  let p = cdStart;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdStart + cdSize || u32(p) !== 0x02014b50) throw fmtErr(`central directory entry ${i} is damaged`);
    const method = u16(p + 10);
    const crc = u32(p + 16);
    let size = u32(p + 20);
    let usize = u32(p + 24);
    const nameLen = u16(p + 28);
    const extraLen = u16(p + 30);
    const commentLen = u16(p + 32);
    let local = u32(p + 42);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cdStart + cdSize) throw fmtErr(`central directory entry ${i} runs past the directory`);
    const name = utf8.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    // zip64 extra field: the 64-bit values of whichever fields read 0xffffffff, in order.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen; ) {
      const id = u16(e);
      const n = u16(e + 2);
      if (e + 4 + n > p + 46 + nameLen + extraLen) throw fmtErr(`entry '${name}': a damaged extra field`);
      if (id === 0x0001) {
        let q = e + 4;
        const next = (): number => {
          if (q + 8 > e + 4 + n) throw fmtErr(`entry '${name}': a short zip64 extra field`);
          const v = u64(q);
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = next();
        if (size === 0xffffffff) size = next();
        if (local === 0xffffffff) local = next();
      }
      e += 4 + n;
    }
    if (method === 0 && size !== usize) throw fmtErr(`entry '${name}': stored size ${size} differs from its size ${usize}`);
    if (local + 30 > len || u32(local) !== 0x04034b50) throw fmtErr(`entry '${name}': no local header at ${local}`);
    const start = local + 30 + u16(local + 26) + u16(local + 28);
    if (start + size > len) throw fmtErr(`entry '${name}': ${size} bytes at ${start} run past the file's ${len} bytes`);
    entries.set(name, { name, start, size, method, usize, crc });
    p = end;
  }
  return entries;
}

// ---------------------------------------------------------------- pickle

/** A global the pickle names, by 'module.name': only those in CALLABLES are ever called. */
class Global {
  constructor(readonly path: string) {}
}
/**
 * An object the pickle makes from a class it names (NEWOBJ), as a module pickled whole
 * (torch.save(model)) or saved by TorchScript (torch.jit.save) is made. The class never runs:
 * the object is its state (BUILD), kept as plain attributes.
 */
class Inert {
  readonly attrs = new Map<Value, Value>();
  constructor(readonly cls: string) {}
}
/**
 * A persistent id: one storage of the archive, of `stored` elements — or, in the legacy
 * format, a view of one: its `numel` elements from `base` on.
 */
class Storage {
  constructor(
    readonly dtype: Dtype,
    readonly key: string,
    readonly numel: number,
    readonly base = 0,
    readonly stored = numel,
  ) {}
}
/** What _rebuild_tensor_v2 describes: a strided view of a storage. */
class TorchTensor {
  constructor(
    readonly storage: Storage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

const STORAGES: Record<string, Dtype> = {
  'torch.FloatStorage': 'F32',
  'torch.DoubleStorage': 'F64',
  'torch.HalfStorage': 'F16',
  'torch.BFloat16Storage': 'BF16',
  'torch.LongStorage': 'I64',
  'torch.IntStorage': 'I32',
  'torch.ShortStorage': 'I16',
  'torch.CharStorage': 'I8',
  'torch.ByteStorage': 'U8',
  'torch.BoolStorage': 'BOOL',
};
// The callables torch.load's own weights_only reader allows for plain data, less the ones
// that only matter to tensor subclasses, sparse or quantized tensors.
const CALLABLES = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'torch.nn.parameter.Parameter',
  'torch.device',
  'torch.Size',
  '_codecs.encode',
  'builtins.set',
  'builtins.frozenset',
  // TorchScript's typed containers (torch.jit.save): the list, tagged with its type
  'torch.jit._pickle.restore_type_tag',
  'torch.jit._pickle.build_tensorlist',
  'torch.jit._pickle.build_intlist',
  'torch.jit._pickle.build_doublelist',
  'torch.jit._pickle.build_boollist',
]);

type Value = unknown;

function isInt(v: Value): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v);
}

function intList(v: Value, what: string): number[] {
  if (!Array.isArray(v) || !v.every((x) => isInt(x) && x >= 0)) throw fmtErr(`${what}: expected a tuple of non-negative integers, got ${describe(v)}`);
  return v as number[];
}

/** Call one of the known globals. */
function call(fn: Global, args: Value[]): Value {
  switch (fn.path) {
    case 'collections.OrderedDict':
      if (args.length !== 0) throw fmtErr('OrderedDict with arguments is not something torch.save writes');
      return new Map<Value, Value>();
    case 'torch._utils._rebuild_tensor': // PyTorch before 0.4: the same first four arguments
    case 'torch._utils._rebuild_tensor_v2': {
      const [storage, offset, size, stride] = args;
      const fname = fn.path.slice('torch._utils.'.length);
      if (!(storage instanceof Storage)) throw fmtErr(`${fname}: expected a storage, got ${describe(storage)}`);
      if (!isInt(offset) || offset < 0) throw fmtErr(`${fname}: storage offset ${describe(offset)} is not a non-negative integer`);
      const shape = intList(size, `${fname} size`);
      const strides = intList(stride, `${fname} stride`);
      if (shape.length !== strides.length) throw fmtErr(`${fname}: size ${shapeStr(shape)} and stride ${shapeStr(strides)} differ in length`);
      let count = 1;
      let last = offset; // the furthest element the view reads
      for (let k = 0; k < shape.length; k++) {
        count *= shape[k];
        if (count > MAX_ELEMENTS) throw fmtErr(`a tensor of size ${shapeStr(shape)} is too large`);
        last += (shape[k] - 1) * strides[k];
      }
      if (count > 0 && last >= storage.numel) throw fmtErr(`a tensor of size ${shapeStr(shape)}, stride ${shapeStr(strides)} at offset ${offset} reads past its storage of ${storage.numel} elements`);
      // More elements than its storage holds: a broadcast view (stride 0), which no state
      // dict needs and which would let a few bytes ask for gigabytes.
      if (count > storage.numel) throw fmtErr(`a tensor of size ${shapeStr(shape)} over a storage of ${storage.numel} elements (a broadcast view) is not a saved parameter`);
      return new TorchTensor(storage, offset, shape, strides);
    }
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
    case 'torch.nn.parameter.Parameter':
      if (!(args[0] instanceof TorchTensor)) throw fmtErr(`${fn.path}: expected a tensor, got ${describe(args[0])}`);
      return args[0];
    case 'torch.device': // torch.device('cuda', 0): kept as its arguments
    case 'torch.Size':
      return args.length === 1 ? args[0] : args;
    case '_codecs.encode':
      // How protocol 2 writes bytes: the text, latin-1. Kept as the string.
      return args[0];
    case 'builtins.set':
    case 'builtins.frozenset':
      return Array.isArray(args[0]) ? [...args[0]] : [];
    case 'torch.jit._pickle.restore_type_tag':
    case 'torch.jit._pickle.build_tensorlist':
    case 'torch.jit._pickle.build_intlist':
    case 'torch.jit._pickle.build_doublelist':
    case 'torch.jit._pickle.build_boollist':
      return args[0];
    default:
      throw fmtErr(`the pickle calls ${fn.path}, which this reader does not take: it reads state dicts, checkpoints and modules (their tensors and plain values), and runs nothing`);
  }
}

/**
 * Run the pickle's opcodes over a stack from byte `start`; the result is the object
 * torch.save wrote and the byte after its STOP (the legacy format writes pickles one after
 * another). Only the opcodes of protocols 2-5 that build plain data are known (no INST,
 * OBJ or EXT). Every storage the pickle names is recorded in `storages` by key.
 */
function unpickle(data: Uint8Array, start = 0, storages = new Map<string, Storage>()): { value: Value; end: number } {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  // Python's latin-1: byte n is code point n (TextDecoder's 'latin1' is windows-1252).
  const latin1 = (b: Uint8Array): string => {
    let out = '';
    for (let i = 0; i < b.length; i += 8192) out += String.fromCharCode(...b.subarray(i, i + 8192));
    return out;
  };
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let stack: Value[] = [];
  const marks: Value[][] = [];
  const memo = new Map<number, Value>();
  let p = start;
  const need = (n: number) => {
    if (p + n > data.length) throw fmtErr(`the pickle ends inside an opcode at byte ${p}`);
  };
  const pop = (): Value => {
    if (stack.length === 0) throw fmtErr(`the pickle pops an empty stack at byte ${p}`);
    return stack.pop();
  };
  const popMark = (): Value[] => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) throw fmtErr(`the pickle closes a MARK it never opened at byte ${p}`);
    stack = prev;
    return items;
  };
  const text = (n: number, utf: boolean): string => {
    need(n);
    const s = data.subarray(p, p + n);
    p += n;
    try {
      return utf ? utf8.decode(s) : latin1(s);
    } catch {
      throw fmtErr(`a string at byte ${p - n} is not valid UTF-8`);
    }
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) throw fmtErr(`the pickle ends inside a GLOBAL at byte ${p}`);
    const s = latin1(data.subarray(p, end));
    p = end + 1;
    return s;
  };
  // A name is only a name: what may be called is checked when the pickle calls it.
  // Protocol 2 names Python 3's builtins by their Python 2 module.
  const global = (module: string, name: string): Global => new Global(`${module === '__builtin__' ? 'builtins' : module}.${name}`);
  const setItems = (target: Value, items: Value[]) => {
    if (!(target instanceof Map)) throw fmtErr(`SETITEMS on ${describe(target)}, not a dict`);
    if (items.length % 2) throw fmtErr('SETITEMS with an odd number of values');
    for (let i = 0; i < items.length; i += 2) target.set(items[i], items[i + 1]);
  };
  for (;;) {
    need(1);
    const op = data[p++];
    switch (op) {
      case 0x80: // PROTO
        need(1);
        if (data[p] < 2 || data[p] > 5) throw fmtErr(`pickle protocol ${data[p]}`);
        p++;
        break;
      case 0x95: // FRAME
        need(8);
        p += 8;
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length) throw fmtErr('the pickle stops with a malformed stack');
        return { value: stack[0], end: p };
      case 0x28: // MARK
        marks.push(stack);
        stack = [];
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x74: {
        // TUPLE (popMark replaces the stack: take the items first, then push)
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x6c: {
        // LIST
        const items = popMark();
        stack.push(items);
        break;
      }
      case 0x64: {
        // DICT
        const d = new Map<Value, Value>();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        const list = stack[stack.length - 1];
        if (!Array.isArray(list)) throw fmtErr(`APPEND to ${describe(list)}, not a list`);
        list.push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        const list = stack[stack.length - 1];
        if (!Array.isArray(list)) throw fmtErr(`APPENDS to ${describe(list)}, not a list`);
        for (const v of items) list.push(v);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(stack[stack.length - 1], [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(stack[stack.length - 1], items);
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        need(1);
        stack.push(data[p]);
        p += 1;
        break;
      case 0x4d: // BININT2
        need(2);
        stack.push(view.getUint16(p, true));
        p += 2;
        break;
      case 0x4a: // BININT
        need(4);
        stack.push(view.getInt32(p, true));
        p += 4;
        break;
      case 0x8a: {
        // LONG1: n bytes, two's complement little-endian
        need(1);
        const n = data[p++];
        need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[p + i]);
        if (n > 0 && data[p + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        const num = Number(v);
        stack.push(Number.isSafeInteger(num) ? num : v);
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(p, false));
        p += 8;
        break;
      case 0x58: {
        // BINUNICODE
        need(4);
        const n = view.getUint32(p, true);
        p += 4;
        stack.push(text(n, true));
        break;
      }
      case 0x8c: {
        // SHORT_BINUNICODE
        need(1);
        const n = data[p++];
        stack.push(text(n, true));
        break;
      }
      case 0x8d: {
        // BINUNICODE8
        need(8);
        const n = Number(view.getBigUint64(p, true));
        p += 8;
        if (n > data.length) throw fmtErr(`a string of ${n} bytes in a pickle of ${data.length}`);
        stack.push(text(n, true));
        break;
      }
      case 0x54: // BINSTRING
      case 0x42: {
        // BINBYTES
        need(4);
        const n = view.getUint32(p, true);
        p += 4;
        stack.push(text(n, false));
        break;
      }
      case 0x55: // SHORT_BINSTRING
      case 0x43: {
        // SHORT_BINBYTES
        need(1);
        const n = data[p++];
        stack.push(text(n, false));
        break;
      }
      case 0x63: // GLOBAL
        stack.push(global(line(), line()));
        break;
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw fmtErr('STACK_GLOBAL without two strings');
        stack.push(global(module, name));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!(fn instanceof Global) || !Array.isArray(args)) throw fmtErr(`REDUCE of ${describe(fn)}`);
        stack.push(call(fn, args));
        break;
      }
      case 0x81: // NEWOBJ: cls.__new__(cls, *args)
      case 0x92: {
        // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
        if (op === 0x92) pop();
        const args = pop();
        const cls = pop();
        if (!(cls instanceof Global) || !Array.isArray(args)) throw fmtErr(`NEWOBJ of ${describe(cls)}`);
        stack.push(cls.path === 'collections.OrderedDict' ? new Map<Value, Value>() : new Inert(cls.path));
        break;
      }
      case 0x62: {
        // BUILD: set the state of the object below. An object's state becomes its attributes
        // (a dict, or (dict, slots)). A state dict's OrderedDict carries _metadata (versions
        // of each module), and a tensor its Python attributes: dropped.
        const state = pop();
        const obj = stack[stack.length - 1];
        if (obj instanceof Inert) {
          const parts = Array.isArray(state) && state.length === 2 ? state : [state];
          for (const part of parts) {
            if (part instanceof Map) for (const [k, v] of part) obj.attrs.set(k, v);
            else if (part !== null) obj.attrs.set('__state__', part);
          }
        } else if (!(obj instanceof Map) && !(obj instanceof TorchTensor)) {
          throw fmtErr(`BUILD on ${describe(obj)}`);
        }
        break;
      }
      case 0x51: {
        // BINPERSID: ('storage', <Storage class>, key, location, numel), and in the legacy
        // format a sixth item: null, or (view key, offset, numel) for a view of that storage.
        const pid = pop();
        if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5 || pid.length > 6) throw fmtErr(`persistent id ${describe(pid)} is not a storage`);
        const [, cls, key, , numel, viewOf] = pid;
        if (!(cls instanceof Global) || !Object.hasOwn(STORAGES, cls.path)) throw fmtErr(`storage type ${describe(cls)}`);
        if (typeof key !== 'string' || !isInt(numel) || numel < 0) throw fmtErr(`storage ${describe(key)} of ${describe(numel)} elements`);
        const storage = new Storage(STORAGES[cls.path], key, numel);
        const known = storages.get(key);
        if (known && (known.dtype !== storage.dtype || known.numel !== numel)) throw fmtErr(`storage '${key}' is named again as ${numel} ${storage.dtype} elements, first as ${known.numel} ${known.dtype}`);
        storages.set(key, storage);
        if (viewOf === undefined || viewOf === null) {
          stack.push(storage);
        } else {
          const [, offset, size] = Array.isArray(viewOf) && viewOf.length === 3 ? viewOf : [];
          if (!isInt(offset) || !isInt(size) || offset < 0 || size < 0 || offset + size > numel) {
            throw fmtErr(`storage '${key}' of ${numel} elements: view ${describe(viewOf)} is not (key, offset, numel) inside it`);
          }
          stack.push(new Storage(storage.dtype, key, size, offset, numel));
        }
        break;
      }
      case 0x71: // BINPUT
        need(1);
        memo.set(data[p++], stack[stack.length - 1]);
        break;
      case 0x72: // LONG_BINPUT
        need(4);
        memo.set(view.getUint32(p, true), stack[stack.length - 1]);
        p += 4;
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, stack[stack.length - 1]);
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const n = op === 0x68 ? 1 : 4;
        need(n);
        const k = n === 1 ? data[p] : view.getUint32(p, true);
        p += n;
        if (!memo.has(k)) throw fmtErr(`the pickle reads memo ${k}, never written`);
        stack.push(memo.get(k));
        break;
      }
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(stack[stack.length - 1]);
        break;
      default:
        throw fmtErr(`pickle opcode 0x${op.toString(16)} at byte ${p - 1} is not one torch.save writes`);
    }
  }
}

// ---------------------------------------------------------------- tensors

export interface TorchFile {
  /** Every tensor, float32, named by its path through the saved dicts and lists ('model.lstm.weight_ih_l0'). */
  tensors: Record<string, Tensor & { dtype: Dtype }>;
  /** The other leaves (numbers, strings, booleans, null) by the same kind of path, e.g. { epoch: 12 }. */
  values: Record<string, string | number | boolean | null>;
}

/** A torch.save file read as far as its pickle: the root object and where each storage's bytes lie. */
interface Archive {
  root: Value;
  storage(key: string): { start: number; size: number } | undefined;
  /** Bytes the file's storages (zip: all entries) take, for the reader's allocation budget. */
  stored: number;
}

function readZipArchive(bytes: Uint8Array): Archive {
  if (bytes.byteLength < 22) throw fmtErr(`a file of ${bytes.byteLength} bytes is too short for a zip archive`);
  const entries = readZip(bytes);
  const pkl = [...entries.values()].filter((e) => e.name === 'data.pkl' || e.name.endsWith('/data.pkl'));
  if (pkl.length !== 1) throw fmtErr(pkl.length ? 'more than one data.pkl in the archive' : 'no data.pkl in the archive: not a torch.save file');
  const prefix = pkl[0].name.slice(0, -'data.pkl'.length);
  const stored = (e: ZipEntry | undefined): ZipEntry | undefined => {
    if (e && e.method !== 0) throw fmtErr(`entry '${e.name}' is compressed (method ${e.method}); torch.save stores entries uncompressed`);
    return e;
  };
  stored(pkl[0]);
  const order = entries.get(`${prefix}byteorder`);
  if (order) {
    const o = new TextDecoder().decode(bytes.subarray(order.start, order.start + order.size)).trim();
    if (o !== 'little') throw fmtErr(`its tensors are stored ${o}-endian; save it again on a little-endian machine`);
  }
  const { value: root } = unpickle(bytes.subarray(pkl[0].start, pkl[0].start + pkl[0].size));
  return {
    root,
    storage: (key) => stored(entries.get(`${prefix}data/${key}`)),
    stored: [...entries.values()].reduce((a, e) => a + e.size, 0),
  };
}

// The legacy format's first pickle: torch.serialization.MAGIC_NUMBER.
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/**
 * The legacy format (torch.save before PyTorch 1.6, or with
 * _use_new_zipfile_serialization=False): five pickles in a row — the magic number, the
 * protocol version (1001), the machine's byte order and type sizes, the object, and the
 * sorted list of storage keys — then each storage in that order as an int64 element count
 * and its raw bytes.
 */
function readLegacyArchive(bytes: Uint8Array): Archive {
  const magic = unpickle(bytes);
  if (magic.value !== LEGACY_MAGIC) throw fmtErr('neither a zip archive nor the legacy format (its first pickle is not the magic number torch.save writes)');
  const version = unpickle(bytes, magic.end);
  if (version.value !== 1001) throw fmtErr(`legacy format version ${describe(version.value)}: only 1001 is known`);
  const info = unpickle(bytes, version.end);
  if (!(info.value instanceof Map)) throw fmtErr(`legacy format: its system information is ${describe(info.value)}, not a dict`);
  if (info.value.get('little_endian') !== true) throw fmtErr('its tensors are stored big-endian; save it again on a little-endian machine');
  const storages = new Map<string, Storage>();
  const main = unpickle(bytes, info.end, storages);
  const keys = unpickle(bytes, main.end);
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === 'string')) throw fmtErr(`legacy format: the storage keys are ${describe(keys.value)}, not a list of strings`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const at = new Map<string, { start: number; size: number }>();
  let p = keys.end;
  for (const key of keys.value as string[]) {
    const s = storages.get(key);
    if (!s) throw fmtErr(`storage '${key}' is listed, but no tensor names it`);
    if (at.has(key)) throw fmtErr(`storage '${key}' is listed twice`);
    if (p + 8 > bytes.length) throw fmtErr(`the file ends at byte ${bytes.length}, before storage '${key}'`);
    const numel = view.getBigInt64(p, true);
    if (numel !== BigInt(s.numel)) throw fmtErr(`storage '${key}' holds ${numel} elements, not the ${s.numel} ${s.dtype} elements its tensors name`);
    const size = s.numel * DTYPE_SIZE[s.dtype];
    if (p + 8 + size > bytes.length) throw fmtErr(`storage '${key}': ${size} bytes at ${p + 8} run past the file's ${bytes.length} bytes`);
    at.set(key, { start: p + 8, size });
    p += 8 + size;
  }
  return { root: main.value, storage: (key) => at.get(key), stored: p - keys.end };
}

/**
 * Read a torch.save file — the zip format of PyTorch 1.6+ or the legacy one before it: a
 * state dict, or a checkpoint of dicts and lists holding state dicts and plain values, or a
 * module saved whole (torch.save(model), torch.jit.save), read as its state dict. Tensors
 * come back as float32 (every dtype converted), named by their path, e.g.
 * `loadTorch(bytes).tensors['model.weight_ih_l0']`. A pickle that calls anything but the
 * few functions that rebuild tensors and containers is LSTM_FORMAT.
 */
export function loadTorch(bytes: Uint8Array): TorchFile {
  if (!(bytes instanceof Uint8Array)) throw new LstmError('LSTM_FORMAT', `loadTorch: expected a Uint8Array, got ${describe(bytes)}`);
  // A pickle starts with PROTO (0x80) and its version; a zip archive with 'PK'.
  const legacy = bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] >= 2 && bytes[1] <= 5;
  if (!legacy && bytes.length >= 262 && new TextDecoder().decode(bytes.subarray(257, 262)) === 'ustar') {
    throw fmtErr('a tar archive: the format of PyTorch before 0.4, which this reader does not take; load and save it again with a current PyTorch');
  }
  const archive = legacy ? readLegacyArchive(bytes) : readZipArchive(bytes);

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const decoded = new Map<string, Float32Array>();
  const storageData = (s: Storage): Float32Array => {
    let d = decoded.get(s.key);
    if (!d) {
      const e = archive.storage(s.key);
      if (!e) throw fmtErr(`storage '${s.key}' is not in the archive`);
      if (e.size !== s.stored * DTYPE_SIZE[s.dtype]) throw fmtErr(`storage '${s.key}' holds ${e.size} bytes, not the ${s.stored * DTYPE_SIZE[s.dtype]} of ${s.stored} ${s.dtype} elements`);
      d = decodeTensorBytes(view, e.start, s.stored, s.dtype);
      decoded.set(s.key, d);
    }
    return d;
  };
  // Tensors may share a storage (views of one buffer, e.g. parameters saved from a GPU
  // LSTM's flat weights), but together they may not ask for more than twice what the
  // storages hold: a file cannot make the reader allocate more than its own size justifies.
  let budget = 2 * archive.stored + 65536;
  const materialize = (t: TorchTensor): Tensor & { dtype: Dtype } => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    budget -= n;
    if (budget < 0) throw fmtErr('its tensors ask for more elements than its storages hold twice over (views repeated over one storage)');
    const src = storageData(t.storage);
    const out = new Float32Array(n);
    const contiguous = t.shape.every((_, k) => t.shape[k] === 1 || t.stride[k] === t.shape.slice(k + 1).reduce((a, b) => a * b, 1));
    const offset = t.storage.base + t.offset;
    if (contiguous) out.set(src.subarray(offset, offset + n));
    else gatherStrided(src, offset, t.shape, t.stride, out);
    return { data: out, shape: t.shape.slice(), dtype: t.storage.dtype };
  };

  const tensors: TorchFile['tensors'] = {};
  const values: TorchFile['values'] = {};
  const seen = new Set<Value>();
  const walk = (v: Value, path: string, depth: number): void => {
    if (depth > 64) throw fmtErr(`containers nested deeper than 64 at '${path}'`);
    const at = (k: string | number) => (path ? `${path}.${k}` : String(k));
    if (v instanceof TorchTensor) {
      tensors[path] = materialize(v);
    } else if (v instanceof Inert) {
      if (seen.has(v)) return;
      seen.add(v);
      // A torch.nn.Module pickled whole keeps its parameters, persistent buffers and
      // submodules in _parameters, _buffers and _modules: named as its state_dict() names
      // them. Its other public attributes (hyperparameters), and every public attribute of
      // a TorchScript module (parameters, buffers and submodules among them), by name.
      const a = v.attrs;
      const dict = (k: string): [Value, Value][] => {
        const m = a.get(k);
        return m instanceof Map ? [...m.entries()] : [];
      };
      const transient = a.get('_non_persistent_buffers_set');
      const skip = new Set(Array.isArray(transient) ? transient : []);
      const items: [Value, Value][] = [...dict('_parameters'), ...dict('_buffers').filter(([k]) => !skip.has(k)), ...dict('_modules'), ...[...a.entries()].filter(([k]) => typeof k === 'string' && !k.startsWith('_'))];
      for (const [k, x] of items) {
        if (typeof k === 'string' || typeof k === 'number') walk(x, at(k), depth + 1);
      }
    } else if (v instanceof Map || Array.isArray(v)) {
      if (seen.has(v)) return; // a container the pickle shares (memo) is read once
      seen.add(v);
      const items: [Value, Value][] = v instanceof Map ? [...v.entries()] : v.map((x, i) => [i, x]);
      for (const [k, x] of items) {
        if (typeof k !== 'string' && typeof k !== 'number') continue;
        walk(x, at(k), depth + 1);
      }
    } else if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
      if (path) values[path] = v;
    } else if (typeof v === 'bigint') {
      if (path) values[path] = Number(v);
    }
  };
  walk(archive.root, '', 0);
  return { tensors, values };
}

// ---------------------------------------------------------------- writing

let crcTable: Uint32Array | undefined;
function crc32(b: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = crcTable[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * A zip archive of stored entries, each entry's data aligned to 64 bytes as PyTorch's writer
 * does. Internal (the tests build hostile archives with it); not part of the package's API.
 */
export function writeZip(entries: [string, Uint8Array][]): Uint8Array {
  const enc = new TextEncoder();
  const chunks: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = enc.encode(name);
    // Pad the local header's extra field ('FB', as torch.save writes) so the data starts at a multiple of 64.
    const pad = (64 - ((offset + 30 + n.length + 4) % 64)) % 64;
    const extraLen = 4 + pad;
    const local = new Uint8Array(30 + n.length + extraLen);
    const lv = new DataView(local.buffer);
    const crc = crc32(data);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true); // version needed
    lv.setUint16(6, 0x0800, true); // UTF-8 names
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, n.length, true);
    lv.setUint16(28, extraLen, true);
    local.set(n, 30);
    lv.setUint16(30 + n.length, 0x4246, true); // 'FB'
    lv.setUint16(32 + n.length, pad, true);
    local.fill(0x5a, 34 + n.length); // 'Z'
    const cd = new Uint8Array(46 + n.length);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(8, 0x0800, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, n.length, true);
    cv.setUint32(42, offset, true);
    cd.set(n, 46);
    chunks.push(local, data);
    central.push(cd);
    offset += local.length + data.length;
  }
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  if (offset + cdSize > 0xffffffff || entries.length > 0xffff) {
    throw new LstmError('LSTM_SHAPE', `saveTorch: ${offset + cdSize} bytes in ${entries.length} entries need zip64, which this writer does not write (save as safetensors)`);
  }
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  const all = [...chunks, ...central, eocd];
  const out = new Uint8Array(all.reduce((a, c) => a + c.length, 0));
  let o = 0;
  for (const c of all) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/** Pickle opcodes (protocol 2) for what saveTorch writes. */
class PickleWriter {
  private readonly bytes: number[] = [];
  private readonly enc = new TextEncoder();
  op(...b: number[]): this {
    for (const x of b) this.bytes.push(x);
    return this;
  }
  str(s: string): this {
    const b = this.enc.encode(s);
    this.op(0x58, b.length & 255, (b.length >>> 8) & 255, (b.length >>> 16) & 255, b.length >>> 24);
    for (const x of b) this.bytes.push(x);
    return this;
  }
  /** A non-negative int below 2^31 (sizes and element counts: tensors stay under 2^31 elements). */
  int(n: number): this {
    if (n < 256) return this.op(0x4b, n); // BININT1
    return this.op(0x4a, n & 255, (n >> 8) & 255, (n >> 16) & 255, n >>> 24); // BININT
  }
  global(module: string, name: string): this {
    this.op(0x63);
    for (const x of this.enc.encode(`${module}\n${name}\n`)) this.bytes.push(x);
    return this;
  }
  tuple(items: number[]): this {
    this.op(0x28);
    for (const v of items) this.int(v);
    return this.op(0x74);
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

/**
 * Write tensors as torch.save writes a state dict (PyTorch 1.6+ zip format, float32, an
 * OrderedDict of contiguous tensors), so `torch.load(path)` (also with weights_only=True)
 * gives a state dict for `module.load_state_dict`, without the safetensors package.
 */
export function saveTorch(tensors: Record<string, Tensor>): Uint8Array {
  if (tensors === null || typeof tensors !== 'object') throw new LstmError('LSTM_SHAPE', `saveTorch: expected an object of tensors, got ${describe(tensors)}`);
  const entries: [string, Uint8Array][] = [];
  const p = new PickleWriter().op(0x80, 2).global('collections', 'OrderedDict').op(0x29, 0x52); // OrderedDict()
  p.op(0x28); // MARK for SETITEMS
  let key = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const checked = checkTensor(t, `tensors['${name}']`);
    const storage = String(key++);
    const { shape } = checked;
    const stride = shape.map((_, k) => shape.slice(k + 1).reduce((a, b) => a * b, 1));
    p.str(name).global('torch._utils', '_rebuild_tensor_v2').op(0x28); // MARK (args)
    p.op(0x28).str('storage').global('torch', 'FloatStorage').str(storage).str('cpu').int(checked.data.length).op(0x74, 0x51); // BINPERSID
    p.int(0).tuple(shape).tuple(stride).op(0x89); // offset, size, stride, requires_grad=False
    p.global('collections', 'OrderedDict').op(0x29, 0x52); // backward_hooks
    p.op(0x74, 0x52); // args tuple, REDUCE
    const data = new Uint8Array(checked.data.length * 4);
    const view = new DataView(data.buffer);
    for (let i = 0; i < checked.data.length; i++) view.setFloat32(4 * i, checked.data[i], true);
    entries.push([`archive/data/${storage}`, data]);
  }
  p.op(0x75, 0x2e); // SETITEMS, STOP
  const enc = new TextEncoder();
  return writeZip([['archive/data.pkl', p.finish()], ['archive/byteorder', enc.encode('little')], ...entries, ['archive/version', enc.encode('3\n')]]);
}

/**
 * DEFLATE (RFC 1951) and its zlib wrapper (RFC 1950), decoded here so the browser bundle needs
 * no zlib: HDF5's gzip filter and deflated zip entries. The output size is known in both
 * (a chunk's size, a zip entry's uncompressed size) and is never exceeded, so a small hostile
 * stream cannot make a large allocation; every malformed stream is LSTM_FORMAT.
 */
import { LstmError } from '../errors.js';

function fail(what: string, msg: string): LstmError {
  return new LstmError('LSTM_FORMAT', `${what}: ${msg}`);
}

/** The most DEFLATE expands: 258 bytes from 2 bits. */
export const MAX_RATIO = 1032;

// Base lengths and extra bits of length symbols 257..285, and of distance symbols 0..29.
const LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
// The order in which a dynamic block lists its code-length code lengths.
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

/**
 * A canonical Huffman code as a lookup table indexed by the next `bits` input bits (least
 * significant first, as DEFLATE packs them): each entry is symbol << 4 | code length, 0 where
 * no code matches.
 */
interface Table {
  entries: Uint32Array;
  bits: number;
}

function buildTable(lengths: ArrayLike<number>, n: number, what: string, allowIncomplete: boolean): Table {
  const count = new Uint16Array(16);
  let maxLen = 0;
  for (let i = 0; i < n; i++) {
    count[lengths[i]]++;
    if (lengths[i] > maxLen) maxLen = lengths[i];
  }
  count[0] = 0;
  // over-subscribed codes are invalid; incomplete ones only where RFC 1951 allows them
  let left = 1;
  for (let len = 1; len <= 15; len++) {
    left = left * 2 - count[len];
    if (left < 0) throw fail(what, 'an over-subscribed Huffman code');
  }
  const used = n - count[0];
  if (left > 0 && !(allowIncomplete || used <= 1)) throw fail(what, 'an incomplete Huffman code');
  const bits = Math.max(1, maxLen);
  const entries = new Uint32Array(1 << bits);
  const next = new Uint16Array(16);
  let code = 0;
  for (let len = 1; len <= 15; len++) {
    code = (code + count[len - 1]) << 1;
    next[len] = code;
  }
  for (let sym = 0; sym < n; sym++) {
    const len = lengths[sym];
    if (len === 0) continue;
    // the code's bits reversed, since the stream gives them least significant first
    let c = next[len]++;
    let rev = 0;
    for (let i = 0; i < len; i++) {
      rev = (rev << 1) | (c & 1);
      c >>= 1;
    }
    for (let i = rev; i < 1 << bits; i += 1 << len) entries[i] = (sym << 4) | len;
  }
  return { entries, bits };
}

let fixedLit: Table | null = null;
let fixedDist: Table | null = null;

class BitReader {
  pos: number;
  bitBuf = 0;
  bitCount = 0;
  constructor(
    readonly src: Uint8Array,
    start: number,
    readonly end: number,
    readonly what: string,
  ) {
    this.pos = start;
  }
  /** Make `n` (<= 24) bits available; past the input's end they read as zeros, caught by `done`. */
  fill(n: number): void {
    while (this.bitCount < n) {
      const b = this.pos < this.end ? this.src[this.pos] : 0;
      this.pos++;
      this.bitBuf |= b << this.bitCount;
      this.bitCount += 8;
    }
  }
  bits(n: number): number {
    if (n === 0) return 0;
    this.fill(n);
    const v = this.bitBuf & ((1 << n) - 1);
    this.bitBuf >>>= n;
    this.bitCount -= n;
    this.check();
    return v;
  }
  decode(t: Table): number {
    this.fill(t.bits);
    const e = t.entries[this.bitBuf & ((1 << t.bits) - 1)];
    const len = e & 15;
    if (len === 0) throw fail(this.what, 'a code that is not in its Huffman table');
    this.bitBuf >>>= len;
    this.bitCount -= len;
    this.check();
    return e >> 4;
  }
  /** Bits consumed past the input's end: the stream is cut short. */
  check(): void {
    if (this.pos - ((this.bitCount / 8) | 0) > this.end) throw fail(this.what, 'the compressed stream ends early');
  }
  /** Drop the bits left in the current byte; the byte position after them. */
  alignedPos(): number {
    const whole = (this.bitCount / 8) | 0;
    this.bitBuf = 0;
    this.bitCount = 0;
    this.pos -= whole;
    return this.pos;
  }
}

/**
 * Decode a raw DEFLATE stream from src[start..end) into exactly `outSize` bytes. The byte
 * position after the stream's last block is returned with the output.
 */
export function inflateRaw(src: Uint8Array, outSize: number, what: string, start = 0, end = src.length): { data: Uint8Array; end: number } {
  // A DEFLATE stream cannot expand more than 1032:1 (258 bytes from a 1-bit length code and
  // a 1-bit distance code), so a larger claim is refused before anything is allocated.
  if (!Number.isSafeInteger(outSize) || outSize < 0 || outSize > MAX_RATIO * (end - start)) {
    throw fail(what, `${end - start} compressed bytes cannot decompress to ${outSize}`);
  }
  const out = new Uint8Array(outSize);
  const br = new BitReader(src, start, end, what);
  let op = 0;
  let last = 0;
  while (!last) {
    last = br.bits(1);
    const type = br.bits(2);
    if (type === 0) {
      let p = br.alignedPos();
      if (p + 4 > end) throw fail(what, 'the compressed stream ends early');
      const len = src[p] | (src[p + 1] << 8);
      const nlen = src[p + 2] | (src[p + 3] << 8);
      if ((len ^ 0xffff) !== nlen) throw fail(what, 'a stored block whose length does not match its complement');
      p += 4;
      if (p + len > end) throw fail(what, 'the compressed stream ends early');
      if (op + len > outSize) throw fail(what, `it decompresses to more than its ${outSize} bytes`);
      out.set(src.subarray(p, p + len), op);
      op += len;
      br.pos = p + len;
      continue;
    }
    let lit: Table;
    let dist: Table;
    if (type === 1) {
      if (!fixedLit || !fixedDist) {
        const l = new Uint8Array(288);
        l.fill(8, 0, 144);
        l.fill(9, 144, 256);
        l.fill(7, 256, 280);
        l.fill(8, 280, 288);
        fixedLit = buildTable(l, 288, what, false);
        fixedDist = buildTable(new Uint8Array(30).fill(5), 30, what, true);
      }
      lit = fixedLit;
      dist = fixedDist;
    } else if (type === 2) {
      const nlen = br.bits(5) + 257;
      const ndist = br.bits(5) + 1;
      const ncode = br.bits(4) + 4;
      if (nlen > 286 || ndist > 30) throw fail(what, `a dynamic block of ${nlen} literal/length and ${ndist} distance codes`);
      const cl = new Uint8Array(19);
      for (let i = 0; i < ncode; i++) cl[CL_ORDER[i]] = br.bits(3);
      const clTable = buildTable(cl, 19, what, false);
      const lengths = new Uint8Array(nlen + ndist);
      for (let i = 0; i < nlen + ndist; ) {
        const sym = br.decode(clTable);
        if (sym < 16) {
          lengths[i++] = sym;
          continue;
        }
        let rep: number;
        let val = 0;
        if (sym === 16) {
          if (i === 0) throw fail(what, 'a repeat of no previous code length');
          val = lengths[i - 1];
          rep = 3 + br.bits(2);
        } else if (sym === 17) {
          rep = 3 + br.bits(3);
        } else {
          rep = 11 + br.bits(7);
        }
        if (i + rep > nlen + ndist) throw fail(what, 'code lengths that run past their count');
        lengths.fill(val, i, i + rep);
        i += rep;
      }
      if (lengths[256] === 0) throw fail(what, 'a dynamic block without an end-of-block code');
      lit = buildTable(lengths.subarray(0, nlen), nlen, what, false);
      dist = buildTable(lengths.subarray(nlen), ndist, what, true);
    } else {
      throw fail(what, 'a block of the reserved type 3');
    }
    for (;;) {
      const sym = br.decode(lit);
      if (sym < 256) {
        if (op >= outSize) throw fail(what, `it decompresses to more than its ${outSize} bytes`);
        out[op++] = sym;
      } else if (sym === 256) {
        break;
      } else {
        const li = sym - 257;
        if (li >= 29) throw fail(what, `the invalid length symbol ${sym}`);
        const len = LEN_BASE[li] + br.bits(LEN_EXTRA[li]);
        const di = br.decode(dist);
        if (di >= 30) throw fail(what, `the invalid distance symbol ${di}`);
        const d = DIST_BASE[di] + br.bits(DIST_EXTRA[di]);
        if (d > op) throw fail(what, `a distance of ${d} bytes back, before the output's start`);
        if (op + len > outSize) throw fail(what, `it decompresses to more than its ${outSize} bytes`);
        for (let k = 0; k < len; k++, op++) out[op] = out[op - d];
      }
    }
  }
  if (op !== outSize) throw fail(what, `it decompresses to ${op} bytes, not its ${outSize}`);
  return { data: out, end: br.alignedPos() };
}

/** Decode a zlib stream (RFC 1950: header, DEFLATE, Adler-32) into exactly `outSize` bytes. */
export function inflateZlib(src: Uint8Array, outSize: number, what: string): Uint8Array {
  if (src.length < 6) throw fail(what, `a zlib stream of ${src.length} bytes`);
  const cmf = src[0];
  const flg = src[1];
  if ((cmf & 0x0f) !== 8 || cmf >> 4 > 7 || (cmf * 256 + flg) % 31 !== 0) throw fail(what, 'not a zlib (deflate) stream');
  if (flg & 0x20) throw fail(what, 'a zlib stream that needs a preset dictionary');
  const { data, end } = inflateRaw(src, outSize, what, 2, src.length);
  if (end + 4 > src.length) throw fail(what, 'the zlib stream has no Adler-32 checksum');
  const stored = ((src[end] << 24) | (src[end + 1] << 16) | (src[end + 2] << 8) | src[end + 3]) >>> 0;
  if (adler32(data) !== stored) throw fail(what, 'the zlib stream fails its Adler-32 checksum');
  return data;
}

function adler32(data: Uint8Array): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < data.length; ) {
    const n = Math.min(data.length, i + 5552);
    for (; i < n; i++) {
      a += data[i];
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return ((b << 16) | a) >>> 0;
}

// loadHdf5's storage layouts: chunked datasets (v1 and v2 B-tree, single-chunk, implicit,
// fixed-array, paged fixed-array and extensible-array indexes), the filters h5py writes
// (gzip, shuffle, fletcher32), fill values, and dense groups and attributes (fractal heap +
// v2 B-tree). The
// files come from test/fixtures/hdf5/make.py (h5py); each holds every case twice, 'data/<name>'
// stored as the case says and 'ref/<name>' contiguous, which must read bit for bit alike.
// The DEFLATE decoder under the gzip filter is checked against node:zlib.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { LstmError as SourceError } from '../lib/errors';
import { inflateRaw, inflateZlib } from '../lib/io/inflate';
import { FIXTURES, LstmError, expectFormat, lib, mulberry32 } from './helpers';

const DIR = path.join(FIXTURES, 'hdf5');
const read = (f: string) => new Uint8Array(readFileSync(path.join(DIR, f)));
const expected = JSON.parse(readFileSync(path.join(DIR, 'expected.json'), 'utf8')) as Record<string, { unread: Record<string, string> }>;

/** Every 'ref/<name>' of a file against its 'data/<name>': same shape, same bits. */
function expectPairs(file: string): string[] {
  const f = lib.loadHdf5(read(file));
  const names = Object.keys(f.tensors)
    .filter((k) => k.startsWith('ref/'))
    .map((k) => k.slice(4));
  for (const name of names) {
    const ref = f.tensors[`ref/${name}`];
    const got = f.tensors[`data/${name}`];
    expect(got, `${file}: data/${name}`).toBeDefined();
    expect(got.shape, `${file}: data/${name} shape`).toEqual(ref.shape);
    expect(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength).equals(Buffer.from(ref.data.buffer, ref.data.byteOffset, ref.data.byteLength)), `${file}: data/${name}`).toBe(true);
  }
  // what the file must give as unread, by the reason's key words, and nothing else
  const want = expected[file].unread;
  expect(Object.keys(f.unread).sort()).toEqual(Object.keys(want).sort());
  for (const [k, words] of Object.entries(want)) expect(f.unread[k]).toContain(words);
  return names.sort();
}

describe('loadHdf5: chunked, filtered and densely stored data', () => {
  it('layout version 3 (v1 B-tree): gzip, shuffle, fletcher32, edges, several levels, fill values, resizable', () => {
    expect(expectPairs('chunked_v3.h5')).toEqual([
      'all_filters_2d',
      'auto_chunks',
      'big_endian_i16',
      'contiguous_fill',
      'deep_btree',
      'f16_plain',
      'gzip_1d',
      'gzip_edge',
      'never_written',
      'partial',
      'resizable',
      'shuffle_3d_f64',
      'u8_fletcher',
    ]);
  });

  it("layout version 4 (libver='latest'): single chunk, implicit, fixed array (paged too), v2 B-tree", () => {
    expect(expectPairs('chunked_v4.h5')).toEqual([
      'btree2',
      'btree2_deep',
      'btree2_filtered',
      'fixed',
      'fixed_filtered',
      'fixed_maxshape',
      'implicit',
      'paged',
      'paged_filtered',
      'paged_partial',
      'single',
      'single_gzip',
    ]);
  });

  it("resizable along one axis under libver='latest': the extensible array (index block, data blocks, super blocks)", () => {
    expect(expectPairs('extensible.h5')).toEqual(['ea_few', 'ea_filtered', 'ea_grown', 'ea_inner_axis', 'ea_super_blocks']);
  });

  it('dense groups and attributes: 200 links and 1,500 attributes through fractal heaps and v2 B-trees', () => {
    const f = lib.loadHdf5(read('dense.h5'));
    expect(f.unread).toEqual({});
    const subs = Object.keys(f.attributes).filter((k) => k.startsWith('g/'));
    expect(subs).toEqual(Array.from({ length: 200 }, (_, k) => `g/sub${String(k).padStart(3, '0')}`));
    const attrs = f.attributes.w;
    expect(Object.keys(attrs)).toHaveLength(1501);
    for (let k = 0; k < 1500; k++) expect(attrs[`a${String(k).padStart(4, '0')}`]).toEqual([k * 0.5]);
    expect(attrs.text).toBe('dense');
    expect(Array.from(f.tensors.w.data)).toEqual([1, 2, 3]);
    expectPairs('fuzz_v3.h5');
    expectPairs('fuzz_v4.h5');
  });

  it('a few KiB of compressed chunks describing 4 GiB are refused before anything is allocated', () => {
    const before = process.memoryUsage().rss;
    expectFormat(() => lib.loadHdf5(read('sparse_huge.h5')), /'huge': 1073741824 elements of 4 bytes cannot come from \d+ bytes of compressed chunks/);
    expect(process.memoryUsage().rss - before).toBeLessThan(256 * 1024 * 1024);
  });

  it('every byte of a file flipped in turn: read, or LSTM_FORMAT; a damaged chunk fails its fletcher32 checksum', () => {
    const file = read('fuzz_v3.h5');
    const reasons = new Map<string, number>();
    for (let i = 0; i < file.length; i++) {
      const bad = file.slice();
      bad[i] ^= 0x10;
      try {
        lib.loadHdf5(bad);
      } catch (err) {
        if (!(err instanceof LstmError)) throw new Error(`byte ${i}: ${(err as Error).message}`);
        const key = /fails its checksum/.test(err.message) ? 'checksum' : 'other';
        reasons.set(key, (reasons.get(key) ?? 0) + 1);
      }
    }
    // all_filters' chunks are deflated, then checksummed: each of their bytes is caught
    expect(reasons.get('checksum')).toBeGreaterThan(100);
  });
});

describe('DEFLATE and zlib decoding (the gzip filter, deflated zip entries)', () => {
  it('decodes what node:zlib encodes at every level and strategy, raw and zlib-wrapped', () => {
    const rand = mulberry32(36);
    const strategies = [zlib.constants.Z_DEFAULT_STRATEGY, zlib.constants.Z_FIXED, zlib.constants.Z_HUFFMAN_ONLY, zlib.constants.Z_RLE, zlib.constants.Z_FILTERED];
    for (let c = 0; c < 120; c++) {
      const n = c === 0 ? 0 : Math.floor(rand() ** 3 * 200_000);
      const kind = c % 4;
      const data = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        data[i] = kind === 0 ? rand() * 256 : kind === 1 ? (rand() < 0.9 ? 0 : rand() * 256) : kind === 2 ? (i % 17) * 3 : Math.floor(Math.sin(i / 50) * 4 + 4);
      }
      const options = { level: c % 10, strategy: strategies[c % 5] };
      expect(Buffer.from(inflateZlib(new Uint8Array(zlib.deflateSync(data, options)), n, 'z')).equals(Buffer.from(data))).toBe(true);
      expect(Buffer.from(inflateRaw(new Uint8Array(zlib.deflateRawSync(data, options)), n, 'raw').data).equals(Buffer.from(data))).toBe(true);
    }
  });

  it('damaged, cut or oversized streams are LSTM_FORMAT, and never write past the size given', () => {
    const rand = mulberry32(37);
    const data = new Uint8Array(3000).map((_, i) => (i % 7 === 0 ? rand() * 256 : i % 5));
    const z = new Uint8Array(zlib.deflateSync(data));
    const expectRefused = (f: () => unknown, message?: RegExp) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(SourceError);
        expect((err as SourceError).code).toBe('LSTM_FORMAT');
        if (message) expect((err as Error).message).toMatch(message);
        return;
      }
      throw new Error('accepted');
    };
    for (let cut = 0; cut < z.length; cut++) expectRefused(() => inflateZlib(z.subarray(0, cut), data.length, 'cut'));
    // every single flipped bit: refused exactly when zlib refuses it, else zlib's bytes (a
    // flip can decode to other bytes whose Adler-32 still matches: zlib takes those too)
    let differ = 0;
    for (let i = 0; i < z.length * 8; i++) {
      const bad = z.slice();
      bad[i >> 3] ^= 1 << (i & 7);
      let theirs: Buffer | null = null;
      try {
        theirs = zlib.inflateSync(bad);
      } catch {
        // refused by zlib
      }
      if (theirs === null || theirs.length !== data.length) {
        expectRefused(() => inflateZlib(bad, data.length, 'flip'));
        continue;
      }
      const ours = Buffer.from(inflateZlib(bad, data.length, 'flip'));
      expect(ours.equals(theirs), `bit ${i}`).toBe(true);
      if (!ours.equals(Buffer.from(data))) differ++;
    }
    expect(differ).toBeLessThan(5);
    expectRefused(() => inflateZlib(z, data.length - 1, 'small'), /more than its 2999 bytes/);
    expectRefused(() => inflateZlib(z, data.length + 1, 'large'), /decompresses to 3000 bytes, not its 3001/);
    expectRefused(() => inflateRaw(new Uint8Array([0x07]), 10, 'reserved'), /reserved type 3/);
    expectRefused(() => inflateRaw(new Uint8Array([0x01, 0x05, 0x00, 0xfa, 0xfe]), 5, 'stored'), /does not match its complement/);
    // a stored block of 5 bytes, then nothing
    expectRefused(() => inflateRaw(new Uint8Array([0x01, 0x05, 0x00, 0xfa, 0xff, 1, 2]), 5, 'short'), /ends early/);
  });
});

// `npm run test:browser` (not part of `npm test`: it needs a browser). The browser build
// (dist/browser: ES modules, no Node built-in in its import graph) in headless Chromium:
// initWasm(), then fixtures on the wasm engine, checked in the page.
// Needs Debian's chromium (.ci/run installs it) and playwright-core (a devDependency);
// CHROMIUM_PATH overrides /usr/bin/chromium.
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { torchOptions, fixture } from './helpers';
import { RELAXED_PROBE } from '../scripts/relaxed-simd.mjs';

const root = path.resolve(__dirname, '..');
const executablePath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TYPES: Record<string, string> = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html', '.safetensors': 'application/octet-stream' };
// Only what a site would serve: the browser build, the module and the test fixtures.
const SERVED = ['dist/browser/', 'wasm/', 'test/fixtures/'];

const PAGE = `<!doctype html><meta charset="utf-8"><title>lstm-native browser test</title>
<script type="module">
  import * as lib from '/dist/browser/index.js';
  window.lib = lib;
  window.ready = true;
</script>`;

let server: http.Server;
let base = '';
let browser: Browser;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
      return;
    }
    const rel = decodeURIComponent(url.pathname).replace(/^\/+/, '');
    const file = path.join(root, rel);
    if (!SERVED.some((p) => rel.startsWith(p)) || !file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await chromium.launch({
    executablePath,
    headless: true,
    // Playwright gives the browser a fresh temporary profile of its own.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => server?.close(resolve));
});

describe('in headless Chromium', () => {
  it('the ESM build loads, picks wasm, and matches PyTorch fixtures (forward and gradients)', async () => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('requestfailed', (r) => errors.push(`${r.url()}: ${r.failure()?.errorText}`));
    page.on('response', (r) => {
      if (r.status() >= 400) errors.push(`${r.url()}: HTTP ${r.status()}`);
    });
    await page.goto(base + '/');
    await page
      .waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 30_000 })
      .catch((err: Error) => {
        throw new Error(`the page did not load the library: ${errors.join('; ') || err.message}`);
      });
    const cases = ['t09_proj_bidir_packed_bf', 't03_bidir2', 't01_single'].map((name) => ({ name, options: torchOptions(fixture(name).metadata) }));
    const result = await page.evaluate(async ({ cases, probe }) => {
      const lib = (window as any).lib;
      await lib.initWasm();
      const info = lib.backendInfo();
      const worst = (a: Float32Array, b: Float32Array): number => {
        if (a.length !== b.length) return Infinity;
        let w = 0;
        for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i] - b[i]) / (1e-5 + 1e-4 * Math.abs(b[i])));
        return w;
      };
      const out: Record<string, unknown> = { info: { engine: info.engine, wasm: info.wasm, native: info.native, platform: info.platform, version: info.version } };
      // The build initWasm() fetched: relaxed SIMD where the browser validates it.
      out.simd = { picked: info.wasmSimd, hostRelaxed: WebAssembly.validate(new Uint8Array(probe)) };
      for (const { name, options } of cases) {
        const bytes = new Uint8Array(await (await fetch(`/test/fixtures/${name}.safetensors`)).arrayBuffer());
        const { tensors } = lib.loadSafetensors(bytes);
        const lstm = new lib.LSTM(options);
        lstm.loadStateDict(tensors, { strict: false });
        const opts = { h0: tensors.h0, c0: tensors.c0, lengths: tensors.lengths };
        const r = lstm.forward(tensors.input, opts);
        const a = await lstm.forwardAsync(tensors.input, opts);
        const run = lstm.forwardTrain(tensors.input, opts);
        const g = run.backward({ output: tensors.grad_output, hn: tensors.grad_hn, cn: tensors.grad_cn });
        const grads: Record<string, number> = {};
        if (tensors.grad_input) grads.input = worst(g.input.data, tensors.grad_input.data);
        for (const k of Object.keys(g.params)) if (tensors[`grad.${k}`]) grads[k] = worst(g.params[k].data, tensors[`grad.${k}`].data);
        out[name] = {
          backend: lstm.backend,
          output: worst(r.output.data, tensors.output.data),
          hn: worst(r.hn.data, tensors.hn.data),
          cn: worst(r.cn.data, tensors.cn.data),
          async: worst(a.output.data, tensors.output.data),
          grads,
        };
        lstm.dispose();
      }
      out.memoryAfterDispose = lib.backendInfo().wasmMemory;
      return out;
    }, { cases, probe: Array.from(RELAXED_PROBE) });
    await page.close();
    expect(errors).toEqual([]);
    expect(result.info).toEqual({ engine: 'wasm', wasm: true, native: false, platform: 'browser', version: JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version });
    const simd = result.simd as { picked: string; hostRelaxed: boolean };
    expect(simd.picked).toBe(simd.hostRelaxed ? 'relaxed' : 'simd128');
    for (const { name } of cases) {
      const r = result[name] as { backend: string; output: number; hn: number; cn: number; async: number; grads: Record<string, number> };
      expect(r.backend, name).toBe('wasm');
      for (const k of ['output', 'hn', 'cn', 'async'] as const) expect(r[k], `${name} ${k} (ratio to 1e-5 + 1e-4|b|)`).toBeLessThanOrEqual(1);
      expect(Object.keys(r.grads).length, `${name} has gradients to check`).toBeGreaterThan(2);
      for (const [k, v] of Object.entries(r.grads)) expect(v, `${name} grad ${k} (ratio to 1e-5 + 1e-4|b|)`).toBeLessThanOrEqual(10);
    }
    expect(result.memoryAfterDispose).toBe(0);
  }, 120_000);
});

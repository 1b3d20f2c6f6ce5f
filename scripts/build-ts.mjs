// Compile lib/ to dist/cjs with tsc, then write the ESM entry as a thin wrapper over
// the CommonJS build: one implementation, so ESM and CJS importers share one addon
// instance and one set of classes (no dual-package hazard).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
rmSync(path.join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });

const cjs = require(path.join(root, 'dist/cjs/index.js'));
const names = Object.keys(cjs).filter((n) => n !== 'default' && n !== '__esModule').sort();
mkdirSync(path.join(root, 'dist/esm'), { recursive: true });
writeFileSync(
  path.join(root, 'dist/esm/index.mjs'),
  `import cjs from '../cjs/index.js';\nexport const { ${names.join(', ')} } = cjs;\n`,
);
writeFileSync(path.join(root, 'dist/esm/index.d.mts'), `export * from '../cjs/index.js';\n`);

// The browser build: real ES modules with lib/platform.browser.ts in place of the Node
// platform, so nothing in its import graph touches a Node built-in or the addon loader.
const tsc = require.resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.browser.json')], { stdio: 'inherit' });
const browser = path.join(root, 'dist/browser');
const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const platformJs = readFileSync(path.join(browser, 'platform.browser.js'), 'utf8').replace('__LSTM_NATIVE_VERSION__', version);
writeFileSync(path.join(browser, 'platform.js'), platformJs);
rmSync(path.join(browser, 'platform.browser.js'));
// Node-only modules: platform.browser.ts replaces the addon loader, and fit runs in-thread.
rmSync(path.join(browser, 'native', 'loader.js'), { force: true });
rmSync(path.join(browser, 'train', 'fit-worker.js'), { force: true });
writeFileSync(path.join(browser, 'package.json'), '{ "type": "module" }\n');

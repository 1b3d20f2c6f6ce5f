// The package's install script. Uses a prebuilt binary when one matches this platform,
// else builds the addon from source; if neither works it warns once and exits 0, so the
// install never fails and the WebAssembly engine serves (backendInfo().reason says why).
// Where npm does not run it (npm 12 for a dependency not approved in allowScripts, or
// --ignore-scripts), the prebuild loads at run time, or the wasm engine serves. (npm 11
// still runs it, and from 11.16 warns that it is not approved.)
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
let result;
try {
  result = spawnSync(process.execPath, [require.resolve('node-gyp-build/bin.js')], { cwd: root, stdio: 'inherit', env: process.env });
} catch (err) {
  result = { status: 1, error: err };
}
if (result.status !== 0) {
  console.warn(
    `lstm-native: no prebuilt binary for ${process.platform}-${process.arch} loaded and the native addon could not be ` +
      'built here (it needs python3, make and a C++17 compiler). The WebAssembly engine will be used (the pure-JS engine where WebAssembly cannot run). ' +
      'To build the native engine later: npx lstm-native rebuild',
  );
}
process.exit(0);

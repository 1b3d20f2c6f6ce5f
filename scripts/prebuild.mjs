// npm run prebuild: prebuilt N-API binaries for the npm package.
// linux-x64 always (compiled for baseline x86-64; AVX2/AVX-512 are chosen at run time),
// linux-arm64 when Debian's cross compiler (g++-aarch64-linux-gnu) is installed.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const prebuildify = require.resolve('prebuildify/bin.js');

// Build against the running Node's own headers (N-API binaries work on every later Node):
// without this prebuildify targets the newest Node and node-gyp downloads its headers.
const nodedir = process.env.npm_config_nodedir || path.resolve(path.dirname(process.execPath), '..');
const headers = existsSync(path.join(nodedir, 'include', 'node', 'node_api.h')) ? { npm_config_nodedir: nodedir } : {};

function run(args, env = {}) {
  execFileSync(process.execPath, [prebuildify, '--napi', '--strip', '--target', process.versions.node, ...args], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, ...headers, ...env },
  });
}

const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

// prebuildify builds in build/ in place: the cross build goes first so that build/Release
// is left holding the host's binary (the one local tests and node-gyp-build load).
if (process.arch !== 'arm64' && has('aarch64-linux-gnu-g++') && !process.argv.includes('--host-only')) {
  run(['--arch', 'arm64'], {
    CC: 'aarch64-linux-gnu-gcc',
    CXX: 'aarch64-linux-gnu-g++',
    LINK: 'aarch64-linux-gnu-g++',
    AR: 'aarch64-linux-gnu-ar',
    PREBUILD_STRIP_BIN: 'aarch64-linux-gnu-strip',
  });
} else if (process.arch !== 'arm64') {
  console.log('prebuild: no aarch64-linux-gnu-g++ here, skipping linux-arm64 (apt-get install g++-aarch64-linux-gnu)');
}
run([]); // the host's own platform

// Prints the sources of the sections named on the command line, for binding.gyp's
// <!@(...) expansion. Run from the package root (gyp's working directory).
'use strict';
const fs = require('fs');
const path = require('path');

const wanted = new Set(process.argv.slice(2));
let section = '';
const out = [];
for (const raw of fs.readFileSync(path.join(__dirname, 'sources.txt'), 'utf8').split('\n')) {
  const line = raw.trim();
  if (!line || line.startsWith('#')) continue;
  const m = /^\[(.+)\]$/.exec(line);
  if (m) section = m[1];
  else if (wanted.has(section)) out.push(line);
}
process.stdout.write(out.join(' '));

// Puts bench/results/latest.json into the README between the BENCH_TABLE markers.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { markdownTable } from '../bench/table.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const report = JSON.parse(readFileSync(path.join(root, 'bench/results/latest.json'), 'utf8'));
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
const start = readme.indexOf('BENCH_TABLE_START');
const end = readme.indexOf('BENCH_TABLE_END');
if (start < 0 || end < 0) throw new Error('README has no BENCH_TABLE markers');
const body = `BENCH_TABLE_START -->\n${markdownTable(report)}\n\n![benchmark chart](bench/results/latest.svg)\n<!-- `;
writeFileSync(path.join(root, 'README.md'), readme.slice(0, start) + body + readme.slice(end));

// The benchmark report as a Markdown table (used by run.mjs and scripts/readme-bench.mjs).

/** How this Node ran the wasm-relaxed rows (absent from reports that predate them). */
function relaxedNote(m) {
  if (m.wasmRelaxedByDefault === undefined) return '';
  return m.wasmRelaxedByDefault
    ? '; wasm relaxed SIMD on by default'
    : '; wasm relaxed SIMD behind --experimental-wasm-relaxed-simd (set by the bench; on by default in Node 22+)';
}

export function markdownTable(report) {
  const m = report.machine;
  const lines = [
    `Machine: ${m.cpu}, ${m.cores} cores, Node ${m.node}, native ISA ${m.isa ?? 'n/a'}, measured FMA peak ${m.peakGflopsPerCore ? m.peakGflopsPerCore.toFixed(1) : 'n/a'} GFLOP/s per core${relaxedNote(m)}`,
    '',
    '| shape | engine | threads | median ms | GFLOP/s | % of peak | vs onnxruntime-node | vs js | vs tfjs-backend-wasm |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  const f = (v, d = 2) => (v === null || v === undefined ? '' : v.toFixed(d));
  for (const r of report.results) {
    lines.push(`| ${r.label} | ${r.engine} | ${r.threads} | ${f(r.ms, r.ms < 1 ? 4 : 2)} | ${f(r.gflops, 1)} | ${f(r.pctPeak, 0)} | ${r.vsOrt ? f(r.vsOrt) + 'x' : ''} | ${r.vsJs ? f(r.vsJs, 1) + 'x' : ''} | ${r.vsTfjsWasm ? f(r.vsTfjsWasm) + 'x' : ''} |`);
  }
  return lines.join('\n');
}

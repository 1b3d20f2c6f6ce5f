// node --expose-gc test/soak/soak.cjs: memory over long runs, printed as JSON.
'use strict';
const path = require('node:path');
const lib = require(path.resolve(__dirname, '../../dist/cjs/index.js'));

const MB = 1024 * 1024;
// N-API finalizers run on a later turn of the event loop than the collection that
// found the garbage: give them a few turns before reading RSS.
const rss = async () => {
  for (let i = 0; i < 4; i++) {
    global.gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  return process.memoryUsage().rss;
};
// On a loaded machine a finalizer can take more turns than that (one run in the full
// suite still held one dropped 32 MiB model after four): read again while RSS keeps
// falling, up to 10 times. Memory that is really leaked never falls.
const settledRss = async () => {
  let last = await rss();
  for (let i = 0; i < 10; i++) {
    const now = await rss();
    if (now > last - MB) return Math.min(now, last);
    last = now;
  }
  return last;
};

async function main() {
const out = { backend: lib.backendInfo().native ? 'native' : 'js' };

// 100,000 forward calls on one model.
{
  const m = new lib.LSTM({ inputSize: 8, hiddenSize: 32, numLayers: 2, seed: 1 });
  const x = { data: new Float32Array(5 * 2 * 8).fill(0.1), shape: [5, 2, 8] };
  for (let i = 0; i < 10000; i++) m.forward(x);
  const before = (await rss());
  for (let i = 0; i < 100000; i++) m.forward(x);
  out.forwardCalls = 100000;
  out.forwardRssGrowthMB = ((await rss()) - before) / MB;
  m.dispose();
}
// 10,000 training steps. (V8 grows its young generation in steps under a high
// allocation rate; the test runs with it pinned so that only real growth shows.)
{
  const model = new lib.SequenceModel({ inputSize: 4, hiddenSize: 16, outputSize: 2, seed: 2 });
  const opt = new lib.Adam(model.parameters(), { lr: 1e-3 });
  const x = { data: new Float32Array(8 * 4 * 4).map((_, i) => Math.sin(i)), shape: [8, 4, 4] };
  const y = { data: new Float32Array(8 * 4 * 2).map((_, i) => Math.cos(i)), shape: [8, 4, 2] };
  for (let i = 0; i < 3000; i++) model.trainStep(x, y, { optimizer: opt }); // warm-up: JIT, pools, allocator
  const before = await rss();
  const heapBefore = process.memoryUsage().heapTotal;
  for (let i = 0; i < 10000; i++) model.trainStep(x, y, { optimizer: opt });
  out.trainSteps = 10000;
  out.trainRssGrowthMB = ((await rss()) - before) / MB;
  // V8 may commit more heap for itself; what the library owns is everything else.
  out.trainV8HeapGrowthMB = (process.memoryUsage().heapTotal - heapBefore) / MB;
  out.trainNonV8GrowthMB = out.trainRssGrowthMB - out.trainV8HeapGrowthMB;
  const m = process.memoryUsage();
  out.nonV8HeapMB = (m.rss - m.heapTotal) / MB;
}
// dispose() returns native memory; dropped models are freed by the GC.
{
  const big = () => new lib.LSTM({ inputSize: 1024, hiddenSize: 1024, seed: 3 }); // 32 MiB of weights, packed again natively
  const base = (await rss());
  const models = Array.from({ length: 4 }, big);
  const held = (await rss());
  for (const m of models) m.dispose();
  const disposed = (await rss());
  out.disposeHeldMB = (held - base) / MB;
  out.disposeFreedMB = (held - disposed) / MB;
  models.length = 0;
  const dropBase = (await rss());
  (() => {
    for (let i = 0; i < 4; i++) big();
  })();
  out.droppedRssGrowthMB = ((await settledRss()) - dropBase) / MB;
}
console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

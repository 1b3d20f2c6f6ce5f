#include "layer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#if !defined(__wasm__) || defined(__wasm_atomics__)
#include <thread>
#endif

#include "cell.h"
#include "threadpool.h"

namespace lstm {

Layer::Layer(const LayerDesc& desc, const DirectionWeightsView* dirs, int group) : desc_(desc) {
  const int H = desc.hidden_size;
  const int Hout = desc.out_size();
  blocks_ = (H + kPanel - 1) / kPanel;
  gate_cols_ = blocks_ * 4 * kPanel;
  dirs_.resize(desc.num_directions);
  // All matrices in one block, which huge pages back where it is big enough (pages.h):
  // a recurrent matrix that nearly fills L2 then spreads over its sets evenly. Panels are
  // 64 bytes wide, so every matrix starts on a cache line. Measured through the package
  // (both builds in one process, alternating), B=1, T=128, H=256 (2 MiB of weights), same
  // bits: 1.061x at 1 thread, 1.074x at 2; a streaming step 1.046x and 1.011x. Each matrix
  // is packed straight into its place in the block (zeroed, as the packers need).
  const bool full = desc.peephole == kPeepholeFull;
  const std::size_t ih = packed_floats(gate_cols_, desc.input_size), hh = packed_floats(gate_cols_, Hout),
                    ch = full ? packed_floats(gate_cols_, H) : 0,
                    hr = desc.proj_size > 0 ? packed_floats(desc.proj_size, H) : 0;
  weights_ = PageBlock((ih + hh + ch + hr) * static_cast<std::size_t>(desc.num_directions));
  float* at = weights_.data();
  const auto take = [&at](std::size_t n) {
    float* p = at;
    at += n;
    return p;
  };
  for (int d = 0; d < desc.num_directions; ++d) {
    const DirectionWeightsView& v = dirs[d];
    Direction& w = dirs_[d];
    pack_gate_matrix(v.w_ih, H, desc.input_size, &w.w_ih, take(ih), group);
    pack_gate_matrix(v.w_hh, H, Hout, &w.w_hh, take(hh), group);
    if (full) pack_gate_matrix(v.w_ch, H, H, &w.w_ch, take(ch), group);
    if (desc.proj_size > 0) pack_matrix(v.w_hr, desc.proj_size, H, &w.w_hr, take(hr), group);
    if (desc.peephole == kPeepholeDiagonal) {
      w.w_ci.assign(v.w_ci, v.w_ci + H);
      w.w_cf.assign(v.w_cf, v.w_cf + H);
      w.w_co.assign(v.w_co, v.w_co + H);
    }
    if (desc.bias) {
      w.bias.assign(gate_cols_, 0.f);
      for (int g = 0; g < 4; ++g)
        for (int j = 0; j < H; ++j) w.bias[gate_column(g, j)] = v.b_ih[g * H + j] + v.b_hh[g * H + j];
    }
  }
}

std::size_t Layer::packed_bytes() const {
  std::size_t n = 0;
  for (const Direction& d : dirs_) {
    n += d.bias.size() + d.w_ci.size() + d.w_cf.size() + d.w_co.size();
  }
  return n * sizeof(float) + weights_.floats() * sizeof(float);
}

std::size_t Layer::held_bytes() const {
  return packed_bytes() - weights_.floats() * sizeof(float) + weights_.bytes();
}

namespace {

// Gate pre-activations kept per chunk of time steps: 512 KiB, so the projection's writes
// stay in L2 and the steps read them back from there (16 MiB chunks missed on every
// C tile: 14% of the GEMM's time went to those stores).
constexpr std::ptrdiff_t kChunkFloats = std::ptrdiff_t{1} << 17;

// Up to this many floats of initial state (h0, and c0 with full peepholes), every
// participant copies all of it for itself, so that the first step needs no barrier after
// the copies (a barrier costs ~0.25-0.45 us between the two cores here; a streaming step
// of H=256 at 2 threads is ~12 us).
constexpr std::ptrdiff_t kOwnStateFloats = 4096;

// Asks for the cache lines of rows [p + b * ld, + width) at once, b < rows.
void prefetch_rows(const float* p, int rows, std::ptrdiff_t ld, int width) {
#if defined(__GNUC__) || defined(__clang__)
  for (int b = 0; b < rows; ++b) {
    for (int k = 0; k < width; k += 16) __builtin_prefetch(p + b * ld + k, 0, 3);
  }
#else
  (void)p, (void)rows, (void)ld, (void)width;
#endif
}

#if defined(__wasm__) && !defined(__wasm_atomics__)
void wait_for(const std::atomic<std::uint64_t>&, std::uint64_t) {}  // one participant: nothing to wait for
#else
// Spins until flag holds value (another participant's few microseconds), then yields.
void wait_for(const std::atomic<std::uint64_t>& flag, std::uint64_t value) {
  for (int spins = 0; flag.load(std::memory_order_acquire) != value; ++spins) {
    if (spins > 2000) std::this_thread::yield();
  }
}
#endif

void grow(AlignedFloats& v, std::size_t n) {
  if (v.size() < n) v.resize(n);
}

#if defined(__wasm__) && !defined(__wasm_atomics__)
constexpr bool kBalance = false;  // one participant, nothing to balance
double now_ns() { return 0; }     // (and no clock to import)
#else
constexpr bool kBalance = true;
double now_ns() {
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
#endif

// A pseudo-random split for step `step` (tests: moving blocks between threads every step
// must not change a bit).
void random_split(unsigned seed, long step, int nth, int blocks, int* bounds) {
  std::uint32_t h = seed * 2654435761u ^ static_cast<std::uint32_t>(step) * 40503u;
  for (int t = 1; t < nth; ++t) {
    h = h * 1664525u + 1013904223u;
    bounds[t] = static_cast<int>((h >> 8) % static_cast<std::uint32_t>(blocks - nth + 1));
  }
  for (int t = 2; t < nth; ++t)  // insertion sort: a handful of participants
    for (int u = t; u > 1 && bounds[u - 1] > bounds[u]; --u) std::swap(bounds[u - 1], bounds[u]);
  for (int t = 1; t < nth; ++t) bounds[t] += t;
}

}  // namespace

void rebalance(const double* pace, int nth, int blocks, int* bounds) {
  double total = 0;
  for (int t = 0; t < nth; ++t) {
    if (!(pace[t] > 0)) return;
    total += 1 / pace[t];
  }
  double before = 0;
  for (int t = 1; t < nth; ++t) {
    before += 1 / pace[t - 1];
    const double ideal = blocks * before / total;
    if (std::fabs(bounds[t] - ideal) > 0.75) bounds[t] = static_cast<int>(std::lround(ideal));
  }
  for (int t = 1; t < nth; ++t) bounds[t] = std::max(bounds[t], bounds[t - 1] + 1);
  for (int t = nth - 1; t >= 1; --t) bounds[t] = std::min(bounds[t], bounds[t + 1] - 1);
}

Layer::Plan Layer::plan(Isa isa, const Threading& threading, int T, int B) const {
  const int H = desc_.hidden_size;
  const int Hout = desc_.out_size();
  const bool proj = desc_.proj_size > 0;
  Plan p;
  // The input projection runs one chunk of time steps ahead of the recurrence, so the
  // gate buffer stays bounded (and cache-warm) however long the sequence is.
  p.chunk = static_cast<int>(std::max<std::ptrdiff_t>(1, std::min<std::ptrdiff_t>(T, kChunkFloats / (static_cast<std::ptrdiff_t>(B) * gate_cols_))));
  const double step_flops = 2.0 * B * 4 * H * (Hout + (desc_.peephole == kPeepholeFull ? H : 0) + (proj ? Hout : 0));
  p.nth = std::max(1, std::min(threading.threads, blocks_));
  while (p.nth > 1 && step_flops / p.nth < threading.min_flops_per_thread) --p.nth;
  // A pack buffer per participant, only when one of this layer's products could use it
  // (a participant's slice is at most a whole matrix): a small model's forward then
  // allocates and clears none (each forward call has its own Workspace).
  const Direction& w0 = dirs_[0];
  const int gate_panels = 4 * blocks_;
  const int proj_panels = (Hout + kPanel - 1) / kPanel;
  p.packs = gemm_nt_uses_scratch(isa, p.chunk * B, w0.w_ih, gate_panels) ||
            gemm_nt_uses_scratch(isa, B, w0.w_hh, gate_panels) ||
            (!w0.w_ch.empty() && gemm_nt_uses_scratch(isa, B, w0.w_ch, gate_panels)) ||
            (proj && gemm_nt_uses_scratch(isa, B, w0.w_hr, proj_panels));
  const std::ptrdiff_t state = static_cast<std::ptrdiff_t>(B) * (Hout + (desc_.peephole == kPeepholeFull ? H : 0));
  p.own_state = p.nth > 1 && state <= kOwnStateFloats;
  return p;
}

void Layer::reserve(Isa isa, const Threading& threading, int T, int B, bool strided, Workspace* ws) const {
  reserve(plan(isa, threading, T, B), B, strided, ws);
}

void Layer::reserve(const Plan& p, int B, bool strided, Workspace* ws) const {
  const int H = desc_.hidden_size;
  const int Hout = desc_.out_size();
  grow(ws->gates, static_cast<std::size_t>(p.chunk) * B * gate_cols_);
  const std::size_t own = p.own_state ? static_cast<std::size_t>(p.nth) : 0;
  grow(ws->h, (2 + own) * B * Hout);
  grow(ws->c, (2 + (desc_.peephole == kPeepholeFull ? own : 0)) * B * H);
  grow(ws->r, static_cast<std::size_t>(B) * H);
  if (strided && p.chunk > 1) grow(ws->xrows, static_cast<std::size_t>(p.chunk) * B * desc_.input_size);
  if (p.packs) grow(ws->pack, static_cast<std::size_t>(p.nth) * gemm_scratch_floats());
  if (ws->pace.size() < 2 * static_cast<std::size_t>(p.nth)) ws->pace.resize(2 * static_cast<std::size_t>(p.nth));
  const std::size_t bounds = static_cast<std::size_t>(p.nth) * (p.nth + 1);
  if (ws->bounds.size() < bounds) ws->bounds.resize(bounds);
  if (ws->read_state.size() < static_cast<std::size_t>(p.nth)) ws->read_state.resize(static_cast<std::size_t>(p.nth));
}

void Layer::forward(Isa isa, const Threading& threading, const LayerRun& run, Workspace* ws) const {
  const int T = run.T;
  const int B = run.B;
  const int H = desc_.hidden_size;
  const int Hout = desc_.out_size();
  const int I = desc_.input_size;
  const int D = desc_.num_directions;
  const bool proj = desc_.proj_size > 0;
  const std::ptrdiff_t G = gate_cols_;
  const std::ptrdiff_t y_stride = static_cast<std::ptrdiff_t>(D) * Hout;
  const int proj_panels = (Hout + kPanel - 1) / kPanel;
  // Rows between time steps of x and y and between directions of the states.
  const std::ptrdiff_t Bs = run.batch_stride > 0 ? run.batch_stride : B;
  const bool strided = Bs != B;
  // Without a projection or lengths, h_t is exactly the cell's output: the cell writes it
  // straight into y and the next step's GEMM reads it there (rows y_stride apart), so no
  // step copies h (in-process A/B of an S2-sized layer: 3.5-8% faster, same bits).
  const bool direct = !proj && run.lengths == nullptr;

  const Plan plan = this->plan(isa, threading, T, B);
  const int chunk = plan.chunk;
  const int nth = plan.nth;
  const bool packs = plan.packs;
  // Whole per-participant copies of the initial state need y apart from h0 and c0: a
  // participant may write its first output while another still copies them. (hn and cn
  // are written after at least one step's barrier.)
  const std::size_t y_floats = static_cast<std::size_t>(T) * Bs * y_stride;
  const bool own_state = plan.own_state && !overlaps(run.y, y_floats, run.h0, static_cast<std::size_t>(D) * Bs * Hout) &&
                         !overlaps(run.y, y_floats, run.c0, static_cast<std::size_t>(D) * Bs * H);
  // The last step (of the last direction) ends without a barrier: after it each
  // participant only copies its own columns of h and c (written by itself, in a split that
  // no longer moves) to hn and cn. One hazard remains when the state is updated in place
  // (a streaming step: hn is h0): with whole per-participant copies of the initial state
  // and a single step, another participant may still be copying h0 (c0 with full
  // peepholes) when this one writes hn, so each flags its copies done and the final
  // writes wait for every flag. (A streaming step of H=256 at 2 threads in a C++ harness,
  // the barrier dropped: 5-9% faster; the VM's cross-core handoff is ~0.46 us.)
  // Where hn or cn overlaps x (autoregressive feeding: x is the state's own h), the last
  // step keeps its barrier: the others may still be reading x in their products.
  const std::size_t hn_floats = static_cast<std::size_t>(D) * Bs * Hout, cn_floats = static_cast<std::size_t>(D) * Bs * H,
                    x_floats = static_cast<std::size_t>(T) * Bs * I;
  const bool last_barrier = overlaps(run.hn, hn_floats, run.x, x_floats) || overlaps(run.cn, cn_floats, run.x, x_floats);
  const bool wait_reads = !last_barrier && own_state && T == 1 &&
                          (overlaps(run.hn, hn_floats, run.h0, hn_floats) || overlaps(run.hn, hn_floats, run.c0, cn_floats) ||
                           overlaps(run.cn, cn_floats, run.h0, hn_floats) || overlaps(run.cn, cn_floats, run.c0, cn_floats));
  // All allocation happens here, before any thread starts (the parallel body cannot throw).
  reserve(plan, B, strided, ws);
  const std::uint64_t run_no = ++ws->runs;
  LineFlag* const read_state = ws->read_state.data();
  float* const gates = ws->gates.data();
  float* const hbuf = ws->h.data();
  float* const cbuf = ws->c.data();
  float* const r = ws->r.data();
  float* const xrows = ws->xrows.data();
  std::fill(ws->pace.begin(), ws->pace.begin() + 2 * nth, 0.0);
  double* const pace = ws->pace.data();

  CellSpec cell;
  cell.hidden = H;
  cell.gate = desc_.gate;
  cell.cell = desc_.cell;
  cell.out = desc_.hidden;
  cell.clip = desc_.clip;
  cell.coupled = desc_.coupled;

  // A product that streams a weight matrix from L3 (the recurrent one every step, the
  // input projection every chunk) takes its panels in the opposite order from the one
  // before it, so it starts on the panels that one read last, still in L2. In-process A/B
  // of a B=1, T=128, H=256 layer (1 MiB of recurrent weights, 512 KiB of L2), same bits:
  // 1.09x and 1.11x at 1 thread, 1.02x at 2. The parity carries over to the next run.
  const unsigned sweep0 = sweeps_.load(std::memory_order_relaxed);
  auto backward = [&](long i) { return ((sweep0 + static_cast<unsigned long>(i)) & 1) != 0; };

  parallel_run(nth, [&](const ParallelContext& ctx) {
    // This participant's hidden units: whole 16-unit blocks (4 gate panels each), those
    // in [bounds[tid], bounds[tid + 1]). Every participant keeps its own copy of the
    // split and changes it the same way, from the same published paces, after each step.
    // Any split computes every element the same way, so results do not depend on it.
    const int np = ctx.nth;  // participants: nth, or fewer on a machine with fewer cores
    if (threading.stagger_us > 0 && ctx.tid > 0) {
      const double until = now_ns() + 1e3 * threading.stagger_us;
      while (now_ns() < until) {
      }
    }
    int* const bounds = ws->bounds.data() + static_cast<std::size_t>(ctx.tid) * (np + 1);
    for (int t = 0; t <= np; ++t) bounds[t] = static_cast<int>(static_cast<long long>(blocks_) * t / np);
    int blk0 = 0, blk1 = 0, u0 = 0, u1 = 0;
    std::ptrdiff_t gcol0 = 0;
    std::size_t gwidth = 0;
    // With a projection, this participant's share of the projected columns (fixed).
    const int q0 = ctx.begin(proj_panels), q1 = ctx.end(proj_panels);
    // Columns of h this participant writes.
    int v0 = 0, v1 = 0;
    auto take_range = [&] {
      blk0 = bounds[ctx.tid];
      blk1 = bounds[ctx.tid + 1];
      u0 = std::min(blk0 * kPanel, H);
      u1 = std::min(blk1 * kPanel, H);
      v0 = proj ? std::min(q0 * kPanel, Hout) : u0;
      v1 = proj ? std::min(q1 * kPanel, Hout) : u1;
      gcol0 = static_cast<std::ptrdiff_t>(blk0) * 4 * kPanel;
      gwidth = static_cast<std::size_t>(blk1 - blk0) * 4 * kPanel;
    };
    take_range();
    float* const pack = packs ? ws->pack.data() + static_cast<std::size_t>(ctx.tid) * gemm_scratch_floats() : nullptr;

    // Load balance. On a shared machine one core often computes slower than the other for
    // a while (here the same micro-kernel ran at 67 and at 88 GFLOP/s minutes apart, and
    // one thread of a 2-thread S2 layer waited 8-15% of its time at the step barriers).
    // Each participant times its own work (not its waits) per step, publishes the
    // smoothed time per block, and after the step's barrier all move the split alike.
    const bool balance = kBalance && np > 1;
    double seg = 0, work = 0, my_pace = 0;
    long step_no = 0;
    auto mark = [&] {
      if (balance) seg = now_ns();
    };
    auto sync = [&] {  // a barrier inside a step: its wait is not work
      if (balance) work += now_ns() - seg;
      ctx.sync();
      mark();
    };
    auto end_step = [&] {  // the barrier that ends a step, then the split for the next one
      double* const slot = pace + (step_no & 1) * np;
      if (balance && threading.split_seed == 0) {
        work += now_ns() - seg;
        const double sample = work / (blk1 - blk0);
        my_pace = my_pace > 0 ? my_pace + 0.25 * (sample - my_pace) : sample;
        slot[ctx.tid] = my_pace;
        work = 0;
      }
      ctx.sync();
      mark();
      if (balance) {
        if (threading.split_seed != 0) {
          random_split(threading.split_seed, step_no, np, blocks_, bounds);
        } else {
          rebalance(slot, np, blocks_, bounds);
        }
        take_range();
      }
      ++step_no;
    };

    for (int d = 0; d < D; ++d) {
      const Direction& w = dirs_[d];
      const bool reverse = D == 2 ? d == 1 : desc_.reverse;
      CellSpec spec = cell;
      if (d == 1 && desc_.reverse_acts) {
        spec.gate = desc_.gate_r;
        spec.cell = desc_.cell_r;
        spec.out = desc_.hidden_r;
      }
      if (desc_.peephole == kPeepholeDiagonal) {
        spec.wci = w.w_ci.data();
        spec.wcf = w.w_cf.data();
        spec.wco = w.w_co.data();
      }
      // The first step reads a copy of h0 (y or hn may alias it): either one shared copy,
      // each participant copying its columns, then a barrier (every participant reads all
      // of h, and of c with full peepholes), or where the state is small and nothing
      // written during the run aliases it, a whole copy per participant and no barrier.
      // Either way c is copied per participant's units, which the cell reads and writes.
      float* h_cur = hbuf;
      float* h_nxt = hbuf + static_cast<std::ptrdiff_t>(B) * Hout;
      std::ptrdiff_t ld_h = Hout;
      float* c_cur = cbuf;
      float* c_nxt = cbuf + static_cast<std::ptrdiff_t>(B) * H;
      const float* h0 = run.h0 + static_cast<std::ptrdiff_t>(d) * Bs * Hout;
      const float* c0 = run.c0 + static_cast<std::ptrdiff_t>(d) * Bs * H;
      float* h_own = nullptr;  // this participant's whole copies, when own_state
      float* c_own = nullptr;
      if (own_state) {
        h_own = hbuf + static_cast<std::ptrdiff_t>(2 + ctx.tid) * B * Hout;
        std::memcpy(h_own, h0, sizeof(float) * B * Hout);
        h_cur = h_own;
        if (desc_.peephole == kPeepholeFull) {
          c_own = cbuf + static_cast<std::ptrdiff_t>(2 + ctx.tid) * B * H;
          std::memcpy(c_own, c0, sizeof(float) * B * H);
          c_cur = c_own;
        }
      }
      for (int b = 0; b < B; ++b) {
        if (h_own == nullptr) std::memcpy(h_cur + b * Hout + v0, h0 + b * Hout + v0, sizeof(float) * (v1 - v0));
        if (c_own == nullptr) std::memcpy(c_cur + b * H + u0, c0 + b * H + u0, sizeof(float) * (u1 - u0));
      }
      if (!own_state) ctx.sync();
      if (wait_reads && d + 1 == D) read_state[ctx.tid].value.store(run_no, std::memory_order_release);
      mark();
      // After the first step the states alternate between the two shared buffers.
      auto next_states = [&] {
        std::swap(h_cur, h_nxt);
        if (h_nxt == h_own) h_nxt = hbuf;
        std::swap(c_cur, c_nxt);
        if (c_nxt == c_own) c_nxt = cbuf;
      };

      for (int done = 0; done < T; done += chunk) {
        // Time steps [lo, lo + n) in processing order; their input projection first, for
        // this participant's gate columns only (so no barrier is needed around it).
        const int n = std::min(chunk, T - done);
        const int lo = reverse ? T - done - n : done;
        const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(n) * B;
        for (std::ptrdiff_t row = 0; row < rows; ++row) {
          float* g = gates + row * G + gcol0;
          if (desc_.bias) {
            std::memcpy(g, w.bias.data() + gcol0, sizeof(float) * gwidth);
          } else {
            std::memset(g, 0, sizeof(float) * gwidth);
          }
        }
        const float* x_lo = run.x + static_cast<std::ptrdiff_t>(lo) * Bs * I;
        if (strided && n > 1) {
          // The chunk's rows lie Bs rows apart per step: gathered (each participant a share),
          // the projection runs over them as one block, as over a batch of its own. The
          // last step's barrier kept the previous chunk's readers from this.
          const int s0 = ctx.begin(n), s1 = ctx.end(n);
          for (int s = s0; s < s1; ++s) {
            std::memcpy(xrows + static_cast<std::ptrdiff_t>(s) * B * I, x_lo + s * Bs * I, sizeof(float) * B * I);
          }
          sync();
          x_lo = xrows;
        }
        // One step of one row (a streaming step): its input and recurrent products are
        // two GEMVs that each stream a weight matrix. Taken a group of four panels at a
        // time, both matrices in turn, the step's whole weight traffic alternates its order
        // as one stream, so a matrix pair that fits L2 only together, or not quite, is
        // read from where the last step ended. Every element gets the same sums in the
        // same order as from the products one after the other (the same one-row kernel on
        // the same groups of four), so the bits do not change. Weights of 2 x 1 MiB (S4 at
        // one thread, 1 MiB of L2): 25.4 -> 20.5 us per step in a C++ harness.
        const bool joined = n == 1 && B == 1;
        if (!joined) {
          gemm_nt_panels(isa, static_cast<int>(rows), x_lo, I, w.w_ih, 4 * blk0, 4 * blk1, gates, G, pack,
                         backward(done / chunk));
        }
        for (int s = 0; s < n; ++s) {
          const int t = reverse ? lo + n - 1 - s : lo + s;
          float* g = gates + static_cast<std::ptrdiff_t>(t - lo) * B * G;
          // Every participant wrote its units of h_{t-1}, so most of it sits in other cores'
          // caches. The products' k loop runs only a few lines of h ahead, and each of those
          // lines takes a cross-core transfer (~0.46 us between the two cores here): asked
          // for all at once, the transfers overlap.
          if (np > 1 && static_cast<std::ptrdiff_t>(B) * Hout <= kOwnStateFloats) prefetch_rows(h_cur, B, ld_h, Hout);
          if (joined) {
            const bool back = backward(done + s);
            for (int i = 4 * blk0; i < 4 * blk1; i += 4) {
              const int p = back ? 4 * blk1 - 4 - (i - 4 * blk0) : i;  // panels [p, p + 4)
              gemm_nt_panels(isa, 1, x_lo, I, w.w_ih, p, p + 4, g, G, pack);
              gemm_nt_panels(isa, 1, h_cur, ld_h, w.w_hh, p, p + 4, g, G, pack);
              if (desc_.peephole == kPeepholeFull) gemm_nt_panels(isa, 1, c_cur, H, w.w_ch, p, p + 4, g, G, pack);
            }
          } else {
            gemm_nt_panels(isa, B, h_cur, ld_h, w.w_hh, 4 * blk0, 4 * blk1, g, G, pack, backward(done + s));
            if (desc_.peephole == kPeepholeFull) {
              gemm_nt_panels(isa, B, c_cur, H, w.w_ch, 4 * blk0, 4 * blk1, g, G, pack, backward(done + s));
            }
          }
          float* const y_t = run.y + static_cast<std::ptrdiff_t>(t) * Bs * y_stride + static_cast<std::ptrdiff_t>(d) * Hout;
          const bool last = !last_barrier && d + 1 == D && done + n == T && s + 1 == n;
#if defined(__GNUC__) || defined(__clang__)
          if (last && wait_reads) {  // the others' flags, read after the cell: asked for now
            for (int q = 0; q < np; ++q) __builtin_prefetch(&read_state[q].value, 0, 3);
          }
#endif
          if (direct) {
            cell_forward(isa, spec, B, g, G, blk0, blk1, c_cur, c_nxt, y_t, y_stride);
            if (!last) end_step();  // h_t (in y) and c_nxt complete before anyone reads them
            next_states();
            h_cur = y_t;
            ld_h = y_stride;
            continue;
          }
          cell_forward(isa, spec, B, g, G, blk0, blk1, c_cur, c_nxt, r, H);
          for (int b = 0; b < B; ++b) {
            const bool valid = run.lengths == nullptr || t < run.lengths[b];
            if (!valid) std::memcpy(c_nxt + b * H + u0, c_cur + b * H + u0, sizeof(float) * (u1 - u0));
          }
          const float* h_src = r;  // the new h before masking
          if (proj) {
            sync();  // the projection reads every unit of r
            for (int b = 0; b < B; ++b) std::memset(h_nxt + b * Hout + v0, 0, sizeof(float) * (v1 - v0));
            gemm_nt_panels(isa, B, r, H, w.w_hr, q0, q1, h_nxt, Hout, pack);
            h_src = h_nxt;
          }
          const std::ptrdiff_t src_stride = proj ? Hout : H;
          for (int b = 0; b < B; ++b) {
            float* y = y_t + b * y_stride;
            if (run.lengths == nullptr || t < run.lengths[b]) {
              if (!proj) std::memcpy(h_nxt + b * Hout + v0, h_src + b * src_stride + v0, sizeof(float) * (v1 - v0));
              std::memcpy(y + v0, h_src + b * src_stride + v0, sizeof(float) * (v1 - v0));
            } else {
              std::memcpy(h_nxt + b * Hout + v0, h_cur + b * Hout + v0, sizeof(float) * (v1 - v0));
              std::memset(y + v0, 0, sizeof(float) * (v1 - v0));
            }
          }
          if (!last) end_step();  // h_nxt and c_nxt complete before anyone reads them
          next_states();
        }
      }
      if (wait_reads && d + 1 == D) {
        for (int q = 0; q < np; ++q) wait_for(read_state[q].value, run_no);
      }
      float* hn = run.hn + static_cast<std::ptrdiff_t>(d) * Bs * Hout;
      float* cn = run.cn + static_cast<std::ptrdiff_t>(d) * Bs * H;
      for (int b = 0; b < B; ++b) {
        std::memmove(hn + b * Hout + v0, h_cur + b * ld_h + v0, sizeof(float) * (v1 - v0));  // y may alias hn
        std::memcpy(cn + b * H + u0, c_cur + b * H + u0, sizeof(float) * (u1 - u0));
      }
      // The state buffers are reused by the next direction (after the last, the join waits).
      if (d + 1 < D) ctx.sync();
    }
  });
  sweeps_.store(sweep0 + static_cast<unsigned>(T), std::memory_order_relaxed);
}

double stack_flops(const std::vector<const Layer*>& layers, double T, double B) {
  double f = 0;
  for (const Layer* l : layers) {
    const LayerDesc& d = l->desc();
    const double k = d.input_size + d.out_size() + (d.peephole == kPeepholeFull ? d.hidden_size : 0);
    f += 2.0 * d.num_directions * 4 * d.hidden_size * k + (d.proj_size > 0 ? 2.0 * d.num_directions * d.proj_size * d.hidden_size : 0);
  }
  return f * T * B;
}

namespace {

// When a stack splits by rows: at least kRowsPerParticipant rows each, and no layer with
// more than kRowSplitBytes of packed weights (every participant streams all of them each
// step, where a split by units streams its share). The bounds come from an in-process A/B
// on a 2-core Zen 5 (1 MiB of L2) of a prototype that copied the rows out and back, rows
// against units, same bits: B=32, H=256, 2 layers 1.274x [1.253, 1.309]; 1 layer 1.254x;
// B=16 1.261x; B=8 1.316x; H=128 1.525x; H=384 (4.5 MiB a layer) 1.090x; but H=512
// (8 MiB) 0.931x and B=4 (two rows each) 0.850x. As landed (in place, no copies): B=32,
// 2 layers 1.178x [1.150, 1.199] in that harness, and 1.12-1.22x through the package.
constexpr int kRowsPerParticipant = 4;
constexpr std::size_t kRowSplitBytes = std::size_t{5} << 20;
// A split by rows costs one fork and join per call, not one barrier per step: it needs
// this many times the work per participant that one step split by units needs.
constexpr double kRowSplitSteps = 20;

bool split_by_rows(const std::vector<const Layer*>& layers, int nth, const StackRun& run, const Threading& threading) {
  if (nth <= 1 || layers.empty() || run.B < nth) return false;
  if (threading.split == Threading::kSplitRows) return true;
  if (threading.split == Threading::kSplitUnits || threading.split_seed != 0) return false;
  if (run.B < kRowsPerParticipant * nth) return false;
  if (stack_flops(layers, run.T, run.B) / nth < kRowSplitSteps * threading.min_flops_per_thread) return false;
  for (const Layer* l : layers) {
    if (l->packed_bytes() > kRowSplitBytes) return false;
  }
  return true;
}

// Layer l's input and output in a stack run: the run's x, the scratch y buffers of the
// full batch in turn, and the run's y.
struct StackIo {
  const float* x;
  std::ptrdiff_t x_width;  // floats per row of x
  float* y;
  std::ptrdiff_t h_off, c_off;  // layer l's first state slot in h0/hn and c0/cn
};

std::vector<StackIo> stack_io(const std::vector<const Layer*>& layers, const StackRun& run, Workspace* ws) {
  std::vector<StackIo> io(layers.size());
  for (std::size_t l = 0; l + 1 < layers.size(); ++l) {  // every buffer sized before any pointer is taken
    const LayerDesc& desc = layers[l]->desc();
    grow(ws->y[l % 2], static_cast<std::size_t>(run.T) * run.B * desc.num_directions * desc.out_size());
  }
  const float* input = run.x;
  std::ptrdiff_t width = layers.empty() ? 0 : layers.front()->desc().input_size;
  std::ptrdiff_t h_off = 0, c_off = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const LayerDesc& desc = layers[l]->desc();
    io[l].x = input;
    io[l].x_width = width;
    io[l].h_off = h_off;
    io[l].c_off = c_off;
    if (l + 1 == layers.size()) {
      io[l].y = run.y;
    } else {
      io[l].y = ws->y[l % 2].data();
    }
    input = io[l].y;
    width = static_cast<std::ptrdiff_t>(desc.num_directions) * desc.out_size();
    h_off += static_cast<std::ptrdiff_t>(desc.num_directions) * run.B * desc.out_size();
    c_off += static_cast<std::ptrdiff_t>(desc.num_directions) * run.B * desc.hidden_size;
  }
  return io;
}

// The stack split by rows (onnxruntime's batch-parallel LSTM): each participant runs
// every layer over the whole sequence for its rows of the batch, on one thread, reading
// and writing them in place (LayerRun::batch_stride), with no barrier per step. Each
// element is computed the same way whatever rows run beside it: the bits of one thread.
void forward_rows(const std::vector<const Layer*>& layers, Isa isa, int nth, const StackRun& run, Workspace* ws) {
  const std::vector<StackIo> io = stack_io(layers, run, ws);
  Threading one;
  one.threads = 1;
  if (ws->sub.size() < static_cast<std::size_t>(nth)) ws->sub.resize(static_cast<std::size_t>(nth));
  for (int t = 0; t < nth; ++t) {
    const int nb = static_cast<int>(static_cast<long long>(run.B) * (t + 1) / nth - static_cast<long long>(run.B) * t / nth);
    for (const Layer* l : layers) l->reserve(isa, one, run.T, nb, true, &ws->sub[static_cast<std::size_t>(t)]);
  }
#if defined(__cpp_exceptions)
  std::atomic<bool> failed{false};
#endif
  parallel_run(nth, [&](const ParallelContext& ctx) {
    const int b0 = ctx.begin(run.B), b1 = ctx.end(run.B);
    if (b0 == b1) return;
    Workspace* sub = &ws->sub[static_cast<std::size_t>(ctx.tid)];
    auto rows = [&] {  // every layer, for rows [b0, b1)
      for (std::size_t l = 0; l < layers.size(); ++l) {
        const LayerDesc& desc = layers[l]->desc();
        LayerRun lr;
        lr.x = io[l].x + b0 * io[l].x_width;
        lr.T = run.T;
        lr.B = b1 - b0;
        lr.batch_stride = run.B;
        lr.h0 = run.h0 + io[l].h_off + static_cast<std::ptrdiff_t>(b0) * desc.out_size();
        lr.c0 = run.c0 + io[l].c_off + static_cast<std::ptrdiff_t>(b0) * desc.hidden_size;
        lr.hn = run.hn + io[l].h_off + static_cast<std::ptrdiff_t>(b0) * desc.out_size();
        lr.cn = run.cn + io[l].c_off + static_cast<std::ptrdiff_t>(b0) * desc.hidden_size;
        lr.lengths = run.lengths != nullptr ? run.lengths + b0 : nullptr;
        lr.y = io[l].y + static_cast<std::ptrdiff_t>(b0) * desc.num_directions * desc.out_size();
        layers[l]->forward(isa, one, lr, sub);
      }
    };
#if defined(__cpp_exceptions)
    try {  // everything was reserved above; should anything still fail, it is rethrown after the join
      rows();
    } catch (...) {
      failed.store(true);
    }
#else
    rows();
#endif
  });
#if defined(__cpp_exceptions)
  if (failed.load()) throw std::bad_alloc();
#endif
}

}  // namespace

void forward_stack(const std::vector<const Layer*>& layers, Isa isa, const Threading& threading, const StackRun& run,
                   Workspace* ws) {
  const int nth = std::min(threading.threads, hardware_threads());
  if (split_by_rows(layers, nth, run, threading)) {
    forward_rows(layers, isa, nth, run, ws);
    return;
  }
  const std::vector<StackIo> io = stack_io(layers, run, ws);
  for (std::size_t l = 0; l < layers.size(); ++l) {
    LayerRun lr;
    lr.x = io[l].x;
    lr.T = run.T;
    lr.B = run.B;
    lr.h0 = run.h0 + io[l].h_off;
    lr.c0 = run.c0 + io[l].c_off;
    lr.hn = run.hn + io[l].h_off;
    lr.cn = run.cn + io[l].c_off;
    lr.lengths = run.lengths;
    lr.y = io[l].y;
    layers[l]->forward(isa, threading, lr, ws);
  }
}

}  // namespace lstm

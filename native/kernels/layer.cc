#include "layer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <utility>

#include "cell.h"
#include "threadpool.h"

namespace lstm {

Layer::Layer(const LayerDesc& desc, const DirectionWeightsView* dirs) : desc_(desc) {
  const int H = desc.hidden_size;
  const int Hout = desc.out_size();
  blocks_ = (H + kPanel - 1) / kPanel;
  gate_cols_ = blocks_ * 4 * kPanel;
  dirs_.resize(desc.num_directions);
  for (int d = 0; d < desc.num_directions; ++d) {
    const DirectionWeightsView& v = dirs[d];
    Direction& w = dirs_[d];
    pack_gate_matrix(v.w_ih, H, desc.input_size, &w.w_ih);
    pack_gate_matrix(v.w_hh, H, Hout, &w.w_hh);
    if (desc.peephole == kPeepholeFull) pack_gate_matrix(v.w_ch, H, H, &w.w_ch);
    if (desc.proj_size > 0) pack_matrix(v.w_hr, desc.proj_size, H, &w.w_hr);
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
    n += d.w_ih.data.size() + d.w_hh.data.size() + d.w_ch.data.size() + d.w_hr.data.size() + d.bias.size() +
         d.w_ci.size() + d.w_cf.size() + d.w_co.size();
  }
  return n * sizeof(float);
}

namespace {

// Gate pre-activations kept per chunk of time steps: 512 KiB, so the projection's writes
// stay in L2 and the steps read them back from there (16 MiB chunks missed on every
// C tile: 14% of the GEMM's time went to those stores).
constexpr std::ptrdiff_t kChunkFloats = std::ptrdiff_t{1} << 17;

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

void Layer::forward(Isa isa, const Threading& threading, const LayerRun& run, Workspace* ws) const {
  const int T = run.T;
  const int B = run.B;
  const int H = desc_.hidden_size;
  const int Hout = desc_.out_size();
  const int D = desc_.num_directions;
  const bool proj = desc_.proj_size > 0;
  const std::ptrdiff_t G = gate_cols_;
  const std::ptrdiff_t y_stride = static_cast<std::ptrdiff_t>(D) * Hout;
  const int proj_panels = (Hout + kPanel - 1) / kPanel;
  // Without a projection or lengths, h_t is exactly the cell's output: the cell writes it
  // straight into y and the next step's GEMM reads it there (rows y_stride apart), so no
  // step copies h (in-process A/B of an S2-sized layer: 3.5-8% faster, same bits).
  const bool direct = !proj && run.lengths == nullptr;

  // The input projection runs one chunk of time steps ahead of the recurrence, so the
  // gate buffer stays bounded (and cache-warm) however long the sequence is.
  const int chunk = static_cast<int>(std::max<std::ptrdiff_t>(1, std::min<std::ptrdiff_t>(T, kChunkFloats / (B * G))));
  // All allocation happens here, before any thread starts (the parallel body cannot throw).
  grow(ws->gates, static_cast<std::size_t>(chunk) * B * G);
  grow(ws->h, 2 * static_cast<std::size_t>(B) * Hout);
  grow(ws->c, 2 * static_cast<std::size_t>(B) * H);
  grow(ws->r, static_cast<std::size_t>(B) * H);
  float* const gates = ws->gates.data();
  float* const hbuf = ws->h.data();
  float* const cbuf = ws->c.data();
  float* const r = ws->r.data();

  const double step_flops = 2.0 * B * 4 * H * (Hout + (desc_.peephole == kPeepholeFull ? H : 0) + (proj ? Hout : 0));
  int nth = std::min(threading.threads, blocks_);
  while (nth > 1 && step_flops / nth < threading.min_flops_per_thread) --nth;
  // A pack buffer per participant, only when one of this layer's products could use it
  // (a participant's slice is at most a whole matrix): a small model's forward then
  // allocates and clears none (each forward call has its own Workspace).
  const Direction& w0 = dirs_[0];
  const int gate_panels = 4 * blocks_;
  const bool packs = gemm_nt_uses_scratch(isa, chunk * B, w0.w_ih, gate_panels) ||
                     gemm_nt_uses_scratch(isa, B, w0.w_hh, gate_panels) ||
                     (!w0.w_ch.empty() && gemm_nt_uses_scratch(isa, B, w0.w_ch, gate_panels)) ||
                     (proj && gemm_nt_uses_scratch(isa, B, w0.w_hr, proj_panels));
  if (packs) grow(ws->pack, static_cast<std::size_t>(nth) * gemm_scratch_floats());
  ws->pace.assign(2 * static_cast<std::size_t>(nth), 0.0);
  if (ws->bounds.size() < static_cast<std::size_t>(nth) * (nth + 1)) ws->bounds.resize(static_cast<std::size_t>(nth) * (nth + 1));
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
      if (desc_.peephole == kPeepholeDiagonal) {
        spec.wci = w.w_ci.data();
        spec.wcf = w.w_cf.data();
        spec.wco = w.w_co.data();
      }
      float* h_cur = hbuf;  // the first step reads a copy of h0: y or hn may alias it
      float* h_nxt = hbuf + static_cast<std::ptrdiff_t>(B) * Hout;
      std::ptrdiff_t ld_h = Hout;
      float* c_cur = cbuf;
      float* c_nxt = cbuf + static_cast<std::ptrdiff_t>(B) * H;
      const float* h0 = run.h0 + static_cast<std::ptrdiff_t>(d) * B * Hout;
      const float* c0 = run.c0 + static_cast<std::ptrdiff_t>(d) * B * H;
      for (int b = 0; b < B; ++b) {
        std::memcpy(h_cur + b * Hout + v0, h0 + b * Hout + v0, sizeof(float) * (v1 - v0));
        std::memcpy(c_cur + b * H + u0, c0 + b * H + u0, sizeof(float) * (u1 - u0));
      }
      ctx.sync();  // every participant reads all of h (and c with full peepholes)
      mark();

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
        const float* x_lo = run.x + static_cast<std::ptrdiff_t>(lo) * B * desc_.input_size;
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
          gemm_nt_panels(isa, static_cast<int>(rows), x_lo, desc_.input_size, w.w_ih, 4 * blk0, 4 * blk1, gates, G, pack,
                         backward(done / chunk));
        }
        for (int s = 0; s < n; ++s) {
          const int t = reverse ? lo + n - 1 - s : lo + s;
          float* g = gates + static_cast<std::ptrdiff_t>(t - lo) * B * G;
          if (joined) {
            const bool back = backward(done + s);
            for (int i = 4 * blk0; i < 4 * blk1; i += 4) {
              const int p = back ? 4 * blk1 - 4 - (i - 4 * blk0) : i;  // panels [p, p + 4)
              gemm_nt_panels(isa, 1, x_lo, desc_.input_size, w.w_ih, p, p + 4, g, G, pack);
              gemm_nt_panels(isa, 1, h_cur, ld_h, w.w_hh, p, p + 4, g, G, pack);
              if (desc_.peephole == kPeepholeFull) gemm_nt_panels(isa, 1, c_cur, H, w.w_ch, p, p + 4, g, G, pack);
            }
          } else {
            gemm_nt_panels(isa, B, h_cur, ld_h, w.w_hh, 4 * blk0, 4 * blk1, g, G, pack, backward(done + s));
            if (desc_.peephole == kPeepholeFull) {
              gemm_nt_panels(isa, B, c_cur, H, w.w_ch, 4 * blk0, 4 * blk1, g, G, pack, backward(done + s));
            }
          }
          float* const y_t = run.y + static_cast<std::ptrdiff_t>(t) * B * y_stride + static_cast<std::ptrdiff_t>(d) * Hout;
          if (direct) {
            cell_forward(isa, spec, B, g, G, blk0, blk1, c_cur, c_nxt, y_t, y_stride);
            end_step();  // h_t (in y) and c_nxt complete before anyone reads them
            h_cur = y_t;
            ld_h = y_stride;
            std::swap(c_cur, c_nxt);
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
          end_step();  // h_nxt and c_nxt complete before anyone reads them
          std::swap(h_cur, h_nxt);
          std::swap(c_cur, c_nxt);
        }
      }
      float* hn = run.hn + static_cast<std::ptrdiff_t>(d) * B * Hout;
      float* cn = run.cn + static_cast<std::ptrdiff_t>(d) * B * H;
      for (int b = 0; b < B; ++b) {
        std::memmove(hn + b * Hout + v0, h_cur + b * ld_h + v0, sizeof(float) * (v1 - v0));  // y may alias hn
        std::memcpy(cn + b * H + u0, c_cur + b * H + u0, sizeof(float) * (u1 - u0));
      }
      ctx.sync();  // the state buffers are reused by the next direction
    }
  });
  sweeps_.store(sweep0 + static_cast<unsigned>(T), std::memory_order_relaxed);
}

void forward_stack(const std::vector<const Layer*>& layers, Isa isa, const Threading& threading, const StackRun& run,
                   Workspace* ws) {
  const float* input = run.x;
  std::ptrdiff_t h_off = 0, c_off = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const LayerDesc& desc = layers[l]->desc();
    const int D = desc.num_directions;
    LayerRun lr;
    lr.x = input;
    lr.T = run.T;
    lr.B = run.B;
    lr.h0 = run.h0 + h_off;
    lr.c0 = run.c0 + c_off;
    lr.hn = run.hn + h_off;
    lr.cn = run.cn + c_off;
    lr.lengths = run.lengths;
    if (l + 1 == layers.size()) {
      lr.y = run.y;
    } else {
      AlignedFloats& buf = ws->y[l % 2];
      grow(buf, static_cast<std::size_t>(run.T) * run.B * D * desc.out_size());
      lr.y = buf.data();
    }
    layers[l]->forward(isa, threading, lr, ws);
    input = lr.y;
    h_off += static_cast<std::ptrdiff_t>(D) * run.B * desc.out_size();
    c_off += static_cast<std::ptrdiff_t>(D) * run.B * desc.hidden_size;
  }
}

}  // namespace lstm

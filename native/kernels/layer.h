// LSTM layers with packed weights, and the stack runner: PyTorch's algorithm — one GEMM
// for the input projection of every step, then per step the recurrent GEMM and the
// fused cell update — split across threads by blocks of 16 hidden units.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "activations.h"
#include "gemm.h"
#include "isa.h"
#include "pages.h"

namespace lstm {

enum Peephole : int { kPeepholeNone = 0, kPeepholeDiagonal = 1, kPeepholeFull = 2 };

struct LayerDesc {
  int input_size = 0;
  int hidden_size = 0;
  int proj_size = 0;  // 0: no projection
  int num_directions = 1;
  bool reverse = false;  // one-direction layer running from the last step to the first
  bool bias = true;
  int peephole = kPeepholeNone;
  Activation gate{kSigmoid, 0.f, 0.f};
  Activation cell{kTanh, 0.f, 0.f};
  Activation hidden{kTanh, 0.f, 0.f};
  // A bidirectional layer whose reverse direction has activations of its own (ONNX allows
  // six): those, else the three above serve both directions.
  bool reverse_acts = false;
  Activation gate_r{kSigmoid, 0.f, 0.f};
  Activation cell_r{kTanh, 0.f, 0.f};
  Activation hidden_r{kTanh, 0.f, 0.f};
  float clip = 0.f;
  bool coupled = false;

  int out_size() const { return proj_size > 0 ? proj_size : hidden_size; }
};

// Unpacked weights of one direction in PyTorch layout (gate order i, f, g, o);
// pointers the caller owns, null where the configuration has no such tensor.
struct DirectionWeightsView {
  const float* w_ih = nullptr;  // [4H, I]
  const float* w_hh = nullptr;  // [4H, Hout]
  const float* b_ih = nullptr;  // [4H]
  const float* b_hh = nullptr;  // [4H]
  const float* w_hr = nullptr;  // [Hout, H]
  const float* w_ci = nullptr;  // [H]
  const float* w_cf = nullptr;  // [H]
  const float* w_co = nullptr;  // [H]
  const float* w_ch = nullptr;  // [4H, H]
};

struct LayerRun {
  const float* x = nullptr;   // [T, B, I]
  int T = 0;
  int B = 0;
  const float* h0 = nullptr;  // [D, B, Hout]
  const float* c0 = nullptr;  // [D, B, H]
  const int32_t* lengths = nullptr;  // [B] in 1..T, or null
  float* y = nullptr;         // [T, B, D*Hout]
  float* hn = nullptr;        // [D, B, Hout]; may alias h0 (a streaming step updates in place)
  float* cn = nullptr;        // [D, B, H]; may alias c0
  // 0, or the B rows are rows of a larger batch of this many: then x, y, h0, c0, hn and cn
  // point at the first of them in tensors of that batch ([T, batch_stride, I] and so on),
  // whose time steps (and directions) lie batch_stride rows apart.
  int batch_stride = 0;
};

// Storage aligned to a cache line. Threads write neighbouring column ranges of the
// scratch buffers (whole 16-unit blocks, so 64-byte multiples); with malloc's 16-byte
// alignment the line at every boundary was shared by two cores and bounced between them.
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    T* p = static_cast<T*>(::operator new(n * sizeof(T), kAlign));
    populate_pages(p, n * sizeof(T));  // the vector writes every element next
    return p;
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, kAlign); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const noexcept { return false; }
};
using AlignedFloats = std::vector<float, CacheLineAllocator<float>>;

// A flag in a cache line of its own (one participant writes it, others read it).
struct alignas(64) LineFlag {
  std::atomic<std::uint64_t> value{0};
  LineFlag() = default;
  LineFlag(const LineFlag& o) : value(o.value.load(std::memory_order_relaxed)) {}
};

// Scratch memory of a run, grown on demand; reuse one to avoid allocating per call.
struct Workspace {
  AlignedFloats gates, h, c, r, y[2];
  AlignedFloats pack;  // gemm_scratch_floats() per participant, when the layer packs
  AlignedFloats xrows;  // a chunk's rows of x gathered, when they are rows of a larger batch
  std::vector<double> pace;  // load balance: smoothed ns per block, [2][participants]
  std::vector<int> bounds;   // load balance: each participant's copy of the split
  std::vector<Workspace> sub;  // a stack split by rows: each participant's own
  // A run without a final barrier over state updated in place: each participant's flag
  // says it has read the initial state (the run's number in `runs`).
  std::vector<LineFlag> read_state;
  std::uint64_t runs = 0;

  // Bytes held by the buffers.
  std::size_t bytes() const {
    std::size_t floats = gates.capacity() + h.capacity() + c.capacity() + r.capacity() + y[0].capacity() +
                         y[1].capacity() + pack.capacity() + xrows.capacity();
    std::size_t n = floats * sizeof(float) + pace.capacity() * sizeof(double) + bounds.capacity() * sizeof(int) +
                    read_state.capacity() * sizeof(LineFlag);
    for (const Workspace& w : sub) n += w.bytes();
    return n;
  }
};

// How a run may use threads. Results are bitwise identical for every setting.
struct Threading {
  int threads = 1;
  // Below this much work per step and thread, fewer threads are used (sync costs ~1 us).
  double min_flops_per_thread = 100000;
  // 0: the hidden units move between threads after each step toward their measured
  // speeds. Otherwise (tests) the split is a pseudo-random one per step from this seed.
  unsigned split_seed = 0;
  // Tests: every participant but the first starts a run this many microseconds late, so a
  // race between a participant's first writes and another's reads of the inputs shows.
  int stagger_us = 0;
  // How forward_stack shares a run among threads: kSplitAuto decides by the shapes;
  // kSplitUnits and kSplitRows force one way (tests, benchmarks).
  enum Split : int { kSplitAuto = 0, kSplitUnits = 1, kSplitRows = 2 };
  int split = kSplitAuto;
};

// The split of `blocks` hidden-unit blocks among nth participants: bounds[0] = 0 <
// bounds[1] < ... < bounds[nth] = blocks. Moves each inner bound toward a share in
// proportion to each participant's speed (1 / pace, pace in time per block), but only
// when it is more than 3/4 of a block from there, so timing noise does not shuttle a
// block (and the cache lines of its weights) back and forth. No pace yet: unchanged.
void rebalance(const double* pace, int nth, int blocks, int* bounds);

class Layer {
 public:
  // Packs copies of the weights, in groups of `group` panels (gemm.h: packed_group of the
  // ISA that will run the layer; any ISA computes the same bits from either); the views
  // need not outlive the constructor.
  Layer(const LayerDesc& desc, const DirectionWeightsView* dirs, int group = 1);

  const LayerDesc& desc() const { return desc_; }
  // Bytes of packed weights this layer holds.
  std::size_t packed_bytes() const;
  // Bytes of memory the layer holds for them (the weight block's mapping is rounded up).
  std::size_t held_bytes() const;
  void forward(Isa isa, const Threading& threading, const LayerRun& run, Workspace* ws) const;
  // Grows ws to everything forward needs for T steps of B rows (rows of a larger batch
  // when strided), so that forward then allocates no scratch.
  void reserve(Isa isa, const Threading& threading, int T, int B, bool strided, Workspace* ws) const;

 private:
  struct Plan {
    int chunk;  // time steps whose input projection runs at once
    int nth;    // participants
    bool packs;  // whether a product packs blocks of A (scratch per participant)
    bool own_state;  // each participant copies all of h0 (and c0 with full peepholes)
  };
  Plan plan(Isa isa, const Threading& threading, int T, int B) const;
  void reserve(const Plan& plan, int B, bool strided, Workspace* ws) const;

  struct Direction {
    PackedMatrix w_ih, w_hh, w_ch;  // gate-interleaved
    PackedMatrix w_hr;              // plain
    std::vector<float> bias;        // b_ih + b_hh, gate-interleaved; empty without bias
    std::vector<float> w_ci, w_cf, w_co;
  };

  LayerDesc desc_;
  int blocks_ = 0;       // ceil(H / 16)
  int gate_cols_ = 0;    // 64 * blocks_
  std::vector<Direction> dirs_;
  PageBlock weights_;  // every direction's packed matrices, one after another
  // Steps this layer has run so far (one recurrent product each): its parity picks the
  // panel order of the next run's first step. Concurrent runs may race on it; it only
  // steers caching, never results.
  mutable std::atomic<unsigned> sweeps_{0};
};

// A stack: layer l+1 reads layer l's output. h0/c0/hn/cn hold every layer: [L*D, B, Hout] / [L*D, B, H].
struct StackRun {
  const float* x = nullptr;  // [T, B, I]
  int T = 0;
  int B = 0;
  const float* h0 = nullptr;
  const float* c0 = nullptr;
  const int32_t* lengths = nullptr;
  float* y = nullptr;  // the last layer's output [T, B, D*Hout]
  float* hn = nullptr;
  float* cn = nullptr;

  // A forward of T steps from h0 and c0 (lengths or null), writing y, hn and cn.
  static StackRun forward(const float* x, int T, int B, const float* h0, const float* c0, const int32_t* lengths,
                          float* y, float* hn, float* cn) {
    StackRun run;
    run.x = x;
    run.T = T;
    run.B = B;
    run.h0 = h0;
    run.c0 = c0;
    run.lengths = lengths;
    run.y = y;
    run.hn = hn;
    run.cn = cn;
    return run;
  }
  // One step of B rows of a unidirectional stack: h and c updated in place, the top h to out.
  static StackRun step(const float* x, int B, float* h, float* c, float* out) {
    return forward(x, 1, B, h, c, nullptr, out, h, c);
  }
};

// Whether [a, a + an) and [b, b + bn) share a float (an empty range shares none).
inline bool overlaps(const float* a, std::size_t an, const float* b, std::size_t bn) {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a), b0 = reinterpret_cast<std::uintptr_t>(b);
  return an > 0 && bn > 0 && a0 < b0 + bn * sizeof(float) && b0 < a0 + an * sizeof(float);
}

// FLOPs of the products of T steps of B rows through these layers (input, recurrent, full
// peephole and projection matrices, every direction): what the thread and inline-run
// decisions weigh.
double stack_flops(const std::vector<const Layer*>& layers, double T, double B);

// With several threads, a run is shared either by hidden units (every participant computes
// its units of every row, with a barrier per step) or by rows of the batch (each runs the
// whole stack for its rows alone, no barrier per step); the shapes decide, unless
// threading.split does. Either gives the bits of one thread.
void forward_stack(const std::vector<const Layer*>& layers, Isa isa, const Threading& threading, const StackRun& run,
                   Workspace* ws);

}  // namespace lstm

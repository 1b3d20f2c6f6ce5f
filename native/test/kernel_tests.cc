// Kernel tests: every ISA this CPU has against the scalar reference (the oracle),
// on sizes that hit every remainder path; activation accuracy against double.
// Run by ctest. `kernel_tests --bench` times the GEMM instead.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#if !defined(__wasm__) || defined(__wasm_atomics__)
#define LSTM_TEST_THREADS 1
#include <thread>
#endif

#if defined(__linux__) && defined(__x86_64__)
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#endif

#include "cell.h"
#include "gemm.h"
#include "isa.h"
#include "layer.h"
#include "pages.h"
#include "threadpool.h"
#include "train_cell.h"

using namespace lstm;

namespace {

int failures = 0;
int checks = 0;
bool quick = false;  // --quick: a small subset (valgrind runs it)

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
}

std::vector<float> random_vec(std::mt19937& rng, std::size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<Isa> isas_to_test() {
  std::vector<Isa> out;
  for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon, Isa::kSimd128}) {
    if (isa_supported(i)) {
      out.push_back(i);
    } else {
      std::printf("skip %s: not supported by this CPU\n", isa_name(i));
    }
  }
  return out;
}

// Naive double-precision C += A W^T on unpacked W: the reference for every GEMM path.
void gemm_reference(int M, int N, int K, const float* A, int lda, const float* W, std::vector<double>& C, int ldc) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += static_cast<double>(A[m * lda + k]) * W[n * K + k];
      C[m * ldc + n] += s;
    }
}

void test_gemm(Isa isa) {
  std::mt19937 rng(42);
  // Sizes hit the micro-kernel row remainders (1..12), partial panels, K blocks (KC=512) and M blocks (MC=72).
  const int Ms[] = {1, 2, 3, 5, 6, 7, 11, 12, 13, 31, 73, 150};
  const int Ns[] = {1, 3, 15, 16, 17, 33, 64, 100};
  const int Ks[] = {1, 2, 7, 16, 255, 256, 257, 511, 512, 513, 1100};
  for (int M : Ms)
    for (int N : Ns)
      for (int K : Ks) {
        if (static_cast<long>(M) * N * K > (quick ? 20000 : 3000000)) continue;
        const int lda = K + 3;  // strided A, as the layer passes it
        const int ldc = N + 5;
        std::vector<float> A = random_vec(rng, static_cast<std::size_t>(M) * lda);
        std::vector<float> W = random_vec(rng, static_cast<std::size_t>(N) * K);
        std::vector<float> C0 = random_vec(rng, static_cast<std::size_t>(M) * ldc);
        std::vector<double> ref(C0.begin(), C0.end());
        gemm_reference(M, N, K, A.data(), lda, W.data(), ref, ldc);
        PackedMatrix P;
        pack_matrix(W.data(), N, K, &P);
        std::vector<float> C = C0;
        gemm_nt(isa, M, A.data(), lda, P, C.data(), ldc);
        double worst = 0;
        bool untouched = true;
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < ldc; ++n) {
            const std::size_t i = static_cast<std::size_t>(m) * ldc + n;
            if (n < N) {
              worst = std::max(worst, std::fabs(C[i] - ref[i]) / (1e-6 + 1e-6 * std::sqrt(K) * (1 + std::fabs(ref[i]))));
            } else if (C[i] != C0[i]) {
              untouched = false;
            }
          }
        char buf[160];
        std::snprintf(buf, sizeof buf, "gemm %s M=%d N=%d K=%d: error ratio %.3f", isa_name(isa), M, N, K, worst);
        expect(worst <= 1.0, buf);
        std::snprintf(buf, sizeof buf, "gemm %s M=%d N=%d K=%d wrote outside its columns", isa_name(isa), M, N, K);
        expect(untouched, buf);

        // The panels in descending order, whole or as two ranges (as threads get them; for
        // one row, ranges that are not whole groups of four panels): the same bits.
        const int panels = P.panel_count();
        std::vector<float> Cb = C0, Cr = C0;
        gemm_nt_panels(isa, M, A.data(), lda, P, 0, panels, Cb.data(), ldc, nullptr, true);
        const int cut = panels / 2 + 1 < panels ? panels / 2 + 1 : panels;
        gemm_nt_panels(isa, M, A.data(), lda, P, cut, panels, Cr.data(), ldc, nullptr, true);
        gemm_nt_panels(isa, M, A.data(), lda, P, 0, cut, Cr.data(), ldc, nullptr, true);
        std::snprintf(buf, sizeof buf, "gemm %s M=%d N=%d K=%d backward differs from forward", isa_name(isa), M, N, K);
        expect(Cb == C && Cr == C, buf);
        // One panel per call, so never through a two-panel kernel: the same bits.
        std::vector<float> Cs = C0;
        for (int p = 0; p < panels; ++p) gemm_nt_panels(isa, M, A.data(), lda, P, p, p + 1, Cs.data(), ldc);
        std::snprintf(buf, sizeof buf, "gemm %s M=%d N=%d K=%d panel by panel differs", isa_name(isa), M, N, K);
        expect(Cs == C, buf);
        // Packed in pairs of panels (as for AVX-512): the same bits whole, backward, in two
        // ranges, from an odd panel on (no unit may start there) and panel by panel.
        PackedMatrix P2;
        pack_matrix(W.data(), N, K, &P2, nullptr, 2);
        std::vector<float> C2 = C0, C2b = C0, C2r = C0, C2o = C0, C2s = C0;
        gemm_nt(isa, M, A.data(), lda, P2, C2.data(), ldc);
        gemm_nt_panels(isa, M, A.data(), lda, P2, 0, panels, C2b.data(), ldc, nullptr, true);
        gemm_nt_panels(isa, M, A.data(), lda, P2, cut, panels, C2r.data(), ldc, nullptr, true);
        gemm_nt_panels(isa, M, A.data(), lda, P2, 0, cut, C2r.data(), ldc, nullptr, true);
        gemm_nt_panels(isa, M, A.data(), lda, P2, 1, panels, C2o.data(), ldc);
        gemm_nt_panels(isa, M, A.data(), lda, P2, 0, 1, C2o.data(), ldc);
        for (int p = 0; p < panels; ++p) gemm_nt_panels(isa, M, A.data(), lda, P2, p, p + 1, C2s.data(), ldc);
        std::snprintf(buf, sizeof buf, "gemm %s M=%d N=%d K=%d in pairs of panels differs", isa_name(isa), M, N, K);
        expect(C2 == C && C2b == C && C2r == C && C2o == C && C2s == C, buf);

        // The transposed operands: W packed from Wt [K, N] is the same packed matrix, and
        // C from At [K, M] (rows of C split in two ranges, as threads split them) has the
        // same bits as gemm_nt's.
        const int ldat = M + 2;
        std::vector<float> At(static_cast<std::size_t>(K) * ldat, 99.f), Wt(static_cast<std::size_t>(K) * N);
        for (int m = 0; m < M; ++m)
          for (int k = 0; k < K; ++k) At[static_cast<std::size_t>(k) * ldat + m] = A[static_cast<std::size_t>(m) * lda + k];
        for (int n = 0; n < N; ++n)
          for (int k = 0; k < K; ++k) Wt[static_cast<std::size_t>(k) * N + n] = W[static_cast<std::size_t>(n) * K + k];
        PackedMatrix Pt;
        pack_matrix_kn(Wt.data(), K, N, &Pt);
        std::snprintf(buf, sizeof buf, "pack_matrix_kn N=%d K=%d equals pack_matrix", N, K);
        expect(Pt.n == P.n && Pt.k == P.k && Pt.data == P.data, buf);
        std::vector<float> Ct = C0, scratch(gemm_scratch_floats());
        const int split = M / 3;
        gemm_tn_rows(isa, At.data(), ldat, Pt, split, M, Ct.data(), ldc, scratch.data());
        gemm_tn_rows(isa, At.data(), ldat, Pt, 0, split, Ct.data(), ldc, scratch.data());
        std::snprintf(buf, sizeof buf, "gemm_tn %s M=%d N=%d K=%d equals gemm_nt bitwise", isa_name(isa), M, N, K);
        expect(Ct == C, buf);
      }
}

// gemm_nt with scratch packs blocks of A when the weights are 1 MiB or more: the same
// bits as without (W as single panels and in pairs), and within rounding of the double
// reference. Sizes cover partial
// panels, two blocks of K and of M, short last row groups (6+4+3, 4+3, 6+5, 5+4 rows
// with mr = 6), and depths that leave 1-3 k past the pack's steps of four.
void test_gemm_packed(Isa isa) {
  std::mt19937 rng(43);
  struct Shape { int M, N, K; };
  const Shape shapes[] = {{13, 1041, 257}, {7, 1024, 256}, {11, 1024, 603}, {9, 1030, 130}, {150, 1030, 520}, {2, 2048, 128}};
  std::vector<float> scratch(gemm_scratch_floats());
  for (const Shape& s : shapes) {
    if (quick && s.M > 13) continue;
    const int lda = s.K + 3, ldc = s.N + 5;
    std::vector<float> A = random_vec(rng, static_cast<std::size_t>(s.M) * lda);
    std::vector<float> W = random_vec(rng, static_cast<std::size_t>(s.N) * s.K);
    std::vector<float> C0 = random_vec(rng, static_cast<std::size_t>(s.M) * ldc);
    std::vector<double> ref(C0.begin(), C0.end());
    gemm_reference(s.M, s.N, s.K, A.data(), lda, W.data(), ref, ldc);
    std::vector<float> C = C0;
    for (const int group : {1, 2}) {
      PackedMatrix P;
      pack_matrix(W.data(), s.N, s.K, &P, nullptr, group);
      std::vector<float> Cp = C0, Cb = C0;
      if (group == 1) gemm_nt(isa, s.M, A.data(), lda, P, C.data(), ldc);
      gemm_nt(isa, s.M, A.data(), lda, P, Cp.data(), ldc, scratch.data());
      const int panels = P.panel_count();
      // Backward, with the next-panel prefetch running the other way: the same bits.
      gemm_nt_panels(isa, s.M, A.data(), lda, P, 0, panels, Cb.data(), ldc, scratch.data(), true);
      // Panel by panel (no two-panel kernel), and from an odd panel on (the pairs shifted by one).
      std::vector<float> Cs = C0;
      for (int p = 0; p < panels; ++p) gemm_nt_panels(isa, s.M, A.data(), lda, P, p, p + 1, Cs.data(), ldc, scratch.data());
      std::vector<float> Co = C0;
      gemm_nt_panels(isa, s.M, A.data(), lda, P, 1, panels, Co.data(), ldc, scratch.data());
      gemm_nt_panels(isa, s.M, A.data(), lda, P, 0, 1, Co.data(), ldc, scratch.data());
      double worst = 0;
      for (int m = 0; m < s.M; ++m)
        for (int n = 0; n < s.N; ++n) {
          const std::size_t i = static_cast<std::size_t>(m) * ldc + n;
          worst = std::max(worst, std::fabs(Cp[i] - ref[i]) / (1e-6 + 1e-6 * std::sqrt(s.K) * (1 + std::fabs(ref[i]))));
        }
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    "gemm packed %s M=%d N=%d K=%d group %d: error ratio %.3f, same bits as unpacked and backward",
                    isa_name(isa), s.M, s.N, s.K, group, worst);
      expect(worst <= 1.0 && Cp == C && Cb == C && Cs == C && Co == C, buf);
    }
  }
}

void test_activations(Isa isa) {
  std::vector<float> x;
  for (float v = -30.f; v <= 30.f; v += quick ? 0.0625f : 0.0009765625f) x.push_back(v);
  std::mt19937 rng(7);
  for (float v : random_vec(rng, 20000, -1.f, 1.f)) x.push_back(v * 1e-3f);
  for (float v : {0.f, -0.f, 1e-30f, -1e-30f, 0.625f, -0.625f, 88.f, -88.f, 100.f, -100.f, 1e30f, -1e30f}) x.push_back(v);
  const int n = static_cast<int>(x.size());
  std::vector<float> ys(n), yt(n);
  sigmoid_vec(isa, x.data(), ys.data(), n);
  tanh_vec(isa, x.data(), yt.data(), n);
  double ws = 0, wt = 0;
  for (int i = 0; i < n; ++i) {
    ws = std::max(ws, std::fabs(ys[i] - 1.0 / (1.0 + std::exp(-static_cast<double>(x[i])))));
    wt = std::max(wt, std::fabs(yt[i] - std::tanh(static_cast<double>(x[i]))));
  }
  char buf[120];
  std::snprintf(buf, sizeof buf, "sigmoid %s max abs error %.3g (limit 2e-7)", isa_name(isa), ws);
  expect(ws <= 2e-7, buf);
  std::snprintf(buf, sizeof buf, "tanh %s max abs error %.3g (limit 2e-7)", isa_name(isa), wt);
  expect(wt <= 2e-7, buf);
  std::printf("%s: sigmoid max err %.3g, tanh max err %.3g\n", isa_name(isa), ws, wt);
  // NaN in, NaN out, in every lane of a vector and in the remainder.
  std::vector<float> nans(37, std::nanf("")), ns(37), nt(37);
  sigmoid_vec(isa, nans.data(), ns.data(), 37);
  tanh_vec(isa, nans.data(), nt.data(), 37);
  bool all_nan = true;
  for (int i = 0; i < 37; ++i) all_nan = all_nan && std::isnan(ns[i]) && std::isnan(nt[i]);
  expect(all_nan, std::string("sigmoid/tanh ") + isa_name(isa) + " of NaN is NaN");
  // Every length up to 80 (lock-step groups, single vectors, the scalar tail): the same
  // accuracy, and nothing written past n.
  bool lengths_ok = true;
  for (int len = 0; len <= 80; ++len) {
    std::vector<float> in = random_vec(rng, len, -8.f, 8.f), s(len + 9, 7.f), t(len + 9, 7.f);
    sigmoid_vec(isa, in.data(), s.data(), len);
    tanh_vec(isa, in.data(), t.data(), len);
    for (int i = 0; i < len; ++i) {
      lengths_ok = lengths_ok && std::fabs(s[i] - 1.0 / (1.0 + std::exp(-static_cast<double>(in[i])))) <= 2e-7 &&
                   std::fabs(t[i] - std::tanh(static_cast<double>(in[i]))) <= 2e-7;
    }
    for (int i = len; i < len + 9; ++i) lengths_ok = lengths_ok && s[i] == 7.f && t[i] == 7.f;
  }
  expect(lengths_ok, std::string("sigmoid/tanh ") + isa_name(isa) + ": every length 0..80 accurate, nothing past n");
}

// Weights of one direction for desc, every tensor a layer can have (it packs the ones its
// configuration uses), uniform in [-range, range] and kept alive in store.
DirectionWeightsView random_direction(std::mt19937& rng, std::vector<std::vector<float>>& store, const LayerDesc& desc,
                                      float range) {
  const int I = desc.input_size, H = desc.hidden_size, Ho = desc.out_size();
  auto make = [&](int n) {
    store.push_back(random_vec(rng, static_cast<std::size_t>(n), -range, range));
    return store.back().data();
  };
  DirectionWeightsView v;
  v.w_ih = make(4 * H * I);
  v.w_hh = make(4 * H * Ho);
  v.b_ih = make(4 * H);
  v.b_hh = make(4 * H);
  v.w_hr = make(Ho * H);
  v.w_ci = make(H);
  v.w_cf = make(H);
  v.w_co = make(H);
  v.w_ch = make(4 * H * H);
  return v;
}

// One streaming step of a layer: x [B, I] from the state in h and c, updated in place,
// the top h written to out; on `threads` threads, the others starting stagger_us late.
void step_layer(const Layer& layer, Isa isa, const float* x, int B, float* h, float* c, float* out, int threads,
                int stagger_us) {
  LayerRun run;
  run.x = x;
  run.T = 1;
  run.B = B;
  run.h0 = run.hn = h;
  run.c0 = run.cn = c;
  run.y = out;
  Threading threading;
  threading.threads = threads;
  threading.min_flops_per_thread = 0;
  threading.stagger_us = stagger_us;
  Workspace ws;
  layer.forward(isa, threading, run, &ws);
}

// A whole layer on `isa` against the scalar path, over configurations that reach every cell branch.
void test_layer(Isa isa) {
  std::mt19937 rng(3);
  struct Case { int I, H, P, D, peep; bool rev, bias, coupled; float clip; int T, B; bool lens; };
  const Case cases[] = {
      {3, 1, 0, 1, 0, false, true, false, 0.f, 4, 1, false},    {5, 17, 0, 2, 1, false, true, false, 0.f, 6, 3, true},
      {8, 33, 7, 1, 2, true, false, false, 0.f, 5, 7, true},    {4, 8, 0, 1, 1, false, true, true, 0.5f, 3, 2, false},
      {16, 24, 5, 2, 0, false, true, false, 1.5f, 9, 13, true}, {7, 3, 0, 1, 0, false, true, false, 0.f, 1, 1, false},
      {9, 40, 0, 2, 0, false, true, false, 0.f, 3, 1, true},       {6, 20, 0, 2, 2, false, true, false, 0.f, 7, 5, false},
      // One row, several groups of four panels, two k blocks of the input, full peepholes
      // (or a projection): the joined products of a streaming step.
      {600, 100, 0, 1, 2, false, true, false, 0.f, 5, 1, false}, {40, 64, 30, 1, 1, false, true, false, 0.5f, 6, 1, false},
      // Long enough that the input projection runs in several chunks of time steps.
      {3, 64, 0, 2, 1, false, true, false, 0.f, 300, 64, true},
      // Weights of 1 MiB and more: one thread packs blocks of A (groups of 6, 4 and 3 rows
      // at B = 13); two or more threads have slices under 1 MiB and do not.
      {256, 256, 0, 1, 2, false, true, false, 0.f, 3, 13, false},
      {300, 256, 40, 2, 0, true, true, false, 0.f, 2, 8, true},
  };
  for (Case cs : cases) {  // a copy: one check below runs it with T = 1
    if (quick && cs.T * cs.B > 64) continue;
    LayerDesc desc;
    desc.input_size = cs.I;
    desc.hidden_size = cs.H;
    desc.proj_size = cs.P;
    desc.num_directions = cs.D;
    desc.reverse = cs.rev;
    desc.bias = cs.bias;
    desc.peephole = cs.peep;
    desc.coupled = cs.coupled;
    desc.clip = cs.clip;
    const int H = cs.H, Ho = desc.out_size();
    std::vector<std::vector<float>> store;
    // A long sequence gets weights under which the recurrence contracts: with larger ones
    // it can be chaotic, and the rounding differences between two correct paths (a
    // vectorised activation against std::exp) then grow step by step, so the comparison
    // would measure the dynamics rather than the kernels. (Same draws, scaled.)
    const float range = cs.T > 100 ? 0.2f : 0.5f;
    DirectionWeightsView v[2];
    for (int d = 0; d < cs.D; ++d) v[d] = random_direction(rng, store, desc, range);
    Layer layer(desc, v, packed_group(isa));
    std::vector<float> x = random_vec(rng, static_cast<std::size_t>(cs.T) * cs.B * cs.I);
    std::vector<float> h0 = random_vec(rng, cs.D * cs.B * Ho), c0 = random_vec(rng, cs.D * cs.B * H);
    std::vector<int32_t> lens(cs.B);
    for (int b = 0; b < cs.B; ++b) lens[b] = 1 + static_cast<int>(rng() % cs.T);
    const int32_t* run_lengths = cs.lens ? lens.data() : nullptr;
    auto run_on = [&](Isa which, std::vector<float>& y, std::vector<float>& hn, std::vector<float>& cn, int threads = 1,
                      unsigned split_seed = 0) {
      y.assign(static_cast<std::size_t>(cs.T) * cs.B * cs.D * Ho, -7.f);
      hn.assign(cs.D * cs.B * Ho, -7.f);
      cn.assign(cs.D * cs.B * H, -7.f);
      LayerRun run;
      run.x = x.data();
      run.T = cs.T;
      run.B = cs.B;
      run.h0 = h0.data();
      run.c0 = c0.data();
      run.lengths = run_lengths;
      run.y = y.data();
      run.hn = hn.data();
      run.cn = cn.data();
      Threading threading;
      threading.threads = threads;
      threading.min_flops_per_thread = 0;  // use every thread, however small the layer
      threading.split_seed = split_seed;
      Workspace ws;
      layer.forward(which, threading, run, &ws);
    };
    std::vector<float> y0, hn0, cn0, y1, hn1, cn1;
    run_on(Isa::kScalar, y0, hn0, cn0);
    run_on(isa, y1, hn1, cn1);
    {
      // The layer's products alternate their panel order, and each run continues from the
      // parity the last one left (one step per run of one step, T per run of T). Two more
      // runs of T, the second starting in the other parity from the first (one or two
      // single steps before each): one of them takes every panel in the other order from
      // the run above. Both give its bits.
      const int T = cs.T;
      for (int i = 0; i < 2; ++i) {
        std::vector<float> yo, hno, cno, y2, hn2, cn2;
        cs.T = 1;
        for (int singles = i == 0 || T % 2 == 0 ? 1 : 2; singles > 0; --singles) run_on(isa, yo, hno, cno);
        cs.T = T;
        run_on(isa, y2, hn2, cn2);
        char buf[120];
        std::snprintf(buf, sizeof buf, "layer %s H=%d: a run in %s parity differs", isa_name(isa), H, i ? "the other" : "one");
        expect(y2 == y1 && hn2 == hn1 && cn2 == cn1, buf);
      }
    }
    // Any thread count gives the same bits, and so does any split of the hidden units
    // among the threads that changes from step to step (as the load balance changes it).
    for (int threads : {2, 3, 5}) {
      for (unsigned seed : {0u, 7u}) {
        std::vector<float> y2, hn2, cn2;
        run_on(isa, y2, hn2, cn2, threads, seed);
        char buf[120];
        std::snprintf(buf, sizeof buf, "layer %s H=%d: %d threads (split seed %u) differ from 1 thread", isa_name(isa), H,
                      threads, seed);
        expect(y2 == y1 && hn2 == hn1 && cn2 == cn1, buf);
      }
    }
    if (!cs.lens && cs.D == 1 && !cs.rev) {
      // Streaming: T runs of one step each, every one starting from the last one's state,
      // give the bits of the whole run (one row takes the joined one-step products).
      std::vector<float> h = h0, c = c0, y(static_cast<std::size_t>(cs.T) * cs.B * Ho);
      auto step = [&](int t, float* out, int threads, int stagger_us) {  // step t from the state in h and c
        step_layer(layer, isa, x.data() + static_cast<std::ptrdiff_t>(t) * cs.B * cs.I, cs.B, h.data(), c.data(), out,
                   threads, stagger_us);
      };
      // Odd steps on 3 threads, the others starting 200 us late: a step ends without a
      // barrier, so the first participant must wait until the others have read h0 (and c0)
      // before writing hn (cn) over it.
      for (int t = 0; t < cs.T; ++t) {
        step(t, y.data() + static_cast<std::ptrdiff_t>(t) * cs.B * Ho, t % 2 == 0 ? 1 : 3, t % 2 == 0 ? 0 : 200);
      }
      char buf[120];
      std::snprintf(buf, sizeof buf, "layer %s H=%d B=%d: %d single steps differ from one run", isa_name(isa), H, cs.B, cs.T);
      expect(y == y1 && h == hn1 && c == cn1, buf);
      // The same with each step's output written over its own input state (y = h0 = hn):
      // every participant must have read h0 before any writes its output there (the others
      // start 200 us after the first, so a participant that did not wait would be seen).
      h = h0;
      c = c0;
      bool same = true;
      for (int t = 0; t < cs.T; ++t) {
        step(t, h.data(), 3, 200);
        same = same && std::equal(h.begin(), h.end(), y.begin() + static_cast<std::ptrdiff_t>(t) * cs.B * Ho);
      }
      std::snprintf(buf, sizeof buf, "layer %s H=%d B=%d: single steps into their own state differ", isa_name(isa), H, cs.B);
      expect(same && h == hn1 && c == cn1, buf);
    }
    if (isa == Isa::kAvx512 && isa_supported(Isa::kAvx2)) {
      // AVX-512 gives AVX2's bits: the GEMMs sum every element in the same order, and the
      // cell's lanes run the same operations (a partial last block through the AVX2 cell).
      std::vector<float> y2, hn2, cn2;
      run_on(Isa::kAvx2, y2, hn2, cn2);
      char buf[120];
      std::snprintf(buf, sizeof buf, "layer avx512 H=%d P=%d peep=%d clip=%g: differs from avx2", H, cs.P, cs.peep,
                    static_cast<double>(cs.clip));
      expect(y2 == y1 && hn2 == hn1 && cn2 == cn1, buf);
    }
    if (!cs.lens) {
      // Without lengths (or a projection) the cell writes h_t straight into y; lengths of T
      // for every row take the path that copies h each step. Same bits, 1 and 3 threads.
      const std::vector<int32_t> full(cs.B, cs.T);
      for (int threads : {1, 3}) {
        std::vector<float> y2, hn2, cn2, y3, hn3, cn3;
        run_lengths = nullptr;
        run_on(isa, y2, hn2, cn2, threads);
        run_lengths = full.data();
        run_on(isa, y3, hn3, cn3, threads);
        run_lengths = nullptr;
        char buf[120];
        std::snprintf(buf, sizeof buf, "layer %s H=%d P=%d, %d threads: lengths of T differ from none", isa_name(isa), H,
                      cs.P, threads);
        expect(y2 == y3 && hn2 == hn3 && cn2 == cn3, buf);
      }
    }
    double worst = 0;
    auto cmp = [&](const std::vector<float>& a, const std::vector<float>& b) {
      for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]) / (1e-5 + 1e-4 * std::fabs(a[i])));
    };
    cmp(y0, y1);
    cmp(hn0, hn1);
    cmp(cn0, cn1);
    char buf[160];
    std::snprintf(buf, sizeof buf, "layer %s I=%d H=%d P=%d D=%d peep=%d: error ratio %.3f vs scalar", isa_name(isa), cs.I,
                  H, cs.P, cs.D, cs.peep, worst);
    expect(worst <= 1.0, buf);
  }
}

// Autoregressive feeding: a step whose input is the state's own h (x = h0 = hn, I = Hout).
// A participant must not write hn while another still reads x in its products: 3 threads,
// the others starting 200 us late, against one thread stepping from a copy of x.
void test_step_input_is_state(Isa isa) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (int B : {1, 3}) {
    const int H = 64;
    std::vector<float> w_ih(4 * H * H), w_hh(4 * H * H), b_ih(4 * H), b_hh(4 * H);
    for (std::vector<float>* v : {&w_ih, &w_hh, &b_ih, &b_hh}) {
      for (float& f : *v) f = u(rng);
    }
    LayerDesc desc;
    desc.input_size = H;
    desc.hidden_size = H;
    DirectionWeightsView view;
    view.w_ih = w_ih.data();
    view.w_hh = w_hh.data();
    view.b_ih = b_ih.data();
    view.b_hh = b_hh.data();
    const Layer layer(desc, &view, packed_group(isa));
    std::vector<float> h(static_cast<std::size_t>(B) * H), c(h.size());
    for (float& f : h) f = u(rng);
    for (float& f : c) f = u(rng);
    std::vector<float> h_ref = h, c_ref = c, x_copy(h.size()), y(h.size()), y_ref(h.size());
    bool same = true;
    for (int t = 0; t < 6; ++t) {
      x_copy = h_ref;
      step_layer(layer, isa, x_copy.data(), B, h_ref.data(), c_ref.data(), y_ref.data(), 1, 0);
      step_layer(layer, isa, h.data(), B, h.data(), c.data(), y.data(), 3, 200);
      same = same && h == h_ref && c == c_ref && y == y_ref;
    }
    char buf[120];
    std::snprintf(buf, sizeof buf, "layer %s B=%d: steps fed their own h differ from steps fed a copy", isa_name(isa), B);
    expect(same, buf);
  }
}

// Stacks shared among threads by rows of the batch (each participant runs every layer for
// its rows, in place in the batch's tensors) and by hidden units: both give the bits of
// one thread, and a layer run on rows of a larger batch those of the same rows alone.
void test_stack_split(Isa isa) {
  std::mt19937 rng(41);
  struct L { int I, H, P, D, peep; bool rev; float clip; };
  struct Case { std::vector<L> layers; int T, B; bool lens; };
  const Case cases[] = {
      {{{5, 17, 0, 2, 1, false, 0.f}, {34, 24, 0, 1, 0, true, 0.f}}, 7, 13, true},
      {{{8, 33, 7, 1, 2, false, 0.f}, {7, 24, 0, 2, 0, false, 1.5f}, {48, 40, 0, 1, 1, false, 0.f}}, 5, 9, true},
      // Several chunks of time steps per participant: each chunk's rows are gathered.
      {{{3, 64, 0, 1, 0, false, 0.f}, {64, 64, 0, 1, 0, false, 0.f}}, 150, 16, false},
      {{{6, 20, 0, 2, 2, false, 0.f}}, 6, 5, false},
      {{{4, 16, 8, 1, 0, false, 0.f}, {8, 16, 0, 1, 0, false, 0.f}}, 9, 4, true},
  };
  for (const Case& cs : cases) {
    if (quick && cs.T * cs.B > 64) continue;
    std::vector<std::vector<float>> store;
    std::vector<std::unique_ptr<Layer>> owned;
    std::size_t h_floats = 0, c_floats = 0;
    for (const L& l : cs.layers) {
      LayerDesc desc;
      desc.input_size = l.I;
      desc.hidden_size = l.H;
      desc.proj_size = l.P;
      desc.num_directions = l.D;
      desc.reverse = l.rev;
      desc.peephole = l.peep;
      desc.clip = l.clip;
      const int Ho = desc.out_size();
      DirectionWeightsView v[2];
      for (int d = 0; d < l.D; ++d) v[d] = random_direction(rng, store, desc, 0.5f);
      owned.push_back(std::make_unique<Layer>(desc, v, packed_group(isa)));
      h_floats += static_cast<std::size_t>(l.D) * cs.B * Ho;
      c_floats += static_cast<std::size_t>(l.D) * cs.B * l.H;
    }
    std::vector<const Layer*> layers;
    for (const auto& l : owned) layers.push_back(l.get());
    const LayerDesc& top = owned.back()->desc();
    const std::size_t y_floats = static_cast<std::size_t>(cs.T) * cs.B * top.num_directions * top.out_size();
    const std::vector<float> x = random_vec(rng, static_cast<std::size_t>(cs.T) * cs.B * cs.layers[0].I);
    const std::vector<float> h0 = random_vec(rng, h_floats), c0 = random_vec(rng, c_floats);
    std::vector<int32_t> lens(cs.B);
    for (int b = 0; b < cs.B; ++b) lens[b] = 1 + static_cast<int>(rng() % cs.T);
    auto run_on = [&](int threads, int split, std::vector<float>& y, std::vector<float>& hn, std::vector<float>& cn) {
      y.assign(y_floats, -7.f);
      hn.assign(h_floats, -7.f);
      cn.assign(c_floats, -7.f);
      StackRun run;
      run.x = x.data();
      run.T = cs.T;
      run.B = cs.B;
      run.h0 = h0.data();
      run.c0 = c0.data();
      run.lengths = cs.lens ? lens.data() : nullptr;
      run.y = y.data();
      run.hn = hn.data();
      run.cn = cn.data();
      Threading threading;
      threading.threads = threads;
      threading.min_flops_per_thread = 0;
      threading.split = split;
      Workspace ws;
      forward_stack(layers, isa, threading, run, &ws);
    };
    std::vector<float> y1, hn1, cn1;
    run_on(1, Threading::kSplitAuto, y1, hn1, cn1);
    char buf[160];
    for (int threads : {2, 3})
      for (int split : {Threading::kSplitRows, Threading::kSplitUnits}) {
        std::vector<float> y2, hn2, cn2;
        run_on(threads, split, y2, hn2, cn2);
        std::snprintf(buf, sizeof buf, "stack %s of %zu layers B=%d, %d threads by %s: differs from 1 thread", isa_name(isa),
                      layers.size(), cs.B, threads, split == Threading::kSplitRows ? "rows" : "units");
        expect(y2 == y1 && hn2 == hn1 && cn2 == cn1, buf);
      }
    // The first layer on rows [b0, b1) in place in the batch's tensors, against the same
    // rows copied out and run as a batch of their own (1 and 3 threads).
    const Layer& first = *owned.front();
    const LayerDesc& fd = first.desc();
    const int I = fd.input_size, Ho = fd.out_size(), H = fd.hidden_size, D = fd.num_directions, B = cs.B;
    const int b0 = B / 3, b1 = B - B / 4, nb = b1 - b0;
    for (int threads : {1, 3}) {
      std::vector<float> ys(static_cast<std::size_t>(cs.T) * B * D * Ho, -7.f), hs(D * B * Ho, -7.f), cs_(D * B * H, -7.f);
      LayerRun in_place;
      in_place.x = x.data() + b0 * I;
      in_place.T = cs.T;
      in_place.B = nb;
      in_place.batch_stride = B;
      in_place.h0 = h0.data() + b0 * Ho;
      in_place.c0 = c0.data() + b0 * H;
      in_place.lengths = cs.lens ? lens.data() + b0 : nullptr;
      in_place.y = ys.data() + b0 * D * Ho;
      in_place.hn = hs.data() + b0 * Ho;
      in_place.cn = cs_.data() + b0 * H;
      Threading threading;
      threading.threads = threads;
      threading.min_flops_per_thread = 0;
      Workspace ws;
      first.forward(isa, threading, in_place, &ws);
      std::vector<float> xa, h0a, c0a, ya(static_cast<std::size_t>(cs.T) * nb * D * Ho), hna(D * nb * Ho), cna(D * nb * H);
      for (int t = 0; t < cs.T; ++t)
        xa.insert(xa.end(), x.begin() + (static_cast<std::ptrdiff_t>(t) * B + b0) * I, x.begin() + (static_cast<std::ptrdiff_t>(t) * B + b1) * I);
      for (int d = 0; d < D; ++d) {
        h0a.insert(h0a.end(), h0.begin() + (d * B + b0) * Ho, h0.begin() + (d * B + b1) * Ho);
        c0a.insert(c0a.end(), c0.begin() + (d * B + b0) * H, c0.begin() + (d * B + b1) * H);
      }
      LayerRun alone;
      alone.x = xa.data();
      alone.T = cs.T;
      alone.B = nb;
      alone.h0 = h0a.data();
      alone.c0 = c0a.data();
      alone.lengths = in_place.lengths;
      alone.y = ya.data();
      alone.hn = hna.data();
      alone.cn = cna.data();
      Workspace ws2;
      first.forward(isa, threading, alone, &ws2);
      bool same = true, untouched = true;
      for (int t = 0; t < cs.T; ++t)
        for (int b = 0; b < B; ++b)
          for (int j = 0; j < D * Ho; ++j) {
            const float v = ys[(static_cast<std::size_t>(t) * B + b) * D * Ho + j];
            if (b < b0 || b >= b1) {
              untouched = untouched && v == -7.f;
            } else {
              same = same && v == ya[(static_cast<std::size_t>(t) * nb + b - b0) * D * Ho + j];
            }
          }
      for (int d = 0; d < D; ++d)
        for (int b = 0; b < B; ++b) {
          for (int j = 0; j < Ho; ++j) {
            const float v = hs[(static_cast<std::size_t>(d) * B + b) * Ho + j];
            if (b < b0 || b >= b1) untouched = untouched && v == -7.f;
            else same = same && v == hna[(static_cast<std::size_t>(d) * nb + b - b0) * Ho + j];
          }
          for (int j = 0; j < H; ++j) {
            const float v = cs_[(static_cast<std::size_t>(d) * B + b) * H + j];
            if (b < b0 || b >= b1) untouched = untouched && v == -7.f;
            else same = same && v == cna[(static_cast<std::size_t>(d) * nb + b - b0) * H + j];
          }
        }
      std::snprintf(buf, sizeof buf, "layer %s H=%d rows [%d, %d) of %d in place, %d threads: differ from those rows alone",
                    isa_name(isa), H, b0, b1, B, threads);
      expect(same, buf);
      std::snprintf(buf, sizeof buf, "layer %s H=%d rows [%d, %d) of %d in place: other rows written", isa_name(isa), H, b0, b1, B);
      expect(untouched, buf);
    }
  }
}

// The inference cell against the scalar oracle: H hitting every loop (four vectors in
// lock step, single vectors, the scalar remainder), ranges of unit blocks as threads get
// them, peepholes, clip and coupling. Units outside the range stay untouched, and the
// range split into single blocks gives the same bits as one call (any thread count).
void test_cell_vs_oracle(Isa isa) {
  std::mt19937 rng(29);
  for (int H : {1, 7, 8, 16, 24, 31, 32, 33, 40, 48, 63, 64, 72, 100, 200})
    for (int variant = 0; variant < 5; ++variant) {
      const bool peep = variant == 1 || variant == 4, clip = variant >= 2 && variant != 3, coupled = variant >= 3;
      const int B = 3, blocks = (H + 15) / 16;
      const std::ptrdiff_t ldg = 64 * blocks + 16, ldr = H + 5;
      const std::vector<float> wci = random_vec(rng, H), wcf = random_vec(rng, H), wco = random_vec(rng, H);
      CellSpec spec;
      spec.hidden = H;
      spec.clip = clip ? 1.25f : 0.f;
      spec.coupled = coupled;
      if (peep) {
        spec.wci = wci.data();
        spec.wcf = wcf.data();
        spec.wco = wco.data();
      }
      const std::vector<float> gates = random_vec(rng, static_cast<std::size_t>(B) * ldg, -6.f, 6.f);
      const std::vector<float> c_prev = random_vec(rng, static_cast<std::size_t>(B) * H, -2.f, 2.f);
      const int ranges[3][2] = {{0, blocks}, {blocks > 1 ? 1 : 0, blocks}, {blocks / 2, blocks / 2 + 1}};
      for (const auto& range : ranges) {
        const int b0 = range[0], b1 = range[1];
        std::vector<float> c[3], r[3];
        for (int which = 0; which < 3; ++which) {
          c[which].assign(static_cast<std::size_t>(B) * H, 9.f);
          r[which].assign(static_cast<std::size_t>(B) * ldr, 9.f);
          if (which < 2) {
            cell_forward(which == 0 ? Isa::kScalar : isa, spec, B, gates.data(), ldg, b0, b1, c_prev.data(), c[which].data(),
                         r[which].data(), ldr);
          } else {
            for (int blk = b0; blk < b1; ++blk)
              cell_forward(isa, spec, B, gates.data(), ldg, blk, blk + 1, c_prev.data(), c[2].data(), r[2].data(), ldr);
          }
        }
        double worst = 0;
        bool untouched = true;
        for (int b = 0; b < B; ++b)
          for (int j = 0; j < H; ++j) {
            const std::size_t ic = static_cast<std::size_t>(b) * H + j, ir = static_cast<std::size_t>(b) * ldr + j;
            if (j < b0 * 16 || j >= b1 * 16) {
              untouched = untouched && c[1][ic] == 9.f && r[1][ir] == 9.f;
              continue;
            }
            worst = std::max({worst, std::fabs(c[0][ic] - c[1][ic]) / (1e-6 + 1e-6 * std::fabs(c[0][ic])),
                              std::fabs(r[0][ir] - r[1][ir]) / 1e-6});
          }
        for (int b = 0; b < B; ++b)
          for (std::ptrdiff_t j = H; j < ldr; ++j) untouched = untouched && r[1][b * ldr + j] == 9.f;
        char buf[160];
        std::snprintf(buf, sizeof buf, "cell %s H=%d blocks [%d, %d) peep=%d clip=%d coupled=%d: error ratio %.3f vs the oracle",
                      isa_name(isa), H, b0, b1, peep, clip, coupled, worst);
        expect(worst <= 1.0, buf);
        expect(untouched, std::string("cell ") + isa_name(isa) + " H=" + std::to_string(H) + ": units outside the range untouched");
        expect(c[1] == c[2] && r[1] == r[2],
               std::string("cell ") + isa_name(isa) + " H=" + std::to_string(H) + ": block by block equals one call, bit for bit");
      }
    }
}

// The training cell: its forward must equal the inference cell's (same c and r), and its
// backward must match central differences of L = sum(dr * r) + sum(dc_in * c) in double.
void test_train_cell(Isa isa) {
  std::mt19937 rng(11);
  struct Case { int H, B; Activation gate, cell, out; float clip; bool coupled, peep; };
  const Case cases[] = {
      {5, 3, {kSigmoid, 0, 0}, {kTanh, 0, 0}, {kTanh, 0, 0}, 0.f, false, false},
      {7, 2, {kSigmoid, 0, 0}, {kTanh, 0, 0}, {kTanh, 0, 0}, 0.f, false, true},
      {4, 2, {kHardSigmoid, 0.2f, 0.5f}, {kElu, 1.f, 0.f}, {kSoftsign, 0, 0}, 0.f, true, false},
      {6, 1, {kSigmoid, 0, 0}, {kScaledTanh, 1.3f, 0.7f}, {kTanh, 0, 0}, 0.9f, false, true},
  };
  for (const Case& cs : cases) {
    const int H = cs.H, B = cs.B;
    std::vector<float> wci = random_vec(rng, H), wcf = random_vec(rng, H), wco = random_vec(rng, H);
    TrainCellSpec spec;
    spec.hidden = H;
    spec.gate = cs.gate;
    spec.cell = cs.cell;
    spec.out = cs.out;
    spec.clip = cs.clip;
    spec.coupled = cs.coupled;
    if (cs.peep) {
      spec.wci = wci.data();
      spec.wcf = wcf.data();
      spec.wco = wco.data();
    }
    const std::vector<float> gates = random_vec(rng, static_cast<std::size_t>(B) * 4 * H, -1.5f, 1.5f);
    const std::vector<float> c_prev = random_vec(rng, static_cast<std::size_t>(B) * H);
    std::vector<float> buf[11];
    for (auto& v : buf) v.assign(static_cast<std::size_t>(B) * H, 0.f);
    std::vector<uint8_t> pass[4];
    TrainStepTape tape{};
    for (int g = 0; g < 4; ++g) {
      tape.z[g] = buf[g].data();
      tape.act[g] = buf[4 + g].data();
      pass[g].assign(static_cast<std::size_t>(B) * H, 0);
      tape.pass[g] = cs.clip > 0.f ? pass[g].data() : nullptr;
    }
    tape.c_prev = buf[8].data();
    tape.c = buf[9].data();
    tape.hc = buf[10].data();
    auto forward = [&](const std::vector<float>& gin, const std::vector<float>& cin, std::vector<float>& c, std::vector<float>& r) {
      c.assign(static_cast<std::size_t>(B) * H, 0.f);
      r.assign(static_cast<std::size_t>(B) * H, 0.f);
      train_cell_forward(isa, spec, B, gin.data(), cin.data(), tape, c.data(), r.data());
    };
    std::vector<float> c, r;
    forward(gates, c_prev, c, r);
    // against the inference kernel (standard gate layout -> interleaved layout)
    CellSpec inf;
    inf.hidden = H;
    inf.gate = cs.gate;
    inf.cell = cs.cell;
    inf.out = cs.out;
    inf.clip = cs.clip;
    inf.coupled = cs.coupled;
    inf.wci = spec.wci;
    inf.wcf = spec.wcf;
    inf.wco = spec.wco;
    const int G = 64 * ((H + 15) / 16);
    std::vector<float> interleaved(static_cast<std::size_t>(B) * G, 0.f), c2(B * H), r2(B * H);
    for (int b = 0; b < B; ++b)
      for (int g = 0; g < 4; ++g)
        for (int j = 0; j < H; ++j) interleaved[b * G + gate_column(g, j)] = gates[(b * 4 + g) * H + j];
    cell_forward(isa, inf, B, interleaved.data(), G, 0, (H + 15) / 16, c_prev.data(), c2.data(), r2.data(), H);
    double worst = 0;
    for (int i = 0; i < B * H; ++i) worst = std::max({worst, static_cast<double>(std::fabs(c[i] - c2[i])), static_cast<double>(std::fabs(r[i] - r2[i]))});
    expect(worst <= 1e-6, std::string("train_cell_forward equals the inference cell on ") + isa_name(isa));
    // backward against central differences
    const std::vector<float> dr = random_vec(rng, static_cast<std::size_t>(B) * H);
    const std::vector<float> dc_in = random_vec(rng, static_cast<std::size_t>(B) * H);
    std::vector<float> dc = dc_in, dgates(static_cast<std::size_t>(B) * 4 * H), dwci(H), dwcf(H), dwco(H);
    forward(gates, c_prev, c, r);
    train_cell_backward(isa, spec, B, nullptr, 0, tape, dr.data(), dc.data(), dgates.data(), dwci.data(), dwcf.data(), dwco.data());
    auto loss = [&](const std::vector<float>& gin, const std::vector<float>& cin) {
      std::vector<float> cc, rr;
      forward(gin, cin, cc, rr);
      double l = 0;
      for (int i = 0; i < B * H; ++i) l += static_cast<double>(dr[i]) * rr[i] + static_cast<double>(dc_in[i]) * cc[i];
      return l;
    };
    const float eps = 1e-2f;
    double worst_g = 0;
    for (int i = 0; i < B * 4 * H; i += 3) {
      std::vector<float> gp = gates, gm = gates;
      gp[i] += eps;
      gm[i] -= eps;
      // skip points where a kink (clip edge, relu-like) lies inside the difference interval
      const double fd = (loss(gp, c_prev) - loss(gm, c_prev)) / (2 * eps);
      const double tol = 2e-3 + 2e-2 * std::fabs(fd);
      if (cs.clip > 0.f && std::fabs(std::fabs(gates[i]) - cs.clip) < 2 * eps) continue;
      worst_g = std::max(worst_g, std::fabs(fd - dgates[i]) / tol);
    }
    for (int i = 0; i < B * H; ++i) {
      std::vector<float> cp = c_prev, cm = c_prev;
      cp[i] += eps;
      cm[i] -= eps;
      const double fd = (loss(gates, cp) - loss(gates, cm)) / (2 * eps);
      worst_g = std::max(worst_g, std::fabs(fd - dc[i]) / (2e-3 + 2e-2 * std::fabs(fd)));
    }
    char buf2[120];
    std::snprintf(buf2, sizeof buf2, "train_cell_backward %s H=%d: error ratio %.3f vs finite differences", isa_name(isa), H, worst_g);
    expect(worst_g <= 1.0, buf2);
  }
}

// The vectorised gate backward (standard cell, no clip) against the scalar loop, its
// oracle: every output, peepholes and coupling, padded rows, H hitting vector remainders.
void test_train_backward_vs_oracle(Isa isa) {
  std::mt19937 rng(23);
  for (int H : {1, 7, 16, 19, 40})
    for (int variant = 0; variant < 4; ++variant) {
      const bool peep = variant & 1, coupled = variant & 2;
      const int B = 3;
      const std::size_t n = static_cast<std::size_t>(B) * H;
      std::vector<float> wci = random_vec(rng, H), wcf = random_vec(rng, H), wco = random_vec(rng, H);
      TrainCellSpec spec;
      spec.hidden = H;
      spec.coupled = coupled;
      if (peep) {
        spec.wci = wci.data();
        spec.wcf = wcf.data();
        spec.wco = wco.data();
      }
      std::vector<float> t[11];
      for (int g = 0; g < 11; ++g) t[g] = random_vec(rng, n, g >= 4 && g < 8 ? 0.f : -1.f, 1.f);
      TrainStepTape tape{};
      for (int g = 0; g < 4; ++g) {
        tape.z[g] = t[g].data();
        tape.act[g] = t[4 + g].data();
      }
      tape.c_prev = t[8].data();
      tape.c = t[9].data();
      tape.hc = t[10].data();
      const std::vector<float> dr = random_vec(rng, n), dc0 = random_vec(rng, n);
      const int32_t lengths[3] = {2, 1, 2};  // row 1 is padded at t = 1
      std::vector<float> out[2][5];
      for (int which = 0; which < 2; ++which) {
        std::vector<float>* o = out[which];
        o[0] = dc0;
        o[1].assign(n * 4, 7.f);
        o[2].assign(H, 0.5f);
        o[3].assign(H, 0.5f);
        o[4].assign(H, 0.5f);
        train_cell_backward(which == 0 ? Isa::kScalar : isa, spec, B, lengths, 1, tape, dr.data(), o[0].data(), o[1].data(),
                            o[2].data(), o[3].data(), o[4].data());
      }
      double worst = 0;
      for (int k = 0; k < 5; ++k)
        for (std::size_t i = 0; i < out[0][k].size(); ++i)
          worst = std::max(worst, std::fabs(out[0][k][i] - out[1][k][i]) / (1e-6 + 1e-5 * std::fabs(out[0][k][i])));
      char buf[140];
      std::snprintf(buf, sizeof buf, "train_cell_backward %s H=%d peep=%d coupled=%d: error ratio %.3f vs the scalar loop",
                    isa_name(isa), H, peep, coupled, worst);
      expect(worst <= 1.0, buf);
    }
}

// The load balance's split: proportional to speed, at least one block each, in order,
// and a bound moves only when it is more than 3/4 of a block off.
void test_rebalance() {
  int b[3] = {0, 8, 16};
  const double even[2] = {1.0, 1.0};
  rebalance(even, 2, 16, b);
  expect(b[1] == 8, "rebalance: equal paces keep an even split");
  const double slow1[2] = {1.0, 1.25};  // participant 1 takes 25% longer per block
  rebalance(slow1, 2, 16, b);
  expect(b[1] == 9, "rebalance: the faster participant takes a block (ideal 8.89)");
  const double near[2] = {1.0, 1.1};  // ideal 8.38: within 3/4 of a block of 9
  rebalance(near, 2, 16, b);
  expect(b[1] == 9, "rebalance: a bound within 3/4 of a block of its ideal stays");
  const double none[2] = {1.0, 0.0};
  rebalance(none, 2, 16, b);
  expect(b[1] == 9, "rebalance: no pace yet leaves the split");
  int c[4] = {0, 1, 2, 3};
  const double skew[3] = {100.0, 1.0, 1.0};
  rebalance(skew, 3, 3, c);
  expect(c[1] == 1 && c[2] == 2, "rebalance: every participant keeps at least one block");
  int d[4] = {0, 4, 8, 12};
  const double fast0[3] = {0.5, 1.0, 1.0};
  rebalance(fast0, 3, 12, d);
  expect(d[1] == 6 && d[2] == 9, "rebalance: three participants in proportion to speed (6, 3, 3)");
}

void test_column_sums() {
  std::mt19937 rng(5);
  // Column sums (bias gradients): each column in row order in double, rounded once.
  for (int rows : {1, 3, 100, 1000})
    for (int cols : {1, 7, 1024, 1500}) {
      std::vector<float> a = random_vec(rng, static_cast<std::size_t>(rows) * cols, -3.f, 3.f), sums(cols);
      column_sums(a.data(), rows, cols, sums.data());
      bool ok = true;
      for (int c = 0; c < cols; ++c) {
        double s = 0;
        for (int r = 0; r < rows; ++r) s += a[static_cast<std::size_t>(r) * cols + c];
        ok = ok && sums[c] == static_cast<float>(s);
      }
      expect(ok, "column_sums " + std::to_string(rows) + "x" + std::to_string(cols));
    }
}

// populate_pages never changes memory (aligned or not, small or large), and on Linux it
// maps fresh pages so that writing them faults no more.
void test_populate_pages() {
  std::mt19937 rng(47);
  for (std::size_t bytes : {std::size_t{100}, std::size_t{65536}, std::size_t{65537}, std::size_t{1} << 20}) {
    std::vector<unsigned char> buf(bytes + 64);
    for (unsigned char& b : buf) b = static_cast<unsigned char>(rng());
    const std::vector<unsigned char> before = buf;
    populate_pages(buf.data() + 3, bytes);
    expect(buf == before, "populate_pages leaves " + std::to_string(bytes) + " bytes (unaligned) unchanged");
  }
#if defined(__linux__) && defined(__x86_64__)
  // Faults while writing 16 MiB of fresh pages, after populate_pages or not. Compared with
  // each other, since AddressSanitizer's and valgrind's shadow memory fault on their own.
  // (x86-64 only: the arm64 build runs under qemu-user, which accepts madvise hints and
  // ignores them.)
  auto faults = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
  };
  auto write_fresh = [&](bool populate) {
    const std::size_t bytes = std::size_t{16} << 20;
    void* raw = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return -1L;
    madvise(raw, bytes, MADV_NOHUGEPAGE);  // 4 KiB pages, so that faults are countable
    if (populate) populate_pages(raw, bytes);
    const long f0 = faults();
    for (std::size_t i = 0; i < bytes; i += 4096) static_cast<volatile char*>(raw)[i] = 1;
    const long n = faults() - f0;
    munmap(raw, bytes);
    return n;
  };
  const long plain = write_fresh(false), populated = write_fresh(true);
  utsname u{};
  uname(&u);
  int major = 0, minor = 0;
  std::sscanf(u.release, "%d.%d", &major, &minor);
  if (major > 5 || (major == 5 && minor >= 14)) {
    char buf[120];
    std::snprintf(buf, sizeof buf, "populate_pages: writing 16 MiB faulted %ld times after it, %ld without", populated, plain);
    expect(plain > 0 && populated >= 0 && populated < plain / 2, buf);
  } else {
    std::printf("populate_pages: kernel %s predates MADV_POPULATE_WRITE (%ld / %ld faults)\n", u.release, populated, plain);
  }
#endif
}

// PageBlock: zeroed, writable, cache-line aligned at every size; on Linux from 1 MiB up
// 2 MiB-aligned, rounded as pages.h says, and (x86-64) flagged for huge pages.
void test_page_block() {
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  struct Case { std::size_t floats; std::size_t linux_bytes; };  // 0: not mapped by the block
  const Case cases[] = {
      {0, 0}, {1000, 0}, {(kMiB - 4) / 4, 0}, {kMiB / 4, 2 * kMiB}, {kMiB / 4 + 1, 2 * kMiB},
      {9 * kMiB / 16, 2 * kMiB + kMiB / 4},  // 2.25 MiB: a short tail stays in 4 KiB pages
      {7 * kMiB / 8, 4 * kMiB},             // 3.5 MiB: a long one is rounded up
  };
  for (const Case& cs : cases) {
    const std::string name = "PageBlock(" + std::to_string(cs.floats) + ")";
    PageBlock b(cs.floats);
    expect(b.floats() == cs.floats, name + " floats");
    if (cs.floats == 0) continue;
    bool zero = true;
    for (std::size_t i = 0; i < cs.floats; ++i) zero = zero && b.data()[i] == 0.f;
    expect(zero, name + " is zeroed");
    for (std::size_t i = 0; i < cs.floats; ++i) b.data()[i] = static_cast<float>(i % 977);
    bool kept = true;
    for (std::size_t i = 0; i < cs.floats; ++i) kept = kept && b.data()[i] == static_cast<float>(i % 977);
    expect(kept, name + " keeps what is written");
    expect(reinterpret_cast<std::uintptr_t>(b.data()) % 64 == 0, name + " is cache-line aligned");
#if defined(__linux__)
    expect(b.huge() == (cs.linux_bytes > 0), name + " mapped for huge pages from 1 MiB up");
    if (cs.linux_bytes > 0) {
      expect(reinterpret_cast<std::uintptr_t>(b.data()) % (2 * kMiB) == 0, name + " is 2 MiB-aligned");
      expect(b.bytes() == cs.linux_bytes, name + " holds " + std::to_string(cs.linux_bytes) + " bytes, got " +
                                              std::to_string(b.bytes()));
    }
#if defined(__x86_64__)
    // The mapping carries the huge-page advice ("hg" in smaps' VmFlags). Whether the kernel
    // then backs it with 2 MiB pages depends on its settings and free memory; printed.
    // (x86-64 only: the arm64 build runs under qemu-user, which ignores madvise hints.)
    if (b.huge()) {
      FILE* f = std::fopen("/proc/self/smaps", "r");
      bool in = false, advised = false;
      long huge_kb = -1;
      char line[512];
      const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(b.data());
      while (f != nullptr && std::fgets(line, sizeof line, f) != nullptr) {
        unsigned long lo = 0, hi = 0;
        if (std::sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && std::strchr(line, ':') != nullptr) {
          in = at >= lo && at < hi;
        } else if (in && std::strncmp(line, "AnonHugePages:", 14) == 0) {
          huge_kb = std::strtol(line + 14, nullptr, 10);
        } else if (in && std::strncmp(line, "VmFlags:", 8) == 0) {
          advised = std::strstr(line, " hg") != nullptr;
        }
      }
      if (f != nullptr) std::fclose(f);
      expect(advised, name + " is advised for huge pages");
      if (cs.floats == kMiB / 4) std::printf("PageBlock: 1 MiB of weights in %ld KiB of huge pages\n", huge_kb);
    }
#endif
#endif
    const float* const p = b.data();
    PageBlock moved(std::move(b));
    expect(moved.data() == p && b.data() == nullptr && b.floats() == 0, name + " moves");
    PageBlock assigned(16);
    assigned = std::move(moved);
    expect(assigned.data() == p && moved.data() == nullptr && assigned.floats() == cs.floats, name + " move-assigns");
  }
}

// parallel_run_if_idle runs a job on every participant while the pool is free, refuses at
// once (running nothing) while another thread's job holds it, and runs again afterwards.
void test_parallel_run_if_idle() {
  const int want = std::min(hardware_threads(), 2);
  auto run_if_idle = [&](int* mask) {
    std::atomic<int> ran{0};
    const bool accepted = parallel_run_if_idle(2, [&](const ParallelContext& ctx) { ran.fetch_or(1 << ctx.tid); });
    *mask = ran.load();
    return accepted;
  };
  int mask = 0;
  expect(run_if_idle(&mask) && mask == (1 << want) - 1, "parallel_run_if_idle: runs every participant when idle");
#if defined(LSTM_TEST_THREADS)
  if (hardware_threads() < 2) return;
  std::atomic<bool> started{false}, release{false};
  std::thread holder([&] {
    parallel_run(2, [&](const ParallelContext& ctx) {
      if (ctx.tid != 0) return;
      started.store(true);
      while (!release.load()) std::this_thread::yield();
    });
  });
  while (!started.load()) std::this_thread::yield();
  const bool accepted = run_if_idle(&mask);
  release.store(true);
  holder.join();
  expect(!accepted && mask == 0, "parallel_run_if_idle: refuses while another job holds the pool");
  expect(run_if_idle(&mask) && mask == 3, "parallel_run_if_idle: runs again once the pool is free");
#endif
}

int bench(Isa isa, int M, int N, int K) {
  std::mt19937 rng(1);
  std::vector<float> A = random_vec(rng, static_cast<std::size_t>(M) * K), W = random_vec(rng, static_cast<std::size_t>(N) * K);
  std::vector<float> C(static_cast<std::size_t>(M) * N);
  PackedMatrix P;
  pack_matrix(W.data(), N, K, &P);
  std::vector<double> times;
  for (int r = 0; r < 15; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    gemm_nt(isa, M, A.data(), K, P, C.data(), N);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  std::printf("%s M=%d N=%d K=%d: %.3f ms, %.1f GFLOP/s\n", isa_name(isa), M, N, K, times[7] * 1e3,
              2.0 * M * N * K / times[7] / 1e9);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) {
    for (Isa isa : isas_to_test()) {
      bench(isa, 4096, 1024, 256);
      bench(isa, 32, 1024, 256);
      bench(isa, 1, 1024, 256);
      bench(isa, 4096, 2048, 512);
      bench(isa, 64, 2048, 512);
    }
    return 0;
  }
  quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  for (Isa isa : isas_to_test()) {
    test_gemm(isa);
    // The next-panel prefetch runs only on some CPUs: the packed products and the layers
    // with it forced on and forced off, whatever this CPU would choose.
    for (int prefetch : {1, 0}) {
      set_panel_prefetch(prefetch);
      test_gemm_packed(isa);
      if (!quick || prefetch == 1) test_layer(isa);
      if (!quick || prefetch == 1) test_stack_split(isa);
    }
    test_step_input_is_state(isa);
    set_panel_prefetch(-1);
    test_activations(isa);
    test_cell_vs_oracle(isa);
    test_train_cell(isa);
    test_train_backward_vs_oracle(isa);
  }
  test_column_sums();
  test_rebalance();
  test_populate_pages();
  test_page_block();
  test_parallel_run_if_idle();
  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}

#include "train_cell.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cell.h"

namespace lstm {

float activation_grad(const Activation& a, float z, float y) {
  switch (a.kind) {
    case kSigmoid: return y * (1.f - y);
    case kTanh: return 1.f - y * y;
    case kRelu: return z > 0.f ? 1.f : 0.f;
    case kHardSigmoid: {
      const float v = a.alpha * z + a.beta;
      return v > 0.f && v < 1.f ? a.alpha : 0.f;
    }
    case kLeakyRelu: return z >= 0.f ? 1.f : a.alpha;
    case kThresholdedRelu: return z > a.alpha ? 1.f : 0.f;
    case kScaledTanh: {
      const float t = std::tanh(a.beta * z);
      return a.alpha * a.beta * (1.f - t * t);
    }
    case kAffine: return a.alpha;
    case kElu: return z >= 0.f ? 1.f : y + a.alpha;
    case kSoftsign: {
      const float d = 1.f + std::fabs(z);
      return 1.f / (d * d);
    }
    case kSoftplus: return 1.f / (1.f + std::exp(-z));
    default: return 1.f;
  }
}

void train_cell_forward(Isa isa, const TrainCellSpec& s, int B, const float* gates, const float* c_prev,
                        const TrainStepTape& tape, float* c_new, float* r_new) {
  const int H = s.hidden;
  const float clip = s.clip;
  const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(B) * H;
  // Clip a row of pre-activations in place, recording where the gradient flows.
  const auto clip_row = [clip](float* __restrict z, uint8_t* __restrict pass, int len) {
    for (int j = 0; j < len; ++j) {
      const float v = z[j];
      pass[j] = v >= -clip && v <= clip;
      z[j] = std::min(std::max(v, -clip), clip);  // NaN stays NaN
    }
  };
  // The loops below run over rows through restrict pointers, so they vectorise.
  // 1. Pre-activations of i, f, g (peepholes see c_{t-1}), clipped.
  for (int b = 0; b < B; ++b) {
    const float* __restrict g = gates + static_cast<std::ptrdiff_t>(b) * 4 * H;
    const std::ptrdiff_t k0 = static_cast<std::ptrdiff_t>(b) * H;
    const float* __restrict cp = c_prev + k0;
    float* __restrict zi = tape.z[0] + k0;
    float* __restrict zf = tape.z[1] + k0;
    if (s.wci) {
      const float* __restrict wci = s.wci;
      const float* __restrict wcf = s.wcf;
      for (int j = 0; j < H; ++j) {
        zi[j] = g[j] + wci[j] * cp[j];
        zf[j] = g[H + j] + wcf[j] * cp[j];
      }
    } else {
      std::memcpy(zi, g, sizeof(float) * H);
      std::memcpy(zf, g + H, sizeof(float) * H);
    }
    std::memcpy(tape.z[2] + k0, g + 2 * H, sizeof(float) * H);
    std::memcpy(tape.c_prev + k0, cp, sizeof(float) * H);
    if (clip > 0.f) {
      for (int q = 0; q < 3; ++q) clip_row(tape.z[q] + k0, tape.pass[q] + k0, H);
    }
  }
  // 2. Activations over whole rows: vectorised for sigmoid and tanh (as in inference).
  const auto apply = [&](const Activation& a, const float* z, float* y) {
    if (a.kind == kSigmoid) return sigmoid_vec(isa, z, y, static_cast<int>(n));
    if (a.kind == kTanh) return tanh_vec(isa, z, y, static_cast<int>(n));
    for (std::ptrdiff_t k = 0; k < n; ++k) y[k] = activate(a, z[k]);
  };
  apply(s.gate, tape.z[0], tape.act[0]);
  if (s.coupled) {
    for (std::ptrdiff_t k = 0; k < n; ++k) tape.act[1][k] = 1.f - tape.act[0][k];
  } else {
    apply(s.gate, tape.z[1], tape.act[1]);
  }
  apply(s.cell, tape.z[2], tape.act[2]);
  // 3. The new cell, then the output gate (its peephole sees c_t).
  for (int b = 0; b < B; ++b) {
    const float* __restrict go = gates + static_cast<std::ptrdiff_t>(b) * 4 * H + 3 * H;
    const std::ptrdiff_t k0 = static_cast<std::ptrdiff_t>(b) * H;
    const float* __restrict ai = tape.act[0] + k0;
    const float* __restrict af = tape.act[1] + k0;
    const float* __restrict ag = tape.act[2] + k0;
    const float* __restrict cp = tape.c_prev + k0;
    float* __restrict cc = tape.c + k0;
    float* __restrict cn = c_new + k0;
    float* __restrict zo = tape.z[3] + k0;
    for (int j = 0; j < H; ++j) {
      const float c = af[j] * cp[j] + ai[j] * ag[j];
      cc[j] = c;
      cn[j] = c;
    }
    if (s.wco) {
      const float* __restrict wco = s.wco;
      for (int j = 0; j < H; ++j) zo[j] = go[j] + wco[j] * cc[j];
    } else {
      std::memcpy(zo, go, sizeof(float) * H);
    }
    if (clip > 0.f) clip_row(zo, tape.pass[3] + k0, H);
  }
  apply(s.gate, tape.z[3], tape.act[3]);
  apply(s.out, tape.c, tape.hc);
  const float* __restrict ao = tape.act[3];
  const float* __restrict hc = tape.hc;
  float* __restrict r = r_new;
  for (std::ptrdiff_t k = 0; k < n; ++k) r[k] = ao[k] * hc[k];
}

void column_sums(const float* src, int rows, int cols, float* dst) {
  // Blocks of columns whose double sums stay in L1 while every row streams past; the
  // inner loop vectorises across columns (each column's sum stays in row order).
  constexpr int kBlock = 1024;
  std::vector<double> sum(static_cast<std::size_t>(std::min(cols, kBlock)));
  for (int c0 = 0; c0 < cols; c0 += kBlock) {
    const int n = std::min(kBlock, cols - c0);
    double* __restrict s = sum.data();
    std::fill(s, s + n, 0.0);
    for (int r = 0; r < rows; ++r) {
      const float* __restrict row = src + static_cast<std::ptrdiff_t>(r) * cols + c0;
      for (int c = 0; c < n; ++c) s[c] += row[c];
    }
    for (int c = 0; c < n; ++c) dst[c0 + c] = static_cast<float>(s[c]);
  }
}

namespace {

// One row of the gate backward for the standard cell (sigmoid gates, tanh cell and output,
// no clip), branch-free so the compiler vectorises it: the derivatives are y(1 - y) and
// 1 - y^2 of the recorded activations. The general loop below is its oracle.
template <bool kPeep, bool kCoupled>
__attribute__((always_inline)) inline void backward_row_std(int H, const float* __restrict ai, const float* __restrict af,
                                                            const float* __restrict ag, const float* __restrict ao,
                                                            const float* __restrict cprev, const float* __restrict cc,
                                                            const float* __restrict hc, const float* __restrict dr,
                                                            float* __restrict dc, float* __restrict dg, const TrainCellSpec& s,
                                                            float* __restrict dwci, float* __restrict dwcf,
                                                            float* __restrict dwco) {
  float* __restrict dgi = dg;
  float* __restrict dgf = dg + H;
  float* __restrict dgg = dg + 2 * H;
  float* __restrict dgo = dg + 3 * H;
  for (int j = 0; j < H; ++j) {
    const float i = ai[j], f = af[j], g = ag[j], o = ao[j], h = hc[j], drv = dr[j];
    const float dzo = drv * h * (o * (1.f - o));
    float dcv = dc[j] + drv * o * (1.f - h * h);
    if (kPeep) dcv += dzo * s.wco[j];
    const float df = dcv * cprev[j];
    const float di = kCoupled ? dcv * g - df : dcv * g;
    const float dzf = kCoupled ? 0.f : df * (f * (1.f - f));
    const float dzi = di * (i * (1.f - i));
    const float dzg = dcv * i * (1.f - g * g);
    float dcp = dcv * f;
    if (kPeep) {
      dcp += dzi * s.wci[j] + dzf * s.wcf[j];
      dwci[j] += dzi * cprev[j];
      dwcf[j] += dzf * cprev[j];
      dwco[j] += dzo * cc[j];
    }
    dc[j] = dcp;
    dgi[j] = dzi;
    dgf[j] = dzf;
    dgg[j] = dzg;
    dgo[j] = dzo;
  }
}

// Every row still inside its sequence; inlined into each ISA's entry point below.
template <bool kPeep, bool kCoupled>
__attribute__((always_inline)) inline void backward_rows(const TrainCellSpec& s, int B, const int32_t* lengths, int t,
                                                         const TrainStepTape& tape, const float* dr, float* dc,
                                                         float* dgates, float* dwci, float* dwcf, float* dwco) {
  const int H = s.hidden;
  for (int b = 0; b < B; ++b) {
    if (lengths != nullptr && t >= lengths[b]) continue;
    const std::ptrdiff_t k = static_cast<std::ptrdiff_t>(b) * H;
    backward_row_std<kPeep, kCoupled>(H, tape.act[0] + k, tape.act[1] + k, tape.act[2] + k, tape.act[3] + k,
                                      tape.c_prev + k, tape.c + k, tape.hc + k, dr + k, dc + k,
                                      dgates + static_cast<std::ptrdiff_t>(b) * 4 * H, s, dwci, dwcf, dwco);
  }
}

template <bool kPeep, bool kCoupled>
void backward_rows_std(const TrainCellSpec& s, int B, const int32_t* lengths, int t, const TrainStepTape& tape,
                       const float* dr, float* dc, float* dgates, float* dwci, float* dwcf, float* dwco) {
  backward_rows<kPeep, kCoupled>(s, B, lengths, t, tape, dr, dc, dgates, dwci, dwcf, dwco);
}

#if defined(__x86_64__)
// The same loop compiled for AVX2 + FMA.
template <bool kPeep, bool kCoupled>
__attribute__((target("avx2,fma"))) void backward_rows_std_avx2(const TrainCellSpec& s, int B, const int32_t* lengths,
                                                                int t, const TrainStepTape& tape, const float* dr,
                                                                float* dc, float* dgates, float* dwci, float* dwcf,
                                                                float* dwco) {
  backward_rows<kPeep, kCoupled>(s, B, lengths, t, tape, dr, dc, dgates, dwci, dwcf, dwco);
}
#endif

using BackwardFn = void (*)(const TrainCellSpec&, int, const int32_t*, int, const TrainStepTape&, const float*, float*,
                            float*, float*, float*, float*);

template <bool kPeep, bool kCoupled>
BackwardFn backward_std_for(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::kAvx2 || isa == Isa::kAvx512) return backward_rows_std_avx2<kPeep, kCoupled>;
#endif
  (void)isa;
  return backward_rows_std<kPeep, kCoupled>;
}

}  // namespace

void train_cell_backward(Isa isa, const TrainCellSpec& s, int B, const int32_t* lengths, int t, const TrainStepTape& tape,
                         const float* dr, float* dc, float* dgates, float* dwci, float* dwcf, float* dwco) {
  const int H = s.hidden;
  std::memset(dgates, 0, sizeof(float) * static_cast<std::size_t>(B) * 4 * H);
  const bool standard = s.gate.kind == kSigmoid && s.cell.kind == kTanh && s.out.kind == kTanh && tape.pass[0] == nullptr;
  const bool diagonal = s.wci != nullptr;
  if (isa != Isa::kScalar && standard && (!diagonal || (s.wcf != nullptr && s.wco != nullptr))) {
    const BackwardFn fn = diagonal ? (s.coupled ? backward_std_for<true, true>(isa) : backward_std_for<true, false>(isa))
                                   : (s.coupled ? backward_std_for<false, true>(isa) : backward_std_for<false, false>(isa));
    fn(s, B, lengths, t, tape, dr, dc, dgates, dwci, dwcf, dwco);
    return;
  }
  for (int b = 0; b < B; ++b) {
    if (lengths != nullptr && t >= lengths[b]) continue;  // a padded step left the state untouched
    float* dg = dgates + static_cast<std::ptrdiff_t>(b) * 4 * H;
    for (int j = 0; j < H; ++j) {
      const std::ptrdiff_t k = static_cast<std::ptrdiff_t>(b) * H + j;
      const float i = tape.act[0][k], f = tape.act[1][k], g = tape.act[2][k], o = tape.act[3][k];
      const float drv = dr[k];
      float dzo = drv * tape.hc[k] * activation_grad(s.gate, tape.z[3][k], o);
      if (tape.pass[3]) dzo *= tape.pass[3][k];
      float dcv = dc[k] + drv * o * activation_grad(s.out, tape.c[k], tape.hc[k]);
      if (s.wco) {
        dcv += dzo * s.wco[j];
        dwco[j] += dzo * tape.c[k];
      }
      float di = dcv * g;
      const float dgg = dcv * i;
      const float df = dcv * tape.c_prev[k];
      float dzf = 0.f;
      if (s.coupled) {
        di -= df;
      } else {
        dzf = df * activation_grad(s.gate, tape.z[1][k], f) * (tape.pass[1] ? tape.pass[1][k] : 1);
      }
      const float dzi = di * activation_grad(s.gate, tape.z[0][k], i) * (tape.pass[0] ? tape.pass[0][k] : 1);
      const float dzg = dgg * activation_grad(s.cell, tape.z[2][k], g) * (tape.pass[2] ? tape.pass[2][k] : 1);
      float dcp = dcv * f;
      if (s.wci) {
        dcp += dzi * s.wci[j] + dzf * s.wcf[j];
        dwci[j] += dzi * tape.c_prev[k];
        dwcf[j] += dzf * tape.c_prev[k];
      }
      dc[k] = dcp;
      dg[j] = dzi;
      dg[H + j] = dzf;
      dg[2 * H + j] = dzg;
      dg[3 * H + j] = dzo;
    }
  }
}

}  // namespace lstm

#include "layer.h"

#include <algorithm>
#include <cstring>

#include "cell.h"

namespace lstm {

Layer::Layer(const LayerDesc& desc, const DirectionWeightsView* dirs) : desc_(desc) {
  const int H = desc.hidden_size;
  const int Hout = desc.out_size();
  dirs_.resize(desc.num_directions);
  for (int d = 0; d < desc.num_directions; ++d) {
    const DirectionWeightsView& v = dirs[d];
    Direction& w = dirs_[d];
    pack_matrix(v.w_ih, 4 * H, desc.input_size, &w.w_ih);
    pack_matrix(v.w_hh, 4 * H, Hout, &w.w_hh);
    if (desc.proj_size > 0) pack_matrix(v.w_hr, desc.proj_size, H, &w.w_hr);
    if (desc.peephole == kPeepholeFull) pack_matrix(v.w_ch, 4 * H, H, &w.w_ch);
    if (desc.peephole == kPeepholeDiagonal) {
      w.w_ci.assign(v.w_ci, v.w_ci + H);
      w.w_cf.assign(v.w_cf, v.w_cf + H);
      w.w_co.assign(v.w_co, v.w_co + H);
    }
    if (desc.bias) {
      w.bias.resize(4 * static_cast<std::size_t>(H));
      for (int i = 0; i < 4 * H; ++i) w.bias[i] = v.b_ih[i] + v.b_hh[i];
    }
  }
}

void Layer::forward(Isa isa, const LayerRun& run) const {
  const std::size_t H = desc_.hidden_size;
  const std::size_t Hout = desc_.out_size();
  const std::size_t B = run.B;
  // Per call, not per step: the gate pre-activations of the whole sequence and the states.
  std::vector<float> gates(static_cast<std::size_t>(run.T) * B * 4 * H);
  std::vector<float> state(B * Hout + 3 * B * H + (desc_.proj_size > 0 ? B * Hout : 0));
  float* h = state.data();
  float* c = h + B * Hout;
  float* c_new = c + B * H;
  float* r = c_new + B * H;
  float* h_new = desc_.proj_size > 0 ? r + B * H : r;
  for (int d = 0; d < desc_.num_directions; ++d) forward_direction(isa, d, run, gates.data(), h, c, c_new, r, h_new);
}

void Layer::forward_direction(Isa isa, int d, const LayerRun& run, float* gates, float* h, float* c, float* c_new,
                              float* r, float* h_new) const {
  const Direction& w = dirs_[d];
  const int T = run.T;
  const int B = run.B;
  const int H = desc_.hidden_size;
  const int Hout = desc_.out_size();
  const int D = desc_.num_directions;
  const std::ptrdiff_t G = 4 * static_cast<std::ptrdiff_t>(H);
  const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(T) * B;
  const bool reverse = D == 2 ? d == 1 : desc_.reverse;

  // Input projection of the whole sequence in one GEMM, on top of the summed biases.
  for (std::ptrdiff_t row = 0; row < rows; ++row) {
    float* g = gates + row * G;
    if (desc_.bias) {
      std::memcpy(g, w.bias.data(), sizeof(float) * G);
    } else {
      std::memset(g, 0, sizeof(float) * G);
    }
  }
  gemm_nt(isa, static_cast<int>(rows), run.x, desc_.input_size, w.w_ih, gates, G);

  std::memcpy(h, run.h0 + static_cast<std::ptrdiff_t>(d) * B * Hout, sizeof(float) * B * Hout);
  std::memcpy(c, run.c0 + static_cast<std::ptrdiff_t>(d) * B * H, sizeof(float) * B * H);

  CellSpec cell;
  cell.hidden = H;
  cell.gate = desc_.gate;
  cell.cell = desc_.cell;
  cell.out = desc_.hidden;
  cell.clip = desc_.clip;
  cell.coupled = desc_.coupled;
  if (desc_.peephole == kPeepholeDiagonal) {
    cell.wci = w.w_ci.data();
    cell.wcf = w.w_cf.data();
    cell.wco = w.w_co.data();
  }

  const std::ptrdiff_t y_stride = static_cast<std::ptrdiff_t>(D) * Hout;
  for (int s = 0; s < T; ++s) {
    const int t = reverse ? T - 1 - s : s;
    float* g = gates + static_cast<std::ptrdiff_t>(t) * B * G;
    gemm_nt(isa, B, h, Hout, w.w_hh, g, G);
    if (desc_.peephole == kPeepholeFull) gemm_nt(isa, B, c, H, w.w_ch, g, G);
    cell_forward(isa, cell, B, g, G, c, c_new, r);
    if (desc_.proj_size > 0) {
      std::memset(h_new, 0, sizeof(float) * B * Hout);
      gemm_nt(isa, B, r, H, w.w_hr, h_new, Hout);
    }
    for (int b = 0; b < B; ++b) {
      float* y = run.y + (static_cast<std::ptrdiff_t>(t) * B + b) * y_stride + static_cast<std::ptrdiff_t>(d) * Hout;
      if (run.lengths == nullptr || t < run.lengths[b]) {
        std::memcpy(c + static_cast<std::ptrdiff_t>(b) * H, c_new + static_cast<std::ptrdiff_t>(b) * H,
                    sizeof(float) * H);
        std::memcpy(h + static_cast<std::ptrdiff_t>(b) * Hout, h_new + static_cast<std::ptrdiff_t>(b) * Hout,
                    sizeof(float) * Hout);
        std::memcpy(y, h_new + static_cast<std::ptrdiff_t>(b) * Hout, sizeof(float) * Hout);
      } else {
        std::memset(y, 0, sizeof(float) * Hout);
      }
    }
  }
  std::memcpy(run.hn + static_cast<std::ptrdiff_t>(d) * B * Hout, h, sizeof(float) * B * Hout);
  std::memcpy(run.cn + static_cast<std::ptrdiff_t>(d) * B * H, c, sizeof(float) * B * H);
}

}  // namespace lstm

// The fused LSTM cell update of one time step, after the gate GEMMs:
//   i = f(z_i + w_ci*c_prev), f = f(z_f + w_cf*c_prev) (or 1 - i when coupled),
//   c = f*c_prev + i*g(z_g), o = f(z_o + w_co*c), r = o*h(c),
// with every pre-activation clamped to [-clip, clip] when clip > 0 (ONNX order).
#pragma once

#include <cstddef>

#include "activations.h"
#include "isa.h"

namespace lstm {

struct CellSpec {
  int hidden = 0;
  Activation gate{kSigmoid, 0.f, 0.f};
  Activation cell{kTanh, 0.f, 0.f};
  Activation out{kTanh, 0.f, 0.f};
  float clip = 0.f;  // 0: no clipping
  bool coupled = false;
  // Diagonal peepholes, or null.
  const float* wci = nullptr;
  const float* wcf = nullptr;
  const float* wco = nullptr;
};

// gates: B rows (stride ldg) in the gate-interleaved layout of pack_gate_matrix;
// updates units [16*block0, min(16*block1, H)) of c_out ([B, H], stride H) and r_out
// (B rows, stride ldr).
void cell_forward(Isa isa, const CellSpec& spec, int B, const float* gates, std::ptrdiff_t ldg, int block0, int block1,
                  const float* c_prev, float* c_out, float* r_out, std::ptrdiff_t ldr);

// Vectorised activations, exposed for the accuracy tests (n any length).
void sigmoid_vec(Isa isa, const float* x, float* y, int n);
void tanh_vec(Isa isa, const float* x, float* y, int n);

}  // namespace lstm

// The element-wise part of backpropagation through time, one time step at a time: the
// cell forward that records what backward needs, and the fused gate backward.
// Gate order i, f, g, o; all arrays row-major with rows of H (gates: rows of 4H).
#pragma once

#include <cstdint>

#include "activations.h"
#include "cell.h"
#include "isa.h"

namespace lstm {

// A training cell has exactly the inference cell's parameters.
using TrainCellSpec = CellSpec;

// What one step records for B rows: post-clip pre-activations z[4], activations act[4],
// pass[4] (1 where the pre-activation was inside [-clip, clip]; null without clip),
// c_{t-1}, c_t and h(c_t).
struct TrainStepTape {
  float* z[4];
  float* act[4];
  uint8_t* pass[4];
  float* c_prev;
  float* c;
  float* hc;
};

// gates: [B, 4H] pre-activations (input and recurrent products plus biases);
// c_prev: [B, H]. Writes the tape, c_new [B, H] and r_new = o * h(c) [B, H].
void train_cell_forward(Isa isa, const TrainCellSpec& s, int B, const float* gates, const float* c_prev,
                        const TrainStepTape& tape, float* c_new, float* r_new);

// dst[c] = sum over r of src[r * cols + c], each column summed in row order in double
// precision and rounded once (a bias gradient: the sum of dG over every step and row).
void column_sums(const float* src, int rows, int cols, float* dst);

// dr: dL/dr [B, H]; dc: dL/dc_t on entry, dL/dc_{t-1} on exit (for rows that were
// valid at this step; padded rows are left as they are). dgates: [B, 4H] out (zero for
// padded rows). Diagonal peephole gradients are accumulated into dwci/dwcf/dwco.
// isa: a vectorised path for the standard cell (sigmoid/tanh/tanh, no clip); the scalar
// loop (isa == kScalar, and every other configuration) is its oracle.
void train_cell_backward(Isa isa, const TrainCellSpec& s, int B, const int32_t* lengths, int t, const TrainStepTape& tape,
                         const float* dr, float* dc, float* dgates, float* dwci, float* dwcf, float* dwco);

// dy/dz of an activation given its input z and output y.
float activation_grad(const Activation& a, float z, float y);

}  // namespace lstm

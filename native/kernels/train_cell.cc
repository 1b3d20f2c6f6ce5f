#include "train_cell.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

void train_cell_forward(const TrainCellSpec& s, int B, const float* gates, const float* c_prev, const TrainStepTape& tape,
                        float* c_new, float* r_new) {
  const int H = s.hidden;
  const float clip = s.clip;
  const auto clamp = [clip](float v, uint8_t* pass) {
    if (clip <= 0.f) return v;
    *pass = v >= -clip && v <= clip;
    return std::min(clip, std::max(-clip, v));
  };
  uint8_t scratch = 0;
  for (int b = 0; b < B; ++b) {
    const float* g = gates + static_cast<std::ptrdiff_t>(b) * 4 * H;
    for (int j = 0; j < H; ++j) {
      const std::ptrdiff_t k = static_cast<std::ptrdiff_t>(b) * H + j;
      const float cp = c_prev[k];
      float zi = g[j], zf = g[H + j], zg = g[2 * H + j], zo = g[3 * H + j];
      if (s.wci) {
        zi += s.wci[j] * cp;
        zf += s.wcf[j] * cp;
      }
      zi = clamp(zi, tape.pass[0] ? tape.pass[0] + k : &scratch);
      zf = clamp(zf, tape.pass[1] ? tape.pass[1] + k : &scratch);
      zg = clamp(zg, tape.pass[2] ? tape.pass[2] + k : &scratch);
      const float i = activate(s.gate, zi);
      const float f = s.coupled ? 1.f - i : activate(s.gate, zf);
      const float gg = activate(s.cell, zg);
      const float c = f * cp + i * gg;
      if (s.wco) zo += s.wco[j] * c;
      zo = clamp(zo, tape.pass[3] ? tape.pass[3] + k : &scratch);
      const float o = activate(s.gate, zo);
      const float hc = activate(s.out, c);
      tape.z[0][k] = zi;
      tape.z[1][k] = zf;
      tape.z[2][k] = zg;
      tape.z[3][k] = zo;
      tape.act[0][k] = i;
      tape.act[1][k] = f;
      tape.act[2][k] = gg;
      tape.act[3][k] = o;
      tape.c_prev[k] = cp;
      tape.c[k] = c;
      tape.hc[k] = hc;
      c_new[k] = c;
      r_new[k] = o * hc;
    }
  }
}

void train_cell_backward(const TrainCellSpec& s, int B, const int32_t* lengths, int t, const TrainStepTape& tape,
                         const float* dr, float* dc, float* dgates, float* dwci, float* dwcf, float* dwco) {
  const int H = s.hidden;
  std::memset(dgates, 0, sizeof(float) * static_cast<std::size_t>(B) * 4 * H);
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

// Vectorisable fp32 log / sin+cos for the CPU Box-Muller (zo_cpu.cpp). libm calls keep GCC from vectorising the
// tile loops; these are branch-free polynomial versions (Cephes-style range reduction and minimax coefficients,
// written here from the published formulas) accurate to about 1 ulp on the arguments the generator produces:
// log on u in (0, 1], sin/cos on t in [0, 2 pi). The CUDA kernels use logf/sincosf, the reference torch.log/cos/sin:
// Gaussian values agree within the documented few ulps (docs/zo_ops.md), never bit for bit.
#pragma once
#include <cstdint>
#include <cstring>

// Forced: these must inline into the tile loops for GCC to vectorise them; left to the heuristics, adding code
// elsewhere in zo_cpu.cpp once tipped GCC's unit-growth limit and made the Gaussian path 4.5x slower.
#if defined(__GNUC__)
#define PU_ZO_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PU_ZO_ALWAYS_INLINE inline
#endif

namespace pyunlearn::zo::cpu_math {

PU_ZO_ALWAYS_INLINE float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

PU_ZO_ALWAYS_INLINE uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// Natural log of a positive normal x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log x = e ln2 + log1p(m - 1).
PU_ZO_ALWAYS_INLINE float log_pos(float x) {
  const uint32_t b = float_to_bits(x);
  int32_t e = static_cast<int32_t>(b >> 23) - 126;                 // x = f 2^e, f in [0.5, 1)
  float f = bits_to_float((b & 0x007FFFFFu) | 0x3F000000u);
  const bool small = f < 0.707106781186547524f;
  e -= small ? 1 : 0;
  f = small ? f + f - 1.0f : f - 1.0f;                             // m - 1 in [-0.293, 0.414), exact
  const float z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  const float fe = static_cast<float>(e);
  y = y + fe * -2.12194440e-4f;                                    // ln2 = 0.693359375 - 2.12194440e-4
  y = y - 0.5f * z;
  return (f + y) + fe * 0.693359375f;
}

// sin t and cos t for t in [0, 2 pi): reduction by pi/4 in four parts (Cody-Waite), then the octant's polynomials.
PU_ZO_ALWAYS_INLINE void sincos_2pi(float t, float& s, float& c) {
  int32_t j = static_cast<int32_t>(t * 1.27323954473516f);         // octant, 0 .. 8
  j = (j + 1) & ~1;                                                // to the nearest even: |x| <= pi/4
  const float y = static_cast<float>(j);
  // pi/4 in four parts of 12, 12, 12 and 24 bits: y * part is exact for the first three (y <= 8, even).
  const float x = (((t - y * 0.78515625f) - y * 2.4187564849853515625e-4f) - y * 3.7747668102383613586e-8f) -
                  y * 1.2816720341285448015e-12f;
  const float z = x * x;
  float ps = -1.9515295891e-4f;
  ps = ps * z + 8.3321608736e-3f;
  ps = ps * z - 1.6666654611e-1f;
  ps = ps * z * x + x;                                             // sin x
  float pc = 2.443315711809948e-5f;
  pc = pc * z - 1.388731625493765e-3f;
  pc = pc * z + 4.166664568298827e-2f;
  pc = pc * z * z - 0.5f * z + 1.0f;                               // cos x
  // t = x + (j/2) pi/2: quadrant q = (j/2) & 3 rotates (sin, cos).
  const int32_t q = (j >> 1) & 3;
  const float sq = (q & 1) ? pc : ps, cq = (q & 1) ? ps : pc;
  s = (q & 2) ? -sq : sq;
  c = ((q + 1) & 2) ? -cq : cq;
}

}  // namespace pyunlearn::zo::cpu_math

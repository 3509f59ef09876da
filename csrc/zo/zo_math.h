// The seeded direction generator of the ZO ops, torch-free so that CPU, CUDA and the CI's nvcc check share it
// (twin: pyunlearn/reference/zo.py; Triton: kernels/zo.py; contract: docs/zo_ops.md).
//   words(seed, k, g) = Philox4x32-10(counter = (g lo, g hi, k lo, k hi), key = (seed lo, seed hi))
//   element j of direction k owns word x[j & 3] of group g = j >> 2
//   rademacher: z = bit 31 of the word ? -1 : +1
//   gaussian:   Box-Muller in fp32 on (x0, x1) -> elements 4g, 4g+1 and (x2, x3) -> 4g+2, 4g+3:
//               u = ((a >> 8) + 1) 2^-24, v = (b >> 8) 2^-24, r = sqrt(-2 log u), t = fp32(2 pi) v,
//               z = r cos t (even element), r sin t (odd element)
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define PU_ZO_HD __host__ __device__ __forceinline__
#else
#define PU_ZO_HD inline
#endif

namespace pyunlearn::zo {

enum class Dist : int { Gaussian = 0, Rademacher = 1 };

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr float kTwoPi = 6.2831854820251465f;  // fp32(2 pi)
constexpr float kInv24 = 5.9604644775390625e-08f;  // 2^-24

struct Words {
  uint32_t x[4];
};

PU_ZO_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// Philox4x32-10 of group g of direction k (Salmon et al., SC'11; the key is bumped after each round).
PU_ZO_HD Words philox_words(uint64_t seed, uint64_t k, uint64_t g) {
  uint32_t c0 = static_cast<uint32_t>(g), c1 = static_cast<uint32_t>(g >> 32);
  uint32_t c2 = static_cast<uint32_t>(k), c3 = static_cast<uint32_t>(k >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    const uint32_t hi0 = mulhi32(kPhiloxM0, c0), lo0 = kPhiloxM0 * c0;
    const uint32_t hi1 = mulhi32(kPhiloxM1, c2), lo1 = kPhiloxM1 * c2;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return Words{{c0, c1, c2, c3}};
}

PU_ZO_HD float rademacher(uint32_t x) { return (x >> 31) ? -1.0f : 1.0f; }

// (r cos t, r sin t) from a radius word a and an angle word b.
PU_ZO_HD void box_muller(uint32_t a, uint32_t b, float& z0, float& z1) {
  const float u = static_cast<float>((a >> 8) + 1u) * kInv24;  // (0, 1], exact
  const float v = static_cast<float>(b >> 8) * kInv24;         // [0, 1), exact
#if defined(__CUDA_ARCH__)
  const float r = sqrtf(logf(u) * -2.0f);
  float s, c;
  sincosf(v * kTwoPi, &s, &c);
  z0 = r * c;
  z1 = r * s;
#else
  const float r = std::sqrt(std::log(u) * -2.0f);
  const float t = v * kTwoPi;
  z0 = r * std::cos(t);
  z1 = r * std::sin(t);
#endif
}

// The 4 direction values of group g (elements 4g .. 4g+3).
PU_ZO_HD void group_values(uint64_t seed, uint64_t k, uint64_t g, Dist dist, float z[4]) {
  const Words w = philox_words(seed, k, g);
  if (dist == Dist::Rademacher) {
    for (int q = 0; q < 4; ++q) z[q] = rademacher(w.x[q]);
  } else {
    box_muller(w.x[0], w.x[1], z[0], z[1]);
    box_muller(w.x[2], w.x[3], z[2], z[3]);
  }
}

}  // namespace pyunlearn::zo

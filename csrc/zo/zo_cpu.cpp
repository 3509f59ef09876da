// CPU kernels of the seeded ZO direction ops. The tensors of one call are consecutive segments of the flat space;
// each is walked by at::parallel_for over element ranges, in tiles: for every direction k the tile's Philox groups
// are generated (one Philox call per 4 elements, all 4 words used; vectorised loops, polynomial log/sin/cos of
// zo_cpu_math.h), turned into fp32 values and accumulated into
// an fp32 (fp64 for fp64 tensors) tile as acc = 0; acc += c_k z_k; then t = t + scale * acc is written once.
// A non-contiguous tensor is stepped in a contiguous copy that is written back.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "zo/zo.h"
#include "zo/zo_cpu_math.h"

namespace pyunlearn::zo {
namespace {

// x86-64 with GCC: group_tile is also compiled for AVX2 and picked at load time (no FMA either way: the
// rounding is the same in both clones).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PU_ZO_TARGET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PU_ZO_TARGET_CLONES
#endif

constexpr int64_t kTile = 1024;                // elements per tile
constexpr int64_t kTileGroups = kTile / 4 + 1;  // Philox groups a tile can touch (unaligned start)
constexpr int64_t kGrain = 1 << 14;             // elements per parallel task at least

// Values of the G groups g_lo .. g_lo+G-1 of direction k, interleaved in element order into z[0 .. 4G).
// Plain loops over structure-of-arrays words so that the compiler vectorises Philox (32x32->64-bit multiplies)
// and the Box-Muller transform (cpu_math: polynomial log and sin/cos, sqrt without errno).
PU_ZO_TARGET_CLONES void group_tile(uint64_t seed, uint64_t k, int64_t g_lo, int64_t G, Dist dist, float* __restrict z) {
  alignas(64) uint32_t w0[kTileGroups], w1[kTileGroups], w2[kTileGroups], w3[kTileGroups];
  const uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t d0 = static_cast<uint32_t>(k), d1 = static_cast<uint32_t>(k >> 32);
  for (int64_t i = 0; i < G; ++i) {
    const uint64_t g = static_cast<uint64_t>(g_lo + i);
    uint32_t c0 = static_cast<uint32_t>(g), c1 = static_cast<uint32_t>(g >> 32), c2 = d0, c3 = d1;
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < 10; ++r) {
      const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0, p1 = static_cast<uint64_t>(kPhiloxM1) * c2;
      c0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      c1 = static_cast<uint32_t>(p1);
      c2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c3 = static_cast<uint32_t>(p0);
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    w0[i] = c0;
    w1[i] = c1;
    w2[i] = c2;
    w3[i] = c3;
  }
  if (dist == Dist::Rademacher) {
    // +-1 from bit 31: 1.0f's bits with the word's top bit as the sign (exact, branch-free)
    for (int64_t i = 0; i < G; ++i) {
      z[4 * i + 0] = cpu_math::bits_to_float(0x3F800000u | (w0[i] & 0x80000000u));
      z[4 * i + 1] = cpu_math::bits_to_float(0x3F800000u | (w1[i] & 0x80000000u));
      z[4 * i + 2] = cpu_math::bits_to_float(0x3F800000u | (w2[i] & 0x80000000u));
      z[4 * i + 3] = cpu_math::bits_to_float(0x3F800000u | (w3[i] & 0x80000000u));
    }
    return;
  }
  for (int64_t i = 0; i < G; ++i) {
    const float u0 = static_cast<float>(static_cast<int32_t>(w0[i] >> 8) + 1) * kInv24;
    const float u1 = static_cast<float>(static_cast<int32_t>(w2[i] >> 8) + 1) * kInv24;
    const float v0 = static_cast<float>(static_cast<int32_t>(w1[i] >> 8)) * kInv24;
    const float v1 = static_cast<float>(static_cast<int32_t>(w3[i] >> 8)) * kInv24;
    const float r0 = std::sqrt(cpu_math::log_pos(u0) * -2.0f), r1 = std::sqrt(cpu_math::log_pos(u1) * -2.0f);
    float s0, c0, s1, c1;
    cpu_math::sincos_2pi(v0 * kTwoPi, s0, c0);
    cpu_math::sincos_2pi(v1 * kTwoPi, s1, c1);
    z[4 * i + 0] = r0 * c0;
    z[4 * i + 1] = r0 * s0;
    z[4 * i + 2] = r1 * c1;
    z[4 * i + 3] = r1 * s1;
  }
}

// z(seed, k, j0 + i) for i < m (m <= kTile) into z[0 .. m); buf holds 4 kTileGroups floats.
void fill_values(uint64_t seed, uint64_t k, int64_t j0, int64_t m, Dist dist, float* z, float* buf) {
  const int64_t g_lo = j0 >> 2, G = ((j0 + m - 1) >> 2) - g_lo + 1;
  const int64_t skip = j0 - 4 * g_lo;
  if (skip == 0) {
    if (4 * G == m) return group_tile(seed, k, g_lo, G, dist, z);
  }
  group_tile(seed, k, g_lo, G, dist, buf);
  std::copy(buf + skip, buf + skip + m, z);
}

template <typename T, typename A>
void accumulate_one(T* data, int64_t n, int64_t base, const A* c, int64_t K, uint64_t seed, uint64_t d0, A scale,
                    Dist dist) {
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    alignas(64) float z[kTile];
    alignas(64) float buf[4 * kTileGroups];
    alignas(64) A acc[kTile];
    for (int64_t s = lo; s < hi; s += kTile) {
      const int64_t m = std::min(kTile, hi - s);
      std::fill(acc, acc + m, A(0));
      for (int64_t k = 0; k < K; ++k) {
        fill_values(seed, d0 + static_cast<uint64_t>(k), base + s, m, dist, z, buf);
        const A ck = c[k];
        for (int64_t i = 0; i < m; ++i) acc[i] = acc[i] + ck * static_cast<A>(z[i]);
      }
      T* t = data + s;
      for (int64_t i = 0; i < m; ++i) t[i] = static_cast<T>(static_cast<A>(t[i]) + scale * acc[i]);
    }
  });
}

void zo_accumulate_cpu(at::TensorList tensors, const at::Tensor& coeffs, int64_t seed, int64_t direction0,
                       double scale, c10::string_view dist, int64_t offset) {
  const Dist d = check_accumulate_args(tensors, coeffs, direction0, dist, offset);
  if (tensors.empty() || coeffs.size(0) == 0) return;
  const at::Tensor c = coeffs.to(acc_dtype(tensors[0].scalar_type())).contiguous();  // [K]
  const int64_t K = c.size(0);
  int64_t base = offset;
  for (const at::Tensor& t : tensors) {
    const int64_t n = t.numel();
    if (n == 0) continue;
    at::Tensor work = t.is_contiguous() ? t : t.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "zo_accumulate_cpu", [&] {
      using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      accumulate_one<scalar_t, A>(work.data_ptr<scalar_t>(), n, base, c.data_ptr<A>(), K, static_cast<uint64_t>(seed),
                                  static_cast<uint64_t>(direction0), static_cast<A>(scale), d);
    });
    if (!work.is_same(t)) t.copy_(work);
    base += n;
  }
}

// One row piece of zo_accumulate_rows: a tensor's rows, its row stride and where its row starts in the flat space.
template <typename T>
struct RowSeg {
  T* data;
  int64_t stride;  // elements between rows
  int64_t n;       // row length
  int64_t col0;    // first column of this tensor in the concatenated row [0, N)
  int64_t base;    // flat index of the row's first element (offset + col0)
};

// Row k of every tensor += alpha z(seed, d0 + k, .): ONE parallel loop over the K x N (row, column) pairs of the
// concatenated rows, in tiles that stay inside one row of one tensor. Value per element as accumulate_one with
// K = 1 and scale = 1 computes it: acc = 0 + alpha z; t = t + acc (1 * acc == acc exactly).
template <typename T, typename A>
void accumulate_rows(const std::vector<RowSeg<T>>& segs, int64_t K, int64_t N, A alpha, uint64_t seed, uint64_t d0,
                     Dist dist) {
  at::parallel_for(0, K * N, kGrain, [&](int64_t lo, int64_t hi) {
    alignas(64) float z[kTile];
    alignas(64) float buf[4 * kTileGroups];
    int64_t u = lo;
    while (u < hi) {
      const int64_t k = u / N, c = u - k * N;
      // the tensor holding column c: last segment with col0 <= c
      const auto it = std::upper_bound(segs.begin(), segs.end(), c,
                                       [](int64_t v, const RowSeg<T>& sg) { return v < sg.col0; }) - 1;
      const int64_t i0 = c - it->col0;
      const int64_t m = std::min({kTile, hi - u, it->n - i0});
      fill_values(seed, d0 + static_cast<uint64_t>(k), it->base + i0, m, dist, z, buf);
      T* t = it->data + k * it->stride + i0;
      for (int64_t i = 0; i < m; ++i) {
        const A acc = A(0) + alpha * static_cast<A>(z[i]);
        t[i] = static_cast<T>(static_cast<A>(t[i]) + acc);
      }
      u += m;
    }
  });
}

void zo_accumulate_rows_cpu(at::TensorList tensors, const at::Tensor& alpha, int64_t seed, int64_t direction0,
                            c10::string_view dist, int64_t offset) {
  const Dist d = check_rows_args(tensors, alpha, direction0, dist, offset);
  if (tensors.empty()) return;
  const int64_t K = tensors[0].size(0);
  std::vector<at::Tensor> work;
  work.reserve(tensors.size());
  for (const at::Tensor& t : tensors) work.push_back(rows_direct(t) ? t : t.contiguous());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(), "zo_accumulate_rows_cpu", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const A a = alpha.to(at::kCPU).to(acc_dtype(tensors[0].scalar_type())).item<A>();
    std::vector<RowSeg<scalar_t>> segs;
    int64_t N = 0;
    for (const at::Tensor& t : work) {
      const int64_t n = t.size(1);
      if (n > 0) segs.push_back({t.data_ptr<scalar_t>(), t.stride(0), n, N, offset + N});
      N += n;
    }
    if (K == 0 || N == 0) return;
    accumulate_rows<scalar_t, A>(segs, K, N, a, static_cast<uint64_t>(seed), static_cast<uint64_t>(direction0), d);
  });
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!work[i].is_same(tensors[i])) tensors[i].copy_(work[i]);
  }
}

void zo_philox_bits_cpu(const at::Tensor& out, int64_t seed, int64_t direction, int64_t offset) {
  check_bits_args(out, direction, offset);
  const int64_t n = out.numel();
  if (n == 0) return;
  at::Tensor work = out.is_contiguous() ? out : out.contiguous();
  int64_t* o = work.data_ptr<int64_t>();
  at::parallel_for(0, n, kGrain, [&](int64_t lo, int64_t hi) {
    const int64_t j0 = offset + lo;
    for (int64_t g = j0 >> 2; g <= (offset + hi - 1) >> 2; ++g) {
      const Words w = philox_words(static_cast<uint64_t>(seed), static_cast<uint64_t>(direction),
                                   static_cast<uint64_t>(g));
      for (int64_t q = 0; q < 4; ++q) {
        const int64_t i = 4 * g + q - offset;
        if (i >= lo && i < hi) o[i] = static_cast<int64_t>(w.x[q]);
      }
    }
  });
  if (!work.is_same(out)) out.copy_(work);
}

}  // namespace

TORCH_LIBRARY_IMPL(pyunlearn, CPU, m) {
  m.impl("zo_accumulate", &zo_accumulate_cpu);
  m.impl("zo_accumulate_rows", &zo_accumulate_rows_cpu);
  m.impl("zo_philox_bits", &zo_philox_bits_cpu);
}

}  // namespace pyunlearn::zo

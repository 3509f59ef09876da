// Helpers shared by the CPU kernels of the graph-attention ops (gat_cpu.cpp, gatv2_cpu.cpp): content checks of
// the CSR/CSC pointer arrays, the work-balanced row split, and the small vectorisable inner loops.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#include "graph_attention/gat.h"

namespace pyunlearn::gat::cpu {

// Minimum work (edges + rows) per parallel chunk: ~64 rows of a degree-16 graph. Smaller chunks cost more in
// scheduling than they gain in balance.
constexpr int64_t kGrainWork = 64 * 17;

// Content checks of a compressed pointer array (the shared checks read sizes only): ptr[0] == 0, ptr[n] == E and
// non-decreasing. O(n), serial; it makes the chunk split below and every row's edge range safe to use.
template <typename index_t>
void check_ptr(const char* name, const index_t* ptr, int64_t n, int64_t n_edges) {
  TORCH_CHECK_VALUE(ptr[0] == 0 && static_cast<int64_t>(ptr[n]) == n_edges, name, " must start at 0 and end at E = ",
                    n_edges, ", got ", static_cast<int64_t>(ptr[0]), " and ", static_cast<int64_t>(ptr[n]));
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK_VALUE(ptr[i] <= ptr[i + 1], name, " must be non-decreasing, got ", static_cast<int64_t>(ptr[i]),
                      " > ", static_cast<int64_t>(ptr[i + 1]), " at ", i);
  }
}

// Number of chunks of about kGrainWork work each over rows [0, n) of `ptr`, at most max_chunks (and n).
template <typename index_t>
int64_t balanced_chunks(const index_t* ptr, int64_t n, int64_t max_chunks) {
  if (n <= 0) return 0;
  const int64_t total = static_cast<int64_t>(ptr[n]) + n;
  return std::clamp<int64_t>(total / kGrainWork, 1, std::min(std::max<int64_t>(1, max_chunks), n));
}

// Runs fn(chunk, row_begin, row_end) for chunk in [0, chunks), rows [0, n) split into `chunks` pieces of about
// equal work ptr[i] + i (edges + rows), in parallel. Boundaries come from a binary search on the (strictly
// increasing) cumulative work, so they depend only on (ptr, n, chunks): a caller that reduces per-chunk
// partials in chunk order gets the same bits whatever the thread count.
template <typename index_t, typename Fn>
void balanced_for_chunks(const index_t* ptr, int64_t n, int64_t chunks, const Fn& fn) {
  if (n <= 0 || chunks <= 0) return;
  const int64_t total = static_cast<int64_t>(ptr[n]) + n;
  // First row whose cumulative work reaches `target`.
  auto row_at = [&](int64_t target) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (static_cast<int64_t>(ptr[mid]) + mid < target) lo = mid + 1; else hi = mid;
    }
    return lo;
  };
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c == 0 ? 0 : row_at(total * c / chunks);
      const int64_t e = c + 1 == chunks ? n : row_at(total * (c + 1) / chunks);
      if (b < e) fn(c, b, e);
    }
  });
}

// Runs fn(row_begin, row_end) over [0, n) in chunks of about equal work (up to 8 per thread), in parallel, so
// power-law degrees do not leave one thread with the hubs.
template <typename index_t, typename Fn>
void balanced_for(const index_t* ptr, int64_t n, const Fn& fn) {
  const int64_t chunks = balanced_chunks(ptr, n, 8 * at::get_num_threads());
  balanced_for_chunks(ptr, n, chunks, [&](int64_t, int64_t b, int64_t e) { fn(b, e); });
}

// <a, b> over n elements in S (a and b may differ in type: a row pre-converted to S against a raw one). Eight
// independent partial sums let the compiler vectorise the reduction without -ffast-math (it may not reorder a
// single running sum).
template <typename S, typename TA, typename TB>
inline S dot(const TA* __restrict a, const TB* __restrict b, int64_t n) {
  S acc[8] = {S(0), S(0), S(0), S(0), S(0), S(0), S(0), S(0)};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<S>(a[c + l]) * static_cast<S>(b[c + l]);
  }
  for (; c < n; ++c) acc[c & 7] += static_cast<S>(a[c]) * static_cast<S>(b[c]);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// acc[:n] += alpha * x[:n]. __restrict: the accumulator never aliases the input, so the loop vectorises
// without a run-time overlap check.
template <typename S, typename T>
inline void axpy(S* __restrict acc, S alpha, const T* __restrict x, int64_t n) {
  for (int64_t c = 0; c < n; ++c) acc[c] += alpha * static_cast<S>(x[c]);
}

// Software prefetch of a gathered row (h[j] or grad_out[i]) a few edges ahead: the gathers are random, so the
// hardware prefetcher cannot guess them, and one row is too little work to hide a cache miss. Capped so that
// very wide rows do not flood the cache (the hardware streamer takes over within a row).
constexpr int64_t kAheadRows = 8;     // edges ahead for [H, C] rows
constexpr int64_t kAheadScores = 16;  // edges ahead for the small [H] score rows
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t x = 0; x < std::min<int64_t>(bytes, 2048); x += 64) __builtin_prefetch(c + x);
}

// Written with max/min so it compiles branch-free (maxss/minss): the sign of a score is random, and a mispredicted
// branch per edge and head costs more than the arithmetic. Same value as pre > 0 ? pre : pre * slope (up to the
// sign of a zero, which exp ignores).
template <typename S>
inline S leaky(S pre, S slope) { return std::max(pre, S(0)) + slope * std::min(pre, S(0)); }

// d leaky / d pre, branch-free for the same reason: an indexed load of {slope, 1}.
template <typename S>
inline S leaky_grad(S pre, const S (&slope_one)[2]) { return slope_one[pre > S(0)]; }

// Attention dropout of CSR edge `edge`, head k (gat.h): the scale m = keep / (1 - p), i.e. 0 or `keep_scale`.
// Only called when p > 0, so the p == 0 path makes no hash calls and stays bit-identical.
template <typename S>
inline S dropout_m(uint64_t seed, int64_t edge, int64_t heads, int64_t k, float p, S keep_scale) {
  const uint64_t counter = static_cast<uint64_t>(edge) * static_cast<uint64_t>(heads) + static_cast<uint64_t>(k);
  return dropout_u(seed, counter) >= p ? keep_scale : S(0);
}

}  // namespace pyunlearn::gat::cpu

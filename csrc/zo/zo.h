// Seeded ZO direction ops: shared declarations of the CPU and CUDA kernels (schemas: pyunlearn/_ops.py).
//   zo_accumulate(tensors[i] : Tensor [*] fp16/bf16/fp32/fp64 (one dtype, one device), in place,
//                 coeffs : Tensor [K] fp32/fp64 on the tensors' device, seed, direction0, scale, dist, offset)
//     t += scale * sum_k coeffs[k] * z(seed, direction0 + k, j), j = offset + position in the concatenated list
//   zo_accumulate_rows(tensors[i] : Tensor [K, n_i] (same K, one dtype, one device), in place,
//                      alpha : Tensor, one fp32/fp64 element on the tensors' device, seed, direction0, dist, offset)
//     row k: t += alpha * z(seed, direction0 + k, j), j = offset + position of the row in the concatenated rows
//   zo_philox_bits(out : Tensor [*] int64, in place, seed, direction, offset): out[i] = word of element offset + i
#pragma once
#include <ATen/ATen.h>

#include <c10/util/string_view.h>

#include "zo/zo_math.h"

namespace pyunlearn::zo {

// Validates one zo_accumulate call (dtypes, devices, coeffs shape, ranges) and returns its distribution.
Dist check_accumulate_args(at::TensorList tensors, const at::Tensor& coeffs, int64_t direction0,
                           c10::string_view dist, int64_t offset);

// Validates one zo_accumulate_rows call (2-D tensors with one K, dtypes, devices, alpha, ranges) and returns
// its distribution.
Dist check_rows_args(at::TensorList tensors, const at::Tensor& alpha, int64_t direction0, c10::string_view dist,
                     int64_t offset);

// True when tensor t [K, n] can be walked in place: elements of a row contiguous, rows not overlapping.
inline bool rows_direct(const at::Tensor& t) {
  return (t.size(1) <= 1 || t.stride(1) == 1) && (t.size(0) <= 1 || t.stride(0) >= t.size(1));
}

// Validates one zo_philox_bits call.
void check_bits_args(const at::Tensor& out, int64_t direction, int64_t offset);

// The accumulation dtype of a tensor dtype: fp64 for fp64, else fp32.
inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace pyunlearn::zo

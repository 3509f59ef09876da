// Device-independent argument checks of the ZO direction ops (used by the CPU and CUDA kernels alike).
#include "zo/zo.h"

#include <limits>
#include <string>

#include "common/checks.h"

namespace pyunlearn::zo {

namespace {

Dist parse_dist(c10::string_view dist) {
  if (dist == "gaussian") return Dist::Gaussian;
  if (dist == "rademacher") return Dist::Rademacher;
  TORCH_CHECK_VALUE(false, "dist must be one of ('gaussian', 'rademacher'), got '", std::string(dist), "'");
  return Dist::Gaussian;
}

// tensors[i] of a list: a supported float dtype, and tensors[0]'s dtype and device (one of each per call)
void check_like_first(const at::Tensor& t, const at::Tensor& first, const std::string& name) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kHalf || st == at::kBFloat16 || st == at::kFloat || st == at::kDouble, name,
                   " must be fp16/bf16/fp32/fp64, got ", st);
  TORCH_CHECK_TYPE(st == first.scalar_type(), name, " must have tensors[0]'s dtype ", first.scalar_type(),
                   " (one dtype per call), got ", st);
  TORCH_CHECK_VALUE(t.device() == first.device(), name, " must be on tensors[0]'s device ", first.device(),
                    ", got ", t.device());
}

}  // namespace

Dist check_rows_args(at::TensorList tensors, const at::Tensor& alpha, int64_t direction0, c10::string_view dist,
                     int64_t offset) {
  const Dist d = parse_dist(dist);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  TORCH_CHECK_VALUE(direction0 >= 0, "direction0 must be >= 0, got ", direction0);
  TORCH_CHECK_VALUE(offset >= 0, "offset must be >= 0, got ", offset);
  TORCH_CHECK_VALUE(alpha.numel() == 1, "alpha must be a one-element tensor, got shape ", alpha.sizes());
  TORCH_CHECK_TYPE(alpha.scalar_type() == at::kFloat || alpha.scalar_type() == at::kDouble,
                   "alpha must be fp32 or fp64, got ", alpha.scalar_type());
  if (tensors.empty()) return d;
  TORCH_CHECK_VALUE(tensors[0].dim() == 2, "tensors[0] must be 2-D [K, n] (one row per direction), got shape ",
                    tensors[0].sizes());
  const int64_t K = tensors[0].size(0);
  TORCH_CHECK_VALUE(K <= kMax - direction0, "direction0 + K must be < 2^63, got ", direction0, " + ", K);
  int64_t room = kMax - offset;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const std::string name = arg_name("tensors", i);
    check_like_first(t, tensors[0], name);
    TORCH_CHECK_VALUE(t.dim() == 2, name, " must be 2-D [K, n] (one row per direction), got shape ", t.sizes());
    TORCH_CHECK_VALUE(t.size(0) == K, name, " must have tensors[0]'s number of rows K = ", K, ", got ", t.size(0));
    TORCH_CHECK_VALUE(t.size(1) <= room, "offset + total row length must be < 2^63");
    room -= t.size(1);
  }
  TORCH_CHECK_VALUE(alpha.device() == tensors[0].device(), "alpha must be on the tensors' device ",
                    tensors[0].device(), ", got ", alpha.device());
  return d;
}

Dist check_accumulate_args(at::TensorList tensors, const at::Tensor& coeffs, int64_t direction0,
                           c10::string_view dist, int64_t offset) {
  const Dist d = parse_dist(dist);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  TORCH_CHECK_VALUE(direction0 >= 0, "direction0 must be >= 0, got ", direction0);
  TORCH_CHECK_VALUE(offset >= 0, "offset must be >= 0, got ", offset);
  TORCH_CHECK_VALUE(coeffs.dim() == 1, "coeffs must be 1-D (one coefficient per direction), got shape ",
                    coeffs.sizes());
  TORCH_CHECK_TYPE(coeffs.scalar_type() == at::kFloat || coeffs.scalar_type() == at::kDouble,
                   "coeffs must be fp32 or fp64, got ", coeffs.scalar_type());
  TORCH_CHECK_VALUE(coeffs.size(0) <= kMax - direction0, "direction0 + len(coeffs) must be < 2^63, got ",
                    direction0, " + ", coeffs.size(0));
  int64_t room = kMax - offset;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const std::string name = arg_name("tensors", i);
    check_like_first(t, tensors[0], name);
    TORCH_CHECK_VALUE(t.numel() <= room, "offset + total numel must be < 2^63");
    room -= t.numel();
  }
  if (!tensors.empty()) {
    TORCH_CHECK_VALUE(coeffs.device() == tensors[0].device(), "coeffs must be on the tensors' device ",
                      tensors[0].device(), ", got ", coeffs.device());
  }
  return d;
}

void check_bits_args(const at::Tensor& out, int64_t direction, int64_t offset) {
  TORCH_CHECK_TYPE(out.scalar_type() == at::kLong, "out must be int64, got ", out.scalar_type());
  TORCH_CHECK_VALUE(direction >= 0, "direction must be >= 0, got ", direction);
  TORCH_CHECK_VALUE(offset >= 0, "offset must be >= 0, got ", offset);
  TORCH_CHECK_VALUE(out.numel() <= std::numeric_limits<int64_t>::max() - offset,
                    "offset + numel must be < 2^63");
}

}  // namespace pyunlearn::zo

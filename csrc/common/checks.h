// Argument checks shared by every op family. Messages say what was expected and what came.
// TORCH_CHECK_VALUE -> ValueError, TORCH_CHECK_TYPE -> TypeError, TORCH_CHECK_INDEX -> IndexError in Python.
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace pyunlearn {

inline std::string arg_name(const char* list, size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

inline void check_same_len(const char* name, size_t got, const char* ref_name, size_t expected) {
  TORCH_CHECK_VALUE(got == expected, name, " must have one entry per tensor of ", ref_name, " (expected ", expected,
                    "), got ", got);
}

inline void check_float_param(const std::string& name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, " must be a floating-point tensor, got ",
                   t.scalar_type());
}

inline void check_like(const std::string& name, const at::Tensor& t, const std::string& ref_name, const at::Tensor& ref,
                       at::ScalarType expected_dtype) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on ", ref_name, "'s device ", ref.device(), ", got ",
                    t.device());
  TORCH_CHECK_VALUE(t.sizes() == ref.sizes(), name, " must have ", ref_name, "'s shape ", ref.sizes(), ", got ",
                    t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == expected_dtype, name, " must have dtype ", expected_dtype, ", got ",
                   t.scalar_type());
}

inline void check_nonneg(const char* name, double v) {
  TORCH_CHECK_VALUE(v >= 0.0, name, " must be >= 0, got ", v);
}

inline void check_unit_interval(const char* name, double v) {
  TORCH_CHECK_VALUE(v >= 0.0 && v < 1.0, name, " must be in [0, 1), got ", v);
}

}  // namespace pyunlearn

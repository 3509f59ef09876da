// Masked / sparse optimizer steps: shared declarations of the CPU and CUDA kernels.
// Every op takes lists (multi-tensor): one call steps a whole parameter group.
//   params[i]  : Tensor  // [*]   fp32/fp64/fp16/bf16, updated in place
//   grads[i]   : Tensor  // [*]   same dtype and shape as params[i]
//   states     : Tensor  // [*]   fp32 for fp16/bf16 params, else the param's dtype; updated in place
//   masks[i]   : None (update all) | bool/uint8 Tensor [*] (dense) | int32/int64 Tensor [K] (flat indices)
// Where the mask is off, the parameter and every state entry stay bit-identical.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

namespace pyunlearn::masked_optim {

enum class MaskKind { All, Dense, Index };

using MaskList = c10::List<std::optional<at::Tensor>>;

// Form of masks[i] (validated: dtype, device, shape / 1-D).
MaskKind mask_kind(const MaskList& masks, size_t i, const at::Tensor& param);

// dtype the optimizer state must have for a parameter of dtype `param`.
at::ScalarType state_dtype(at::ScalarType param);

// Validates lengths, dtypes, devices, shapes and masks of one call; `states` are (name, list, required) triples.
struct StateList {
  const char* name;
  at::TensorList list;
  bool required;
};
void check_step_inputs(at::TensorList params, at::TensorList grads,
                       const std::vector<StateList>& states, const MaskList& masks);

// Hyperparameter + tensor checks of each op (CPU and CUDA kernels call these first).
void check_sgd_args(at::TensorList params, at::TensorList grads, at::TensorList bufs, const MaskList& masks, double lr,
                    double momentum, double dampening, double weight_decay, bool nesterov);
void check_adamw_args(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                      at::TensorList max_exp_avg_sqs, const MaskList& masks, double lr, double beta1, double beta2,
                      double weight_decay, double eps, double step, bool amsgrad);
void check_sophia_args(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList hessians,
                       const MaskList& masks, double lr, double beta1, double beta2, double rho, double bs,
                       double weight_decay, double eps);

// The index path addresses the parameter as a flat row-major array; indices must lie in [0, numel).
void check_index_bounds(const std::string& name, const at::Tensor& idx, int64_t numel);

// Kernels run on contiguous tensors. A non-contiguous argument is stepped in a contiguous copy that is written
// back afterwards (correct; the fast path is contiguous parameters, which is what nn.Module holds).
struct Contig {
  at::Tensor orig, work;
  explicit Contig(const at::Tensor& t) : orig(t), work(t.defined() ? t.contiguous() : t) {}
  void write_back() {
    if (orig.defined() && !work.is_same(orig)) orig.copy_(work);
  }
};

}  // namespace pyunlearn::masked_optim

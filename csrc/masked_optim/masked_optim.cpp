// Device-independent argument checks of the masked optimizer ops (used by the CPU and CUDA kernels alike).
#include "masked_optim/masked_optim.h"

#include "common/checks.h"

namespace pyunlearn::masked_optim {

at::ScalarType state_dtype(at::ScalarType param) {
  return (param == at::kHalf || param == at::kBFloat16) ? at::kFloat : param;
}

MaskKind mask_kind(const MaskList& masks, size_t i, const at::Tensor& param) {
  std::optional<at::Tensor> m = masks.get(i);
  if (!m.has_value() || !m->defined()) return MaskKind::All;
  const at::Tensor& t = *m;
  std::string name = arg_name("masks", i);
  TORCH_CHECK_VALUE(t.device() == param.device(), name, " must be on params[", i, "]'s device ", param.device(),
                    ", got ", t.device());
  auto dt = t.scalar_type();
  if (dt == at::kBool || dt == at::kByte) {
    TORCH_CHECK_VALUE(t.sizes() == param.sizes(), name, " (a dense mask) must have params[", i, "]'s shape ",
                      param.sizes(), ", got ", t.sizes());
    return MaskKind::Dense;
  }
  if (dt == at::kInt || dt == at::kLong) {
    TORCH_CHECK_VALUE(t.dim() == 1, name, " (an index list) must be 1-D, got shape ", t.sizes());
    return MaskKind::Index;
  }
  TORCH_CHECK_TYPE(false, name, " must be a bool/uint8 dense mask or an int32/int64 index list, got dtype ", dt);
}

void check_index_bounds(const std::string& name, const at::Tensor& idx, int64_t numel) {
  if (idx.numel() == 0) return;
  auto [lo, hi] = at::aminmax(idx);
  int64_t l = lo.item<int64_t>(), h = hi.item<int64_t>();
  TORCH_CHECK_INDEX(l >= 0 && h < numel, name, " must hold flat indices in [0, ", numel, "), got values in [", l,
                    ", ", h, "]");
}

void check_step_inputs(at::TensorList params, at::TensorList grads,
                       const std::vector<StateList>& states, const MaskList& masks) {
  const size_t n = params.size();
  check_same_len("grads", grads.size(), "params", n);
  check_same_len("masks", masks.size(), "params", n);
  for (const auto& s : states) {
    if (s.required || !s.list.empty()) check_same_len(s.name, s.list.size(), "params", n);
  }
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    std::string pname = arg_name("params", i);
    check_float_param(pname, p);
    check_like(arg_name("grads", i), grads[i], pname, p, p.scalar_type());
    for (const auto& s : states) {
      if (!s.list.empty()) check_like(arg_name(s.name, i), s.list[i], pname, p, state_dtype(p.scalar_type()));
    }
    mask_kind(masks, i, p);
  }
}

void check_sgd_args(at::TensorList params, at::TensorList grads, at::TensorList bufs, const MaskList& masks, double lr,
                    double momentum, double dampening, double weight_decay, bool nesterov) {
  check_nonneg("lr", lr);
  check_nonneg("momentum", momentum);
  check_nonneg("weight_decay", weight_decay);
  TORCH_CHECK_VALUE(momentum == 0.0 || !bufs.empty(), "momentum_buffers must be given when momentum > 0");
  TORCH_CHECK_VALUE(!nesterov || (momentum > 0.0 && dampening == 0.0),
                    "nesterov needs momentum > 0 and dampening == 0, got momentum=", momentum,
                    ", dampening=", dampening);
  check_step_inputs(params, grads, {{"momentum_buffers", bufs, false}}, masks);
}

void check_adamw_args(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                      at::TensorList max_exp_avg_sqs, const MaskList& masks, double lr, double beta1, double beta2,
                      double weight_decay, double eps, double step, bool amsgrad) {
  check_nonneg("lr", lr);
  check_unit_interval("beta1", beta1);
  check_unit_interval("beta2", beta2);
  check_nonneg("weight_decay", weight_decay);
  check_nonneg("eps", eps);
  TORCH_CHECK_VALUE(step >= 1.0, "step must be >= 1 (the step count after this update), got ", step);
  TORCH_CHECK_VALUE(!amsgrad || !max_exp_avg_sqs.empty(), "max_exp_avg_sqs must be given when amsgrad=True");
  check_step_inputs(params, grads,
                    {{"exp_avgs", exp_avgs, true}, {"exp_avg_sqs", exp_avg_sqs, true},
                     {"max_exp_avg_sqs", max_exp_avg_sqs, false}},
                    masks);
}

void check_sophia_args(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList hessians,
                       const MaskList& masks, double lr, double beta1, double beta2, double rho, double bs,
                       double weight_decay, double eps) {
  check_nonneg("lr", lr);
  check_unit_interval("beta1", beta1);
  check_unit_interval("beta2", beta2);
  check_nonneg("rho", rho);
  TORCH_CHECK_VALUE(bs > 0.0, "bs must be > 0, got ", bs);
  check_nonneg("weight_decay", weight_decay);
  TORCH_CHECK_VALUE(eps > 0.0, "eps must be > 0, got ", eps);
  check_step_inputs(params, grads, {{"exp_avgs", exp_avgs, true}, {"hessians", hessians, true}}, masks);
}

}  // namespace pyunlearn::masked_optim

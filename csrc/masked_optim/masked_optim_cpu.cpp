// CPU kernels of the masked optimizer steps. One pass: read p, g, state, mask; write p, state. Dense masks compute
// every element and select (branch-free); index lists touch only the listed entries. A whole list is one
// parallel loop over fixed-size chunks of all its tensors; the per-chunk loops come from
// masked_optim_cpu_kernels.cpp in the best instruction set this CPU has.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>

#include "common/checks.h"
#include "masked_optim/masked_optim_cpu.h"

namespace pyunlearn::masked_optim {

namespace {

constexpr int64_t kGrain = 1 << 15;

bool cpu_has(const std::string& isa) {
#if defined(__x86_64__) && defined(PYUNLEARN_CPU_MULTI_ISA)
  __builtin_cpu_init();
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return isa == "base";
}

CpuKernels kernels_for(const std::string& isa) {
#if defined(PYUNLEARN_CPU_MULTI_ISA)
  if (isa == "avx2") return isa_avx2::kernels();
#endif
  return isa_base::kernels();
}

CpuKernels& active() {
  static CpuKernels k = [] {
    const char* env = std::getenv("PYUNLEARN_CPU_ISA");
    if (env != nullptr && *env != '\0') {
      TORCH_CHECK_VALUE(cpu_has(env), "PYUNLEARN_CPU_ISA must be one of the instruction sets this build and CPU have ",
                        "(base, avx2), got ", env);
      return kernels_for(env);
    }
    return kernels_for(cpu_isas().back());
  }();
  return k;
}

Slot make_slot(const MaskList& masks, size_t i, std::initializer_list<at::Tensor> ts) {
  Slot s;
  const at::Tensor& p = *ts.begin();
  s.kind = mask_kind(masks, i, p);
  if (s.kind != MaskKind::All) s.mask = masks.get(i)->contiguous();
  if (s.kind == MaskKind::Index) check_index_bounds(arg_name("masks", i), s.mask, p.numel());
  s.work = s.kind == MaskKind::Index ? s.mask.numel() : p.numel();
  for (const auto& t : ts) s.t.emplace_back(t);
  return s;
}

// Multi-tensor execution: every slot is cut into chunks of kGrain elements and ONE parallel loop runs all chunks
// of all tensors, so a list of many small tensors costs one parallel region, not one per tensor.
// run(slot, begin, end) steps elements [begin, end) of the slot's work list.
template <typename Run>
void run_chunks(std::vector<Slot>& slots, Run&& run) {
  std::vector<std::pair<int32_t, int64_t>> chunks;  // (slot, begin)
  for (size_t i = 0; i < slots.size(); ++i) {
    for (int64_t b = 0; b < slots[i].work; b += kGrain) chunks.emplace_back(static_cast<int32_t>(i), b);
  }
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      Slot& s = slots[chunks[c].first];
      run(s, chunks[c].second, std::min(chunks[c].second + kGrain, s.work));
    }
  });
  for (auto& s : slots) {
    for (auto& c : s.t) c.write_back();
  }
}

void masked_sgd_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList bufs, const MaskList& masks,
                         double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                         bool maximize, bool first_step) {
  check_sgd_args(params, grads, bufs, masks, lr, momentum, dampening, weight_decay, nesterov);
  const bool use_buf = momentum != 0.0;
  std::vector<Slot> slots;
  for (size_t i = 0; i < params.size(); ++i) {
    slots.push_back(make_slot(masks, i, {params[i], grads[i], use_buf ? bufs[i] : at::Tensor()}));
  }
  run_chunks(slots, [&](const Slot& s, int64_t b, int64_t e) {
    cpu_kernels().sgd(s, b, e, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step);
  });
}

void masked_adamw_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                           at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, const MaskList& masks,
                           double lr, double beta1, double beta2, double weight_decay, double eps, double step,
                           bool amsgrad, bool maximize) {
  check_adamw_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, lr, beta1, beta2, weight_decay, eps,
                   step, amsgrad);
  std::vector<Slot> slots;
  for (size_t i = 0; i < params.size(); ++i) {
    slots.push_back(make_slot(masks, i, {params[i], grads[i], exp_avgs[i], exp_avg_sqs[i],
                                         amsgrad ? max_exp_avg_sqs[i] : at::Tensor()}));
  }
  run_chunks(slots, [&](const Slot& s, int64_t b, int64_t e) {
    cpu_kernels().adamw(s, b, e, lr, beta1, beta2, weight_decay, eps, step, amsgrad, maximize);
  });
}

void masked_sophia_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                            at::TensorList hessians, const MaskList& masks, double lr, double beta1, double beta2,
                            double rho, double bs, double weight_decay, double eps, bool update_hessian,
                            bool maximize) {
  check_sophia_args(params, grads, exp_avgs, hessians, masks, lr, beta1, beta2, rho, bs, weight_decay, eps);
  std::vector<Slot> slots;
  for (size_t i = 0; i < params.size(); ++i) {
    slots.push_back(make_slot(masks, i, {params[i], grads[i], exp_avgs[i], hessians[i]}));
  }
  run_chunks(slots, [&](const Slot& s, int64_t b, int64_t e) {
    cpu_kernels().sophia(s, b, e, lr, beta1, beta2, rho, bs, weight_decay, eps, update_hessian, maximize);
  });
}

}  // namespace

std::vector<std::string> cpu_isas() {
  std::vector<std::string> out;
  for (const char* isa : {"base", "avx2"}) {
    if (cpu_has(isa)) out.emplace_back(isa);
  }
  return out;
}

const CpuKernels& cpu_kernels() { return active(); }

bool set_cpu_isa(const std::string& name) {
  if (!cpu_has(name)) return false;
  active() = kernels_for(name);
  return true;
}

TORCH_LIBRARY_IMPL(pyunlearn, CPU, m) {
  m.impl("masked_sgd_step", &masked_sgd_step_cpu);
  m.impl("masked_adamw_step", &masked_adamw_step_cpu);
  m.impl("masked_sophia_step", &masked_sophia_step_cpu);
}

}  // namespace pyunlearn::masked_optim

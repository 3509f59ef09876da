// CPU kernels of the masked optimizer steps. One pass per tensor: read p, g, state, mask; write p, state.
// Dense masks compute every element and select (branch-free, vectorisable); index lists touch only the
// listed entries. Parallel over elements with at::parallel_for.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"
#include "masked_optim/masked_optim.h"
#include "masked_optim/masked_optim_math.h"

namespace pyunlearn::masked_optim {
namespace {

constexpr int64_t kGrain = 1 << 15;

// Calls body(i, on) for every element the mask selects (All, Dense: every element with on = mask[i]; Index:
// each listed i with on = true). `body` must store old values where on is false.
template <typename Body>
void for_each_masked(MaskKind kind, int64_t numel, const at::Tensor& mask, Body&& body) {
  if (kind == MaskKind::All) {
    at::parallel_for(0, numel, kGrain, [&](int64_t b, int64_t e) {
#pragma GCC ivdep
      for (int64_t i = b; i < e; ++i) body(i, true);
    });
  } else if (kind == MaskKind::Dense) {
    const uint8_t* mk = reinterpret_cast<const uint8_t*>(mask.data_ptr());
    at::parallel_for(0, numel, kGrain, [&](int64_t b, int64_t e) {
#pragma GCC ivdep
      for (int64_t i = b; i < e; ++i) body(i, mk[i] != 0);
    });
  } else {
    AT_DISPATCH_INDEX_TYPES(mask.scalar_type(), "masked_optim_index", [&] {
      const index_t* ix = mask.data_ptr<index_t>();
      at::parallel_for(0, mask.numel(), kGrain, [&](int64_t b, int64_t e) {
        for (int64_t k = b; k < e; ++k) body(static_cast<int64_t>(ix[k]), true);
      });
    });
  }
}

// Prepares tensor i: mask kind (index bounds checked), contiguous working copies.
struct Slot {
  MaskKind kind;
  at::Tensor mask;
  std::vector<Contig> t;  // params, then the states in op order (undefined when absent)
};

Slot make_slot(const MaskList& masks, size_t i, std::initializer_list<at::Tensor> ts) {
  Slot s;
  const at::Tensor& p = *ts.begin();
  s.kind = mask_kind(masks, i, p);
  if (s.kind != MaskKind::All) s.mask = masks.get(i)->contiguous();
  if (s.kind == MaskKind::Index) check_index_bounds(arg_name("masks", i), s.mask, p.numel());
  for (const auto& t : ts) s.t.emplace_back(t);
  return s;
}

template <typename T>
T* ptr(Contig& c) {
  return c.work.defined() ? c.work.data_ptr<T>() : nullptr;
}

void masked_sgd_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList bufs, const MaskList& masks,
                         double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                         bool maximize, bool first_step) {
  check_sgd_args(params, grads, bufs, masks, lr, momentum, dampening, weight_decay, nesterov);
  const bool use_buf = momentum != 0.0;
  for (size_t i = 0; i < params.size(); ++i) {
    Slot s = make_slot(masks, i, {params[i], grads[i], use_buf ? bufs[i] : at::Tensor()});
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[i].scalar_type(), "masked_sgd_step_cpu", [&] {
      using S = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      const SgdCoeffs<S> a(lr, momentum, dampening, weight_decay, nesterov, maximize, first_step);
      scalar_t* p = ptr<scalar_t>(s.t[0]);
      const scalar_t* g = ptr<scalar_t>(s.t[1]);
      S* buf = ptr<S>(s.t[2]);
      for_each_masked(s.kind, params[i].numel(), s.mask, [&](int64_t j, bool on) {
        S pv = S(p[j]), bv = buf ? buf[j] : S(0);
        S np = pv, nb = bv;
        sgd_update<S>(np, S(g[j]), buf ? &nb : nullptr, a);
        p[j] = on ? scalar_t(np) : p[j];
        if (buf) buf[j] = on ? nb : bv;
      });
    });
    for (auto& c : s.t) c.write_back();
  }
}

void masked_adamw_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                           at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, const MaskList& masks,
                           double lr, double beta1, double beta2, double weight_decay, double eps, double step,
                           bool amsgrad, bool maximize) {
  check_adamw_args(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, lr, beta1, beta2, weight_decay, eps,
                   step, amsgrad);
  for (size_t i = 0; i < params.size(); ++i) {
    Slot s = make_slot(masks, i, {params[i], grads[i], exp_avgs[i], exp_avg_sqs[i],
                                  amsgrad ? max_exp_avg_sqs[i] : at::Tensor()});
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[i].scalar_type(), "masked_adamw_step_cpu", [&] {
      using S = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      const AdamWCoeffs<S> a(lr, beta1, beta2, weight_decay, eps, step, amsgrad, maximize);
      scalar_t* p = ptr<scalar_t>(s.t[0]);
      const scalar_t* g = ptr<scalar_t>(s.t[1]);
      S* m = ptr<S>(s.t[2]);
      S* v = ptr<S>(s.t[3]);
      S* vmax = ptr<S>(s.t[4]);
      for_each_masked(s.kind, params[i].numel(), s.mask, [&](int64_t j, bool on) {
        S pv = S(p[j]), mv = m[j], vv = v[j], xv = vmax ? vmax[j] : S(0);
        S np = pv, nm = mv, nv = vv, nx = xv;
        adamw_update<S>(np, S(g[j]), nm, nv, &nx, a);
        p[j] = on ? scalar_t(np) : p[j];
        m[j] = on ? nm : mv;
        v[j] = on ? nv : vv;
        if (vmax) vmax[j] = on ? nx : xv;
      });
    });
    for (auto& c : s.t) c.write_back();
  }
}

void masked_sophia_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                            at::TensorList hessians, const MaskList& masks, double lr, double beta1, double beta2,
                            double rho, double bs, double weight_decay, double eps, bool update_hessian,
                            bool maximize) {
  check_sophia_args(params, grads, exp_avgs, hessians, masks, lr, beta1, beta2, rho, bs, weight_decay, eps);
  for (size_t i = 0; i < params.size(); ++i) {
    Slot s = make_slot(masks, i, {params[i], grads[i], exp_avgs[i], hessians[i]});
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, params[i].scalar_type(), "masked_sophia_step_cpu", [&] {
      using S = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      const SophiaCoeffs<S> a(lr, beta1, beta2, rho, bs, weight_decay, eps, update_hessian, maximize);
      scalar_t* p = ptr<scalar_t>(s.t[0]);
      const scalar_t* g = ptr<scalar_t>(s.t[1]);
      S* m = ptr<S>(s.t[2]);
      S* h = ptr<S>(s.t[3]);
      for_each_masked(s.kind, params[i].numel(), s.mask, [&](int64_t j, bool on) {
        S pv = S(p[j]), mv = m[j], hv = h[j];
        S np = pv, nm = mv, nh = hv;
        sophia_update<S>(np, S(g[j]), nm, nh, a);
        p[j] = on ? scalar_t(np) : p[j];
        m[j] = on ? nm : mv;
        h[j] = on ? nh : hv;
      });
    });
    for (auto& c : s.t) c.write_back();
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(pyunlearn, CPU, m) {
  m.impl("masked_sgd_step", &masked_sgd_step_cpu);
  m.impl("masked_adamw_step", &masked_adamw_step_cpu);
  m.impl("masked_sophia_step", &masked_sophia_step_cpu);
}

}  // namespace pyunlearn::masked_optim

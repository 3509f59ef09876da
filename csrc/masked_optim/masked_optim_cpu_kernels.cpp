// Per-chunk CPU loops of the masked optimizer steps. This file is compiled once per instruction set, with
// PU_ISA naming the namespace (isa_base, isa_avx2) and the matching -m flags; masked_optim_cpu.cpp
// picks one at run time. -ffp-contract=off everywhere: no FMA contraction, so every ISA rounds identically.
#include <ATen/Dispatch.h>

#include "masked_optim/masked_optim_cpu.h"
#include "masked_optim/masked_optim_math.h"

#ifndef PU_ISA
#error "compile with -DPU_ISA=isa_base|isa_avx2"
#endif
#define PU_STR2(x) #x
#define PU_STR(x) PU_STR2(x)

namespace pyunlearn::masked_optim::PU_ISA {
namespace {

// Calls body(j, on) for the elements [b, e) of a slot's work list: All and Dense visit element j = b..e-1 with
// on = true / mask[j] (the body stores old values where on is false: branch-free, vectorisable); Index visits the
// listed elements ix[b..e-1] with on = true.
// The mask pointer is a __restrict parameter: a uint8 pointer may alias anything, which would stop vectorisation.
template <typename Body>
__attribute__((always_inline)) inline void dense_loop(const uint8_t* __restrict mk, int64_t b, int64_t e, Body&& body) {
  for (int64_t j = b; j < e; ++j) body(j, mk[j] != 0);
}

template <typename Body>
__attribute__((always_inline)) inline void visit(const Slot& s, int64_t b, int64_t e, Body&& body) {
  if (s.kind == MaskKind::All) {
    for (int64_t j = b; j < e; ++j) body(j, true);
  } else if (s.kind == MaskKind::Dense) {
    dense_loop(reinterpret_cast<const uint8_t*>(s.mask.data_ptr()), b, e, body);
  } else if (s.mask.scalar_type() == at::kInt) {
    const int32_t* ix = s.mask.data_ptr<int32_t>();
    for (int64_t k = b; k < e; ++k) body(static_cast<int64_t>(ix[k]), true);
  } else {
    const int64_t* ix = s.mask.data_ptr<int64_t>();
    for (int64_t k = b; k < e; ++k) body(ix[k], true);
  }
}

template <typename T>
T* ptr(const Contig& c) {
  return c.work.defined() ? c.work.data_ptr<T>() : nullptr;
}

// Per-chunk kernels. Pointers are __restrict parameters captured BY VALUE, and the math is branch-free: that is
// what lets GCC vectorise the All/Dense loops (with ivdep alone, or pointers captured by reference, it does not).
// Optional state (momentum buffer, amsgrad max) is a template flag, never a null check in the loop.
template <typename T, typename S, bool HAS_BUF>
void sgd_chunk(const Slot& s, int64_t b, int64_t e, T* __restrict p, const T* __restrict g, S* __restrict buf,
               const SgdCoeffs<S> a) {
  visit(s, b, e, [=](int64_t j, bool on) {
    const T pt = p[j];
    S pv = S(pt), bv = HAS_BUF ? buf[j] : S(0);
    S np = pv, nb = bv;
    sgd_update<S>(np, S(g[j]), nb, HAS_BUF, a);
    p[j] = on ? T(np) : pt;
    if constexpr (HAS_BUF) buf[j] = on ? nb : bv;
  });
}

template <typename T, typename S, bool AMSGRAD>
void adamw_chunk(const Slot& s, int64_t b, int64_t e, T* __restrict p, const T* __restrict g, S* __restrict m,
                 S* __restrict v, S* __restrict vmax, const AdamWCoeffs<S> a) {
  visit(s, b, e, [=](int64_t j, bool on) {
    const T pt = p[j];
    S pv = S(pt), mv = m[j], vv = v[j], xv = AMSGRAD ? vmax[j] : S(0);
    S np = pv, nm = mv, nv = vv, nx = xv;
    adamw_update<S>(np, S(g[j]), nm, nv, nx, a);
    p[j] = on ? T(np) : pt;
    m[j] = on ? nm : mv;
    v[j] = on ? nv : vv;
    if constexpr (AMSGRAD) vmax[j] = on ? nx : xv;
  });
}

template <typename T, typename S>
void sophia_chunk(const Slot& s, int64_t b, int64_t e, T* __restrict p, const T* __restrict g, S* __restrict m,
                  S* __restrict h, const SophiaCoeffs<S> a) {
  visit(s, b, e, [=](int64_t j, bool on) {
    const T pt = p[j];
    S pv = S(pt), mv = m[j], hv = h[j];
    S np = pv, nm = mv, nh = hv;
    sophia_update<S>(np, S(g[j]), nm, nh, a);
    p[j] = on ? T(np) : pt;
    m[j] = on ? nm : mv;
    h[j] = on ? nh : hv;
  });
}


// fp32 state for fp16/bf16 params, else the param's own type.
template <typename T>
using state_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

void sgd(const Slot& s, int64_t b, int64_t e, double lr, double momentum, double dampening, double weight_decay,
         bool nesterov, bool maximize, bool first_step) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.t[0].work.scalar_type(), "masked_sgd_step_cpu", [&] {
    using S = state_t<scalar_t>;
    const SgdCoeffs<S> a(lr, momentum, dampening, weight_decay, nesterov, maximize, first_step);
    auto* p = ptr<scalar_t>(s.t[0]);
    auto* g = ptr<scalar_t>(s.t[1]);
    if (momentum != 0.0) {
      sgd_chunk<scalar_t, S, true>(s, b, e, p, g, ptr<S>(s.t[2]), a);
    } else {
      sgd_chunk<scalar_t, S, false>(s, b, e, p, g, nullptr, a);
    }
  });
}

void adamw(const Slot& s, int64_t b, int64_t e, double lr, double beta1, double beta2, double weight_decay,
           double eps, double step, bool amsgrad, bool maximize) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.t[0].work.scalar_type(), "masked_adamw_step_cpu", [&] {
    using S = state_t<scalar_t>;
    const AdamWCoeffs<S> a(lr, beta1, beta2, weight_decay, eps, step, amsgrad, maximize);
    auto* p = ptr<scalar_t>(s.t[0]);
    auto* g = ptr<scalar_t>(s.t[1]);
    if (amsgrad) {
      adamw_chunk<scalar_t, S, true>(s, b, e, p, g, ptr<S>(s.t[2]), ptr<S>(s.t[3]), ptr<S>(s.t[4]), a);
    } else {
      adamw_chunk<scalar_t, S, false>(s, b, e, p, g, ptr<S>(s.t[2]), ptr<S>(s.t[3]), nullptr, a);
    }
  });
}

void sophia(const Slot& s, int64_t b, int64_t e, double lr, double beta1, double beta2, double rho, double bs,
            double weight_decay, double eps, bool update_hessian, bool maximize) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, s.t[0].work.scalar_type(), "masked_sophia_step_cpu", [&] {
    using S = state_t<scalar_t>;
    const SophiaCoeffs<S> a(lr, beta1, beta2, rho, bs, weight_decay, eps, update_hessian, maximize);
    sophia_chunk<scalar_t, S>(s, b, e, ptr<scalar_t>(s.t[0]), ptr<scalar_t>(s.t[1]), ptr<S>(s.t[2]),
                              ptr<S>(s.t[3]), a);
  });
}

}  // namespace

CpuKernels kernels() { return CpuKernels{PU_STR(PU_ISA) + 4, &sgd, &adamw, &sophia}; }

}  // namespace pyunlearn::masked_optim::PU_ISA

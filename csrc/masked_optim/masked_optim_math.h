// Per-element math of the masked optimizer steps, shared verbatim by the CPU and CUDA kernels (torch-free,
// so nvcc can compile it without ATen). All arithmetic is in the state type S (fp32 for half/bf16 params).
// The Triton kernels and the reference twins (pyunlearn/reference/masked_optim.py) spell the same formulas
// in the same order.
//
// Coefficients are built on the host in double and rounded once (1 - beta2 computed after rounding beta2 to fp32
// is off by 1.3e-5 relative for beta2 = 0.999: torch.optim computes these complements in double too). Build
// them with the constructors below; kernels receive the structs by value.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define PU_HD __host__ __device__ __forceinline__
#else
#define PU_HD inline
#endif

namespace pyunlearn::masked_optim {

template <typename S>
struct SgdCoeffs {
  S lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, maximize, first_step;
  SgdCoeffs(double lr_, double momentum_, double dampening_, double weight_decay_, bool nesterov_, bool maximize_,
            bool first_step_)
      : lr(S(lr_)), momentum(S(momentum_)), one_minus_dampening(S(1.0 - dampening_)), weight_decay(S(weight_decay_)),
        nesterov(nesterov_), maximize(maximize_), first_step(first_step_) {}
};

// The update functions are branch-free (selects on loop-invariant flags, no conditional stores) so that the
// compiler vectorises the CPU loops; every argument is a value or a reference to a local.

// torch.optim.SGD: g += wd*p; buf = first ? g : mom*buf + (1-damp)*g; d = nesterov ? g + mom*buf : buf; p -= lr*d.
// has_buf = momentum != 0 (else buf is ignored).
template <typename S>
PU_HD void sgd_update(S& p, S g, S& buf, bool has_buf, const SgdCoeffs<S>& a) {
  g = a.maximize ? -g : g;
  g = a.weight_decay != S(0) ? g + a.weight_decay * p : g;
  S b = a.first_step ? g : a.momentum * buf + a.one_minus_dampening * g;
  buf = has_buf ? b : buf;
  S d = a.nesterov ? g + a.momentum * b : b;
  p = p - a.lr * (has_buf ? d : g);
}

template <typename S>
struct AdamWCoeffs {
  S beta1, one_minus_beta1, beta2, one_minus_beta2, decay, eps;
  S step_size;  // lr / (1 - beta1^t)
  S bc2_sqrt;   // sqrt(1 - beta2^t)
  bool amsgrad, maximize;
  AdamWCoeffs(double lr, double beta1_, double beta2_, double weight_decay, double eps_, double step, bool amsgrad_,
              bool maximize_)
      : beta1(S(beta1_)), one_minus_beta1(S(1.0 - beta1_)), beta2(S(beta2_)), one_minus_beta2(S(1.0 - beta2_)),
        decay(S(1.0 - lr * weight_decay)), eps(S(eps_)), step_size(S(lr / (1.0 - std::pow(beta1_, step)))),
        bc2_sqrt(S(std::sqrt(1.0 - std::pow(beta2_, step)))), amsgrad(amsgrad_), maximize(maximize_) {}
};

// torch.optim.AdamW (decoupled decay): p *= 1-lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// vmax = max(vmax, v) if amsgrad (else vmax is ignored); p -= step_size * m / (sqrt(v or vmax)/bc2_sqrt + eps).
template <typename S>
PU_HD void adamw_update(S& p, S g, S& m, S& v, S& vmax, const AdamWCoeffs<S>& a) {
  g = a.maximize ? -g : g;
  p = p * a.decay;
  m = a.beta1 * m + a.one_minus_beta1 * g;
  v = a.beta2 * v + a.one_minus_beta2 * g * g;
  S mx = vmax > v ? vmax : v;
  vmax = a.amsgrad ? mx : vmax;
  S vv = a.amsgrad ? mx : v;
  S denom = std::sqrt(vv) / a.bc2_sqrt + a.eps;
  p = p - a.step_size * m / denom;
}

template <typename S>
struct SophiaCoeffs {
  S lr, beta1, one_minus_beta1, beta2, one_minus_beta2, rho_bs, decay, eps;  // rho_bs = rho * bs
  bool update_hessian, maximize;
  SophiaCoeffs(double lr_, double beta1_, double beta2_, double rho, double bs, double weight_decay, double eps_,
               bool update_hessian_, bool maximize_)
      : lr(S(lr_)), beta1(S(beta1_)), one_minus_beta1(S(1.0 - beta1_)), beta2(S(beta2_)),
        one_minus_beta2(S(1.0 - beta2_)), rho_bs(S(rho * bs)), decay(S(1.0 - lr_ * weight_decay)), eps(S(eps_)),
        update_hessian(update_hessian_), maximize(maximize_) {}
};

// Sophia as SOUL calls it: optionally h = b2 h + (1-b2) g^2 (squared-gradient estimate every step);
// m = b1 m + (1-b1) g; p *= 1-lr*wd; p -= lr * sign(m) * min(|m| / (rho*bs*max(h,0) + eps), 1).
template <typename S>
PU_HD void sophia_update(S& p, S g, S& m, S& h, const SophiaCoeffs<S>& a) {
  g = a.maximize ? -g : g;
  h = a.update_hessian ? a.beta2 * h + a.one_minus_beta2 * g * g : h;
  m = a.beta1 * m + a.one_minus_beta1 * g;
  p = p * a.decay;
  S hp = h > S(0) ? h : S(0);
  S ratio = std::fabs(m) / (a.rho_bs * hp + a.eps);
  ratio = ratio < S(1) ? ratio : S(1);
  S sgn = m > S(0) ? S(1) : (m < S(0) ? S(-1) : S(0));
  p = p - a.lr * sgn * ratio;
}

}  // namespace pyunlearn::masked_optim

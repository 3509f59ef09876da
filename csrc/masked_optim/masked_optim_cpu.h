// CPU kernels of the masked optimizer steps, split in two:
//   masked_optim_cpu.cpp          checks, slots, the parallel loop over chunks, registration (compiled once)
//   masked_optim_cpu_kernels.cpp  the per-chunk loops, compiled once per instruction set (base x86-64, AVX2)
//                                 into namespaces isa_base / isa_avx2, chosen at run time by CPUID.
// No AVX-512 build: GCC turns the dense-mask select into AVX-512 masked stores, which ran 5x slower than AVX2's
// blend + full store on the AMD EPYC here (53 vs 11 ms for a 16M-param step), and the unmasked step is
// memory-bound at AVX2 width already.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "masked_optim/masked_optim.h"

namespace pyunlearn::masked_optim {

// Tensor i of a call, ready to run: mask form (index bounds checked) and contiguous working copies.
struct Slot {
  MaskKind kind;
  at::Tensor mask;
  int64_t work;           // elements to visit: numel, or the index-list length
  std::vector<Contig> t;  // params, grads, then the states in op order (undefined when absent)
};

// Per-chunk entry points of one instruction set: step elements [b, e) of a slot's work list. Hyperparameters
// arrive in double; each kernel rounds its coefficients once (masked_optim_math.h).
struct CpuKernels {
  const char* isa;
  void (*sgd)(const Slot& s, int64_t b, int64_t e, double lr, double momentum, double dampening,
              double weight_decay, bool nesterov, bool maximize, bool first_step);
  void (*adamw)(const Slot& s, int64_t b, int64_t e, double lr, double beta1, double beta2, double weight_decay,
                double eps, double step, bool amsgrad, bool maximize);
  void (*sophia)(const Slot& s, int64_t b, int64_t e, double lr, double beta1, double beta2, double rho, double bs,
                 double weight_decay, double eps, bool update_hessian, bool maximize);
};

#define PU_DECLARE_ISA(NS) \
  namespace NS {           \
  CpuKernels kernels();    \
  }
PU_DECLARE_ISA(isa_base)
PU_DECLARE_ISA(isa_avx2)
#undef PU_DECLARE_ISA

// The instruction set in use: the best this CPU and this build have, or the one set_cpu_isa() chose.
const CpuKernels& cpu_kernels();
// "base" or "avx2"; false when this build or CPU lacks it.
bool set_cpu_isa(const std::string& name);
std::vector<std::string> cpu_isas();

}  // namespace pyunlearn::masked_optim

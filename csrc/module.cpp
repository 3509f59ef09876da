// The pybind11 module: only the module entry and build_info(). Every op is a dispatcher op
// (torch.ops.pyunlearn.*), registered by TORCH_LIBRARY_IMPL in the kernel files; its schema and fake live in
// pyunlearn/_ops.py, so errors are translated by torch and every op works with torch.compile.
#include <torch/python.h>

#include "masked_optim/masked_optim_cpu.h"

#ifndef PYUNLEARN_TORCH_VERSION
#define PYUNLEARN_TORCH_VERSION "unknown"
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
  d["cpu"] = true;
#ifdef PYUNLEARN_WITH_CUDA
  d["cuda"] = true;
#ifdef PYUNLEARN_CUDA_ARCHS
  d["cuda_archs"] = std::string(PYUNLEARN_CUDA_ARCHS);
#else
  d["cuda_archs"] = std::string();
#endif
#else
  d["cuda"] = false;
  d["cuda_archs"] = std::string();
#endif
  d["torch_version"] = std::string(PYUNLEARN_TORCH_VERSION);
#if defined(_OPENMP)
  d["openmp"] = true;
#else
  d["openmp"] = false;
#endif
  d["cpu_isas"] = pyunlearn::masked_optim::cpu_isas();
  d["cpu_isa"] = std::string(pyunlearn::masked_optim::cpu_kernels().isa);
  d["ops"] = pybind11::make_tuple("masked_sgd_step", "masked_adamw_step", "masked_sophia_step", "gat_fwd", "gat_bwd",
                                   "gatv2_fwd", "gatv2_bwd", "zo_accumulate", "zo_accumulate_rows",
                                   "zo_philox_bits");
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyunlearn compiled kernels (CPU, and CUDA when built with it)";
  m.def("build_info", &build_info, "What this extension was compiled with: CPU, CUDA + archs, torch version.");
  m.def("set_cpu_isa", &pyunlearn::masked_optim::set_cpu_isa,
        "Use the CPU kernels of one instruction set (base, avx2); False if this build or CPU lacks it.");
}

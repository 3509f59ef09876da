#!/usr/bin/env bash
# Compile-and-link check of pyunlearn's CUDA kernels on a machine WITHOUT a GPU (CI has none).
#
# Builds the repo with PYUNLEARN_CUDA=ON against the CUDA build of torch in a throwaway venv, imports the installed
# package from outside the repo and asserts that the masked-optimizer ops have CUDA kernels registered and that
# build_info()["cuda"] is True. It cannot run a kernel (no device); the GPU machine's own script does that.
#
# usage: .ci/cuda_build_check.sh [REPO_ROOT]      (default: the repo this script lives in)
# env:   CUDA_HOME (default /usr/local/cuda; needs bin/nvcc), PYTHON (default python3),
#        PYUNLEARN_CHECK_TORCH (default torch==2.14.1: its CUDA wheel lies on this kind of machine's disk),
#        TORCH_CUDA_ARCH_LIST (default 9.0), KEEP_TMP=1 keeps the temp dir (venv, build tree, log) for debugging.
# Takes a few minutes: most of it installing the multi-GB CUDA torch into the fresh venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${1:-$here/..}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
PYTHON="${PYTHON:-python3}"
torch_spec="${PYUNLEARN_CHECK_TORCH:-torch==2.14.1}"
archs="${TORCH_CUDA_ARCH_LIST:-9.0}"

fail() { echo "CUDA build check: FAILED ($*)" >&2; exit 1; }
# Compiler/CMake errors first (pip's own lines bury them), else the log's tail.
show_errors() {
  local errs
  errs="$(grep -E "\): error|: error:|^ *FAILED:|CMake Error" -A4 "$1" | head -60 || true)"
  if [[ -n "$errs" ]]; then echo "$errs" >&2; else tail -40 "$1" >&2; fi
}

[[ -d "$repo" ]] || fail "no repo at $repo"
repo="$(cd "$repo" && pwd)"

[[ -f "$repo/pyproject.toml" ]] || fail "no pyproject.toml in $repo"
[[ -x "$CUDA_HOME/bin/nvcc" ]] || fail "no nvcc at $CUDA_HOME/bin/nvcc; set CUDA_HOME"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/pyunlearn-cuda-check.XXXXXX")"
cleanup() { if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi; }
trap cleanup EXIT

t0=$SECONDS
"$PYTHON" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
# torch FIRST and pinned: a build needs the CUDA build of torch (with ATen/cuda headers), and the build runs without
# isolation so that it compiles against exactly this torch.
"$py" -m pip install -q --disable-pip-version-check "$torch_spec" scikit-build-core "cmake>=3.26" ninja numpy \
  > "$tmp/pip.log" 2>&1 || { tail -30 "$tmp/pip.log" >&2; fail "pip install $torch_spec and build deps"; }
t_deps=$((SECONDS - t0))

"$py" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' \
  || fail "$torch_spec is a CPU-only build; a CUDA build of torch is needed"

# The pip nvidia wheels carry headers and libnvrtc that the system toolkit here lacks (build facts, DESIGN.md).
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
nvrtc="$(ls "$site"/nvidia/*/lib/libnvrtc.so.[0-9]* 2>/dev/null | head -n 1 || true)"
[[ -n "$nvrtc" ]] || fail "no libnvrtc.so.* under $site/nvidia"
nv="$(dirname "$(dirname "$nvrtc")")"

t1=$SECONDS
(
  cd "$tmp"
  export CUDA_HOME PYUNLEARN_CUDA=ON TORCH_CUDA_ARCH_LIST="$archs" CUDACXX="$CUDA_HOME/bin/nvcc"
  export SKBUILD_CMAKE_ARGS="-DCUDA_TOOLKIT_ROOT_DIR=$CUDA_HOME;-DCUDA_nvrtc_LIBRARY=$nvrtc;-DCMAKE_CUDA_FLAGS=-I$nv/include;-DCMAKE_CXX_FLAGS=-I$nv/include"
  # Own build dir (never the repo's build/); runtime deps come too so that `import pyunlearn` is the real thing.
  "$py" -m pip install -v --disable-pip-version-check --no-build-isolation -Cbuild-dir="$tmp/build" "$repo"
) > "$tmp/build.log" 2>&1 || { show_errors "$tmp/build.log"; fail "build, see above"; }
t_build=$((SECONDS - t1))
warnings="$(grep -ciE "(warning #|: warning)" "$tmp/build.log" || true)"

# Import from outside the repo: the installed package, never the source folder.
cd "$tmp"
summary="$("$py" - "$repo" <<'EOF'
import os, sys
import torch
repo = os.path.realpath(sys.argv[1])
import pyunlearn
from pyunlearn import _C
where = os.path.realpath(_C.__file__)
assert not where.startswith(repo + os.sep), f"imported the extension from the repo ({where}), not the install"
info = dict(_C.build_info())
assert info.get("cuda") is True, f'build_info()["cuda"] is {info.get("cuda")!r}, expected True'
# every op the extension lists (build_info()["ops"]) and every op the package defines must have a CUDA kernel
ops = list(dict.fromkeys(tuple(info.get("ops", ())) + pyunlearn._backends.OPS))
missing = [op for op in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(f"pyunlearn::{op}", "CUDA")]
assert not missing, f"no CUDA kernel registered for {missing}"
print(f"torch {torch.__version__}, archs {info.get('cuda_archs')}, {len(ops)}/{len(ops)} ops with CUDA kernels")
EOF
)" || fail "import / dispatch-key check, see above"

echo "CUDA build check: OK ($summary, ${warnings} compiler warnings, deps ${t_deps} s, build ${t_build} s, total $((SECONDS - t0)) s)"

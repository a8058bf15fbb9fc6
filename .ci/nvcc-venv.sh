#!/usr/bin/env bash
# Installs a pinned CUDA compiler (nvcc, from PyPI) into .venv-nvcc/ at the
# repository root and prints the path of nvcc on stdout (everything else goes
# to stderr), so a caller can write:   NVCC="$(bash .ci/nvcc-venv.sh)" cargo build
#
# nvcc needs no GPU and no driver to emit PTX; it needs a host C++ compiler
# (gcc/g++) for preprocessing. Idempotent: a second run only checks a stamp.
#
# Why nvidia-cuda-nvcc 13.0 and not the 12.x line (nvidia-cuda-nvcc-cu12),
# which would match cudarc's cuda-12080 bindings more closely: every
# nvidia-cuda-nvcc-cu12 wheel (12.0 … 12.9) ships only ptxas and libnvvm, no
# nvcc driver binary; nvcc itself is on PyPI only from CUDA 13. The PTX it
# emits (ISA 9.0) needs an R580+ driver to JIT; on an older driver the runtime
# falls back to compiling the embedded sources with the system's NVRTC (see
# src/backend/cuda/kernels.rs). 13.0 is the oldest 13.x release, so the
# smallest driver requirement. The nvcc wheel depends on nvidia-cuda-crt,
# nvidia-cuda-runtime (headers) and nvidia-nvvm (cicc) without pinning them;
# an unpinned install pulls the newest nvvm, whose PTX the pinned ptxas then
# rejects ("Unsupported .version"), so all four are pinned to one release.
set -euo pipefail

CUDA_PYPI_VERSION=13.0.88
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-nvcc"
stamp="$venv/.installed-$CUDA_PYPI_VERSION"
path_file="$venv/nvcc-path"

if [[ -f "$stamp" && -f "$path_file" ]]; then
    nvcc="$(cat "$path_file")"
    if [[ -x "$nvcc" ]]; then
        echo "$nvcc"
        exit 0
    fi
fi

if ! command -v g++ >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    echo "nvcc-venv: nvcc needs a host C++ compiler (gcc/g++); install one first" >&2
    exit 1
fi

rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "nvidia-cuda-nvcc==$CUDA_PYPI_VERSION" \
    "nvidia-cuda-crt==$CUDA_PYPI_VERSION" \
    "nvidia-cuda-runtime==$CUDA_PYPI_VERSION" \
    "nvidia-nvvm==$CUDA_PYPI_VERSION" >&2

nvcc="$(find "$venv" -path '*/nvidia/cu*/bin/nvcc' -type f | head -n 1)"
if [[ -z "$nvcc" || ! -x "$nvcc" ]]; then
    echo "nvcc-venv: installed nvidia-cuda-nvcc==$CUDA_PYPI_VERSION but found no nvcc binary under $venv" >&2
    exit 1
fi
"$nvcc" --version >&2
echo "$nvcc" >"$path_file"
touch "$stamp"
echo "$nvcc"

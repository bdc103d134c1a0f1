#!/usr/bin/env bash
# Installs the project and its dev tools into the current Python.
# torch comes first so that a machine without an NVIDIA GPU gets the CPU build
# (an unpinned `pip install torch` on Linux pulls the multi-GB CUDA build).
# Also headless Chromium (Debian's package, where apt-get runs as root): the report's PNG figures
# (kaleido) and its browser tests use it; without it reports still build, PNGs and those tests skip.
set -euo pipefail
cd "$(dirname "$0")"
TORCH_VERSION=2.13.0
PIP="python -m pip install --quiet"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    python -m pip show torch >/dev/null 2>&1 || $PIP "torch==${TORCH_VERSION}"
    $PIP -e ".[dev,dashboard,gpu]" || $PIP -e ".[dev,dashboard]"   # flash-attn needs a CUDA toolchain; SDPA works without it
else
    if ! python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('${TORCH_VERSION%.*}') else 1)" 2>/dev/null; then
        # A local wheelhouse (pip find-links) may already hold the +cpu build; otherwise PyTorch's CPU index.
        $PIP "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
            || $PIP "torch==${TORCH_VERSION}+cpu" --index-url https://download.pytorch.org/whl/cpu
    fi
    $PIP -e ".[dev,dashboard]"
fi

if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "setup.sh: could not install chromium: report PNGs and browser tests will be skipped" >&2
    else
        echo "setup.sh: chromium not found and apt-get (as root) unavailable: report PNGs and browser tests will be skipped" >&2
    fi
fi

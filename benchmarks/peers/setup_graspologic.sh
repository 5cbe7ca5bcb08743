#!/usr/bin/env bash
# Create a separate virtual environment with graspologic, used by benchmarks/bench_matching.py as a subprocess peer.
#
# graspologic cannot share the project environment: it pins numpy < 2 (pip resolves numpy 1.26.4) and pulls numba,
# POT, gensim, umap-learn, ... (~35 packages; no torch). The benchmark runs graspologic.match.graph_match in this
# interpreter and reads the results back as JSON, so the two environments never mix.
#
# Usage (from the repository root):
#     bash benchmarks/peers/setup_graspologic.sh [VENV_DIR]     # default: benchmarks/.peers/graspologic (git-ignored)
#     PYTHON=python3.11 bash benchmarks/peers/setup_graspologic.sh
# Then: python benchmarks/bench_matching.py faq --quick   (finds the default venv by itself), or pass
#     --graspologic-python VENV_DIR/bin/python
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${1:-$root/benchmarks/.peers/graspologic}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade --quiet pip
"$venv/bin/python" -m pip install graspologic
"$venv/bin/python" -c "import graspologic, numpy; print('graspologic', graspologic.__version__, 'numpy', numpy.__version__)"
echo "peer python: $venv/bin/python"

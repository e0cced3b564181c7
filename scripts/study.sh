#!/usr/bin/env bash
# The main job: set up, then run the study on the built-in demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STORE=${SYNTHMIX_STORE:-store}
.venv/bin/python -m corpora --store "$STORE" demo
.venv/bin/python -m corpora --store "$STORE" sql "SELECT corpus, count(*) AS docs, sum(n_bytes) AS bytes FROM documents GROUP BY corpus ORDER BY corpus"

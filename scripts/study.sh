#!/usr/bin/env bash
# The main job: set up, then run the whole study on the built-in demo data (reports/studies/demo.toml):
# demo store -> HQ/QA/TXBK with SmolLM2 on CPU -> unigram + near-duplicate analyses -> mixtures ->
# a sweep of CPU-sized Llama models -> scaling fits -> report.html. Re-running reuses finished steps.
# Extra arguments go to `python -m reports study` (e.g. --config my_study.toml --store S --out R.html).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# everything the study loads ships in a package or is built here: never wait on a model hub
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m reports study "$@"

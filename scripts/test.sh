#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Tests on ../shared/data skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,ray
# Debian's chromium renders the HTML report in the browser test; install it where we may (root, apt).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "test: could not install chromium; the browser test will skip" >&2
fi
# nothing in the suite may reach a model hub: everything it loads ships in a package or is built here
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# two worker processes (pytest-xdist): the suite waits on subprocesses, model loads and Ray start-up as much
# as it computes, so two workers on two cores take ~2x less wall time (docs/conventions.md: tests)
exec .venv/bin/python -m pytest -q -n "${SYNTHMIX_TEST_WORKERS:-2}" --durations=15 "$@"

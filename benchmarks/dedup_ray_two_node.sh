#!/usr/bin/env bash
# Near-duplicates on a local two-node Ray cluster (two `ray start` raylets on this machine, 1 CPU each,
# token authentication as Ray 2.60 requires) against the local engine, on the same store: the reported
# pairs (so the clusters) must be identical; prints both runs' time, peak RSS and P/R.
#
#   bash benchmarks/dedup_ray_two_node.sh 1000000        # documents (default 20000)
#
# Stores go to $TMP_DIR (default /tmp/dedup_two_node), Ray's session files to $TMP_DIR/ray; both removed at the end.
set -euo pipefail
N=${1:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TMP_DIR=${TMP_DIR:-/tmp/dedup_two_node}
PORT=${PORT:-6390}
PY=${PYTHON:-python}
RAY="$(dirname "$(command -v "$PY")")/ray"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=${RAY_AUTH_TOKEN:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
mkdir -p "$TMP_DIR/ray"
# Stop only this cluster's processes (their command lines name its session folder), by process id: `ray stop`
# would stop every Ray on the machine.
cleanup() {
    for pid in $(pgrep -f -- "$TMP_DIR/ray" || true); do kill "$pid" 2>/dev/null || true; done
    sleep 2
    for pid in $(pgrep -f -- "$TMP_DIR/ray" || true); do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$TMP_DIR"
}
trap cleanup EXIT
"$PY" "$ROOT/benchmarks/dedup_scale.py" --sizes "$N" --tmp "$TMP_DIR" --keep --engine local | tee "$TMP_DIR/local.txt"
"$RAY" start --head --port "$PORT" --num-cpus 1 --temp-dir "$TMP_DIR/ray" --include-dashboard false >/dev/null
"$RAY" start --address "127.0.0.1:$PORT" --num-cpus 1 --temp-dir "$TMP_DIR/ray" >/dev/null
"$PY" - "$PORT" <<'PY'
import sys, ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR")
print(f"Ray cluster: {len([n for n in ray.nodes() if n['Alive']])} nodes, {ray.cluster_resources().get('CPU')} CPUs")
PY
"$PY" "$ROOT/benchmarks/dedup_scale.py" --sizes "$N" --tmp "$TMP_DIR" --keep --engine ray \
    --ray-address "127.0.0.1:$PORT" | tee "$TMP_DIR/ray.txt"
a=$(grep -o 'pairs [0-9a-f]*' "$TMP_DIR/local.txt"); b=$(grep -o 'pairs [0-9a-f]*' "$TMP_DIR/ray.txt")
if [ "$a" = "$b" ]; then echo "same clusters on both engines ($a)"; else echo "DIFFERENT: local $a, ray $b"; exit 1; fi

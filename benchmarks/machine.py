"""The machine a benchmark ran on, for its report: CPU model, core count and the flags that decide bf16 speed.

    from machine import cpu_info, describe   # in a script in benchmarks/ (its folder is on sys.path)
"""

from __future__ import annotations

import os
import shutil
import subprocess

# Flags that tell whether bf16 (and wide SIMD in general) runs in hardware.
KEY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni", "avx_vnni")


def cpu_info() -> dict:
    """lscpu's model name, CPU count and flags (all of them, and the bf16-relevant subset)."""
    fields = {}
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}
    flags = fields.get("Flags", "").split()
    if not flags and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return {"model": fields.get("Model name", "unknown"), "cpus": os.cpu_count(),
            "family_model": f"{fields.get('CPU family', '?')}/{fields.get('Model', '?')}",
            "key_flags": [f for f in KEY_FLAGS if f in flags], "flags": " ".join(flags)}


def describe(info: dict) -> str:
    """One line: 'AMD EPYC (family/model 26/2), 2 CPUs; avx2 avx512f avx512_bf16 ...'."""
    return (f"CPU: {info['model']} (family/model {info['family_model']}), {info['cpus']} CPUs; "
            f"key flags: {' '.join(info['key_flags']) or 'none'}")

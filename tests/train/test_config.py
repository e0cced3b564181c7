"""train.config (and the lr schedule) stay torch-free: sweeps, studies and mixture optimisation build and
compare run configs without paying for a torch import. Checked in a fresh interpreter, whose sys.modules
this test session (which imports torch) cannot pollute."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_importing_train_config_does_not_import_torch():
    script = ("import sys\nimport train.config, train.schedule\n"
              "cfg = train.config.RunConfig(mixture='m', schedule='wsd', warmup_steps=2)\n"
              "assert train.schedule.wsd_decay_start(cfg, 100) == 80\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"


def test_the_loop_reexports_what_moved():
    """Code and docs name these through train.loop; they live in config / schedule / parallelize / checkpoint."""
    from train import checkpoint, config, loop, parallelize, schedule

    assert loop.RunConfig is config.RunConfig
    assert (loop.get_lr, loop.warmup_steps, loop.wsd_decay_start) == (schedule.get_lr, schedule.warmup_steps,
                                                                     schedule.wsd_decay_start)
    assert (loop.dist_info, loop.parallelize) == (parallelize.dist_info, parallelize.parallelize)
    for name in ("checkpoint_path", "stable_checkpoint_path", "final_weights_path", "save_checkpoint",
                 "save_final_weights", "load_final_weights", "check_config", "load_checkpoint"):
        assert getattr(loop, name) is getattr(checkpoint, name), name

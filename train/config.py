"""What a training run is: `RunConfig`, the options of `train.loop.train_run`, one per `--flag`.

Torch-free, so that planning code (sweeps, studies, mixture optimisation) can build, compare and hash run
configs without importing torch; `train.schedule` holds the learning-rate schedule they imply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from train import phases as phasing


@dataclass
class RunConfig:
    run_id: str = ""                        # "": f"{mixture}.{model}.{tokens}.s{seed}"
    mixture: str = ""
    model: str = "cpu-4m"                   # preset name, see train.model.PRESETS
    tokens: int = 5_000_000                 # training token budget
    seq_len: int | None = None              # None: the mixture's (a different value is an error)
    batch_size: int = 16                    # sequences per micro-batch per rank
    grad_accum: int = 1                     # micro-batches per optimizer step
    lr_peak: float = 3e-3
    lr_min: float | None = None             # None: lr_peak / 10
    warmup_steps: int | None = None         # None: 5% of the steps
    schedule: str = "cosine"                # 'cosine' or 'wsd' (warmup-stable-decay)
    decay_frac: float = 0.2                 # wsd: the final fraction of steps that decays linearly to lr_min
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0                  # max global grad norm; 0 disables clipping
    seed: int = 0                           # initialisation and data order
    eval_every_tokens: int | None = None    # None: ten validations per run (plus the last step)
    eval_tokens: int = 65_536               # tokens per validation set per validation
    checkpoint_every_tokens: int | None = None  # None: at every validation
    log_every_steps: int = 10               # train-loss rows in run_metrics
    stop_after_steps: int | None = None     # checkpoint and stop early (status stays 'running'; resumable)
    compile: bool = False                   # torch.compile the model
    device: str = "auto"                    # 'auto': cuda:LOCAL_RANK when CUDA is present, else cpu
    dtype: str = "auto"                     # autocast dtype: 'auto' (bf16 on GPU and on CPUs with AMX or
                                            # AVX512-BF16, else fp32), 'bf16', 'fp32'
    fsdp: bool = False                      # FSDP2 fully_shard instead of DDP (GPU, world > 1)
    num_threads: int = 0                    # torch CPU threads; 0 leaves torch's default
    progress: bool = True
    sweep: str | None = None
    keep_optimizer: bool = False            # a finished run keeps checkpoint.pt (optimizer state) too
    weights_dtype: str = "fp32"             # dtype of the finished run's model.safetensors: 'fp32' or 'bf16'
    branch_from: str | None = None          # wsd: start from this run's stable-phase checkpoint at our decay start
    branch_tokens: str = ""                 # wsd: smaller budgets ("64k,128k") branching off this run: keep a
                                            # stable-phase checkpoint at each one's decay start (its own
                                            # budget too: the anneal point of cooldowns on other mixtures)
    phases: list = dataclasses.field(default_factory=list)  # [{until, mixture}, ...]: the data changes at
                                            # phase boundaries (train.phases); mixture: the last phase's

    def __post_init__(self):
        if self.schedule not in ("cosine", "wsd"):
            raise ValueError(f"unknown schedule {self.schedule!r}; use 'cosine' or 'wsd'")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"unknown dtype {self.dtype!r}; use 'auto', 'bf16' or 'fp32'")
        if self.weights_dtype not in ("bf16", "fp32"):
            raise ValueError(f"unknown weights_dtype {self.weights_dtype!r}; use 'bf16' or 'fp32'")
        if (self.branch_from or self.branch_tokens) and (self.schedule != "wsd" or self.warmup_steps is None):
            raise ValueError("budget branches (branch_from / branch_tokens) need schedule='wsd' and an explicit "
                             "warmup_steps, the same for the trunk and its branches")
        if min(self.tokens, self.batch_size, self.grad_accum) < 1:
            raise ValueError("tokens, batch_size and grad_accum must be positive")
        self.phases = phasing.parse_phases(self.phases)
        if self.phases:
            if self.mixture and self.mixture != self.phases[-1]["mixture"]:
                raise ValueError(f"mixture {self.mixture!r} is not the last phase's ({self.phases[-1]['mixture']!r});"
                                 " with phases, leave mixture out or name the last phase's mixture")
            self.mixture = self.phases[-1]["mixture"]
        if not self.run_id:
            self.run_id = f"{self.mixture}.{self.model}.{self.tokens}.s{self.seed}"


# Fields that change how a run executes but not what it computes: a resume may change them.
# keep_optimizer / weights_dtype change only what a finished run leaves on disk; branch_from / branch_tokens
# change how the first steps are obtained or what is kept, not the result (see train.loop's docstring).
_RESUMABLE_CHANGES = {"stop_after_steps", "compile", "device", "num_threads", "progress", "log_every_steps",
                      "checkpoint_every_tokens", "sweep", "keep_optimizer", "weights_dtype", "branch_from",
                      "branch_tokens"}
# Fields in which a branch differs from its trunk (all others must match for the branch to be exact); its
# mixture and phases may differ too when the data of the steps before the branch point is the same
# (`train.checkpoint.check_config` compares what the two schedules read up to there). Torch-free here, so a
# sweep can keep these options out of its run ids without importing torch.
_BRANCH_CHANGES = _RESUMABLE_CHANGES | {"run_id", "tokens", "mixture", "phases"}

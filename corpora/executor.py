"""One executor for every per-shard step: a pure map over items (shards, files, batches) plus a reduce.

Steps never know where they run (the datatrove lesson). A step is a picklable top-level function of one item
(or a `Stateful` class built once per worker: a loaded tokenizer, a generator model); the executor runs a
list of items through it and hands results back to the driver, which caches them and alone writes the
store's catalog. Engines:

- ``local``: in-process, or a pool of worker processes on this machine (spawn, or a forkserver that
  preloads the step's modules). Workers ignore SIGINT: Ctrl-C stops the pool and raises KeyboardInterrupt in
  the driver alone, so the user sees one line, not a traceback per worker.
- ``ray``: Ray Data (``from_items`` + ``map_batches``; tasks for functions, an actor pool for `Stateful`
  steps) on a local Ray or a cluster (``--ray-address`` / ``$RAY_ADDRESS``). Workers read inputs by path, so
  the store must be visible at the same path on every node. Ray is an optional extra (``.[ray]``).

    with get_executor("local", workers=2) as ex:
        for i, counts in ex.map(count_shard, paths, desc="unigrams cc", sizes=[s.n_bytes for s in shards]):
            cache(i, counts)
        total = ex.map_reduce(count_shard, paths, reduce=add_counts)
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import logging
import multiprocessing as mp
import os
import pickle
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
ENGINE_ENV = "SYNTHMIX_ENGINE"


class Stateful:
    """A map whose state is built once per worker: `cls(*args, **kwargs)`, then `obj(item)` per item."""

    def __init__(self, cls: type, *args: Any, **kwargs: Any):
        self.cls, self.args, self.kwargs = cls, args, kwargs

    def build(self) -> Callable[[Any], Any]:
        return self.cls(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"Stateful({self.cls.__qualname__})"


class EngineError(RuntimeError):
    """The engine cannot be used as asked (Ray missing, cluster unreachable): a one-line message."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _as_callable(fn: Callable | Stateful) -> Callable[[Any], Any]:
    return fn.build() if isinstance(fn, Stateful) else fn


def _order(n: int, sizes: Sequence[float] | None) -> list[int]:
    """Largest items first, so no worker is left alone with a big one at the end."""
    if sizes is None:
        return list(range(n))
    if len(sizes) != n:
        raise ValueError(f"sizes has {len(sizes)} entries for {n} items")
    return sorted(range(n), key=lambda i: -sizes[i])


class Executor:
    """Runs a map over items; `map` yields (index, result) as each item finishes."""

    name = "base"

    def __init__(self, workers: int = 0):
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = all cores), not {workers}")
        self.workers = workers or cpu_count()

    def map(self, fn: Callable | Stateful, items: Sequence[Any], *, desc: str | None = None,
            sizes: Sequence[float] | None = None, max_workers: int | None = None, progress: bool = True,
            preload: Sequence[str] = (), resources: dict | None = None) -> Iterator[tuple[int, Any]]:
        """Yield (index into items, result) as each item finishes. `resources` (Ray only) asks for e.g.
        {"num_cpus": 2} or {"num_gpus": 1} per task or actor (default: one CPU)."""
        items = list(items)
        if not items:
            return
        self._prepare()
        order = _order(len(items), sizes)
        total = float(sum(sizes)) if sizes is not None else float(len(items))
        bar = tqdm(total=total, desc=desc, disable=not progress or desc is None, unit="item" if sizes is None else "",
                   leave=False)
        workers = min(self.workers, max_workers or self.workers, len(items))
        try:
            for i, result in self._run(fn, items, order, workers, preload, resources):
                bar.update(sizes[i] if sizes is not None else 1)
                yield i, result
        finally:
            bar.close()

    def map_reduce(self, fn: Callable | Stateful, items: Sequence[Any], reduce: Callable[[Any, Any], Any],
                   **kwargs: Any) -> Any:
        """The map's results combined with an associative `reduce`, in item order (so a reduce that is
        associative but not commutative, e.g. concatenation, gives the same answer on every engine)."""
        results: dict[int, Any] = dict(self.map(fn, items, **kwargs))
        if not results:
            raise ValueError("map_reduce over no items")
        return functools.reduce(reduce, (results[i] for i in sorted(results)))

    def _prepare(self) -> None:
        """Called before each map (the Ray engine starts or joins Ray here)."""

    def _run(self, fn, items, order, workers, preload, resources) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ local
# A local worker that dies while running an item is replaced and the item retried this many times (like Ray).
LOCAL_MAX_RETRIES = 3
_worker_fn: Callable[[Any], Any] | None = None


def _init_worker(payload: bytes) -> None:
    """Pool initializer: ignore Ctrl-C (the driver handles it) and build the step once per process."""
    global _worker_fn
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_fn = _as_callable(pickle.loads(payload))


def _call_worker(job: tuple[int, Any]) -> tuple[int, Any]:
    i, item = job
    return i, _worker_fn(item)


class LocalExecutor(Executor):
    """In-process for one worker, else a pool of worker processes on this machine.

    A worker that dies while it runs an item (killed, out of memory) is replaced and its item run again,
    up to LOCAL_MAX_RETRIES times per item, as Ray retries a lost task; the pool keeps exactly `workers`
    items in flight, so only the items that were running when a worker died are charged an attempt. An
    exception raised by the step itself is not retried: it stops the pool and reaches the driver as itself."""

    name = "local"

    def _run(self, fn, items, order, workers, preload, resources):
        if workers <= 1:
            call = _as_callable(fn)
            for i in order:
                yield i, call(items[i])
            return
        # spawn (or a forkserver preloading only the step's modules), never fork: the driver holds
        # Polars/DuckDB/BLAS thread pools that a fork would copy mid-state
        if preload:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(list(preload))
        else:
            ctx = mp.get_context("spawn")
        payload = pickle.dumps(fn)
        pending, attempts = collections.deque(order), collections.Counter()
        while pending:  # one pool per round; a round ends when a worker dies (the pool is then broken)
            pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(payload,))
            running: dict[Future, int] = {}
            try:
                lost: list[int] = []
                while (pending or running) and not lost:
                    while pending and len(running) < workers:
                        i = pending.popleft()
                        running[pool.submit(_call_worker, (i, items[i]))] = i
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        i = running.pop(future)
                        if isinstance(future.exception(), BrokenProcessPool):
                            lost.append(i)
                        else:
                            yield future.result()  # the step's own exception is raised here
                if lost:  # a worker died: every item still running is charged an attempt and queued again
                    _kill_workers(pool)
                    for i in sorted(set(lost) | set(running.values()), key=order.index, reverse=True):
                        attempts[i] += 1
                        if attempts[i] > LOCAL_MAX_RETRIES:
                            raise EngineError(f"a worker died running item {i} ({items[i]!r:.80}) "
                                              f"{attempts[i]} times (killed, or out of memory?); gave up "
                                              f"after {LOCAL_MAX_RETRIES} retries")
                        pending.appendleft(i)
                    log.warning("a local worker died; retrying %d item(s) in a new pool", len(lost) + len(running))
                pool.shutdown(wait=True)
            except BaseException:
                _kill_workers(pool)  # Ctrl-C, or a step's error: no worker keeps running, none prints a traceback
                raise


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now (ProcessPoolExecutor has no public way to before Python 3.14)."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.kill()
    pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------- selection
def resolve_engine(engine: str | None = None) -> str:
    """`engine`, else $SYNTHMIX_ENGINE, else local."""
    return engine or os.environ.get(ENGINE_ENV) or "local"


def check_engine(engine: str | None = None, ray_address: str | None = None) -> str:
    """The resolved engine, checked before a command does any work (writes a corpus, a run row): a known
    name, Ray importable, and a cluster address where something listens. EngineError otherwise."""
    name = resolve_engine(engine)
    if name not in ENGINES:
        where = f"${ENGINE_ENV}={name!r}" if engine is None else f"--engine {name!r}"
        raise EngineError(f"unknown engine in {where}: use one of {', '.join(ENGINES)}")
    if name == "ray":
        try:
            import ray  # noqa: F401  (optional extra)
        except ImportError:
            raise EngineError("--engine ray needs Ray: pip install -e '.[ray]' (ray[data]==2.60.0)") from None
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            from corpora.executor_ray import _check_reachable

            _check_reachable(address)
    return name


@dataclasses.dataclass(frozen=True)
class ExecutorConfig:
    """Where a step's map runs, one value for every step (ingest, export, tokenization, unigram counts,
    near-duplicate signatures, generation): `engine` local or ray (None: $SYNTHMIX_ENGINE, else local),
    `workers` (0: auto), `ray_address` (None: $RAY_ADDRESS, else a local Ray). Steps never branch on the
    engine: they ask `plan`/`executor` and run what it gives them."""

    engine: str | None = None
    workers: int = 0
    ray_address: str | None = None

    def __post_init__(self):
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}: use one of {', '.join(ENGINES)}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an integer >= 0 (0 = auto), not {self.workers!r}")

    @property
    def engine_name(self) -> str:
        return resolve_engine(self.engine)

    def check(self) -> str:
        """The resolved engine, checked before a command writes anything (`check_engine`)."""
        return check_engine(self.engine, self.ray_address)

    def plan(self, n_items: int | None = None, auto_workers: int | None = None) -> tuple[str, int]:
        """The one rule: (engine, workers) for a map over `n_items`. On Ray, `workers` tasks or actors (0:
        the cluster's CPUs), never in-process (the user asked for Ray). Locally, `workers`, else the step's
        `auto_workers` (what pays for a job of this size: 1 for small ones), else one per core, capped at the
        items; one worker means in-process, more a pool of processes."""
        cap = n_items if n_items is not None else 1 << 30
        if self.engine_name == "ray":
            return "ray", min(self.workers, cap) if self.workers else 0
        want = self.workers or (auto_workers if auto_workers else cpu_count())
        return "local", max(1, min(want, cap))

    def in_process(self, n_items: int | None = None, auto_workers: int | None = None) -> bool:
        return self.plan(n_items, auto_workers) == ("local", 1)

    def executor(self, n_items: int | None = None, auto_workers: int | None = None) -> Executor:
        engine, workers = self.plan(n_items, auto_workers)
        if engine == "ray":
            from corpora.executor_ray import RayExecutor

            return RayExecutor(workers, self.ray_address)
        return LocalExecutor(workers)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExecutorConfig:
        """From `add_engine_args`'s flags (--engine, --workers, --ray-address)."""
        return cls(getattr(args, "engine", None), getattr(args, "workers", 0) or 0, getattr(args, "ray_address", None))


class RunsOnExecutor:
    """Mixin of a step's config dataclass that has the fields `engine`, `workers` and `ray_address`."""

    @property
    def execution(self) -> ExecutorConfig:
        return ExecutorConfig(self.engine, self.workers, self.ray_address)


def get_executor(engine: str | None = None, workers: int = 0, ray_address: str | None = None) -> Executor:
    """`ExecutorConfig(engine, workers, ray_address).executor()`: `engine` None means $SYNTHMIX_ENGINE, else local."""
    try:
        return ExecutorConfig(engine, workers, ray_address).executor()
    except ValueError as e:
        raise EngineError(str(e)) from None


def add_engine_args(parser: argparse.ArgumentParser, *, workers: int | None = 0,
                    workers_help: str = "worker processes or Ray tasks (default 0: auto, one per core for "
                                        "large jobs, in-process for small ones; on Ray the cluster's CPUs)") -> None:
    """The execution flags every per-shard step shares: --engine, --workers, --ray-address
    (`ExecutorConfig.from_args`). `workers=None`: the tool has no --workers."""
    g = parser.add_argument_group("execution (corpora.executor)")
    g.add_argument("--engine", choices=ENGINES, default=None,
                   help=f"where per-shard work runs: local processes or a Ray cluster (default: ${ENGINE_ENV} or local)")
    if workers is not None:
        g.add_argument("--workers", type=int, default=workers, help=workers_help)
    g.add_argument("--ray-address", default=None,
                   help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")


_RAY_NAMES = ("RayExecutor", "RAY_MAX_RETRIES", "RAY_OBJECT_STORE_BYTES", "_RayStateful", "_check_reachable")


def __getattr__(name: str):
    """The Ray engine lives in `corpora.executor_ray` (which builds on this module, so it is imported on use)."""
    if name in _RAY_NAMES:
        import corpora.executor_ray

        return getattr(corpora.executor_ray, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

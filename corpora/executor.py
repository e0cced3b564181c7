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
import functools
import multiprocessing as mp
import os
import pickle
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tqdm import tqdm

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
            preload: Sequence[str] = ()) -> Iterator[tuple[int, Any]]:
        items = list(items)
        if not items:
            return
        order = _order(len(items), sizes)
        total = float(sum(sizes)) if sizes is not None else float(len(items))
        bar = tqdm(total=total, desc=desc, disable=not progress or desc is None, unit="item" if sizes is None else "",
                   leave=False)
        workers = min(self.workers, max_workers or self.workers, len(items))
        try:
            for i, result in self._run(fn, items, order, workers, preload):
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

    def _run(self, fn, items, order, workers, preload) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ local
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
    """In-process for one worker, else a pool of worker processes on this machine."""

    name = "local"

    def _run(self, fn, items, order, workers, preload):
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
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(pickle.dumps(fn),))
        try:
            yield from pool.imap_unordered(_call_worker, [(i, items[i]) for i in order])
            pool.close()
        except BaseException:
            pool.terminate()  # Ctrl-C, or a step's error: no worker keeps running, none prints a traceback
            raise
        finally:
            pool.join()


# -------------------------------------------------------------------------------------------------- ray
class RayExecutor(Executor):
    """Ray Data: items as rows, the step as `map_batches` (tasks, or an actor pool for `Stateful`)."""

    name = "ray"

    def __init__(self, workers: int = 0, address: str | None = None):
        super().__init__(workers)
        try:
            import ray  # noqa: F401  (optional extra)
        except ImportError:
            raise EngineError("--engine ray needs Ray: pip install -e '.[ray]'") from None
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._started_here = False

    def _ensure(self) -> None:
        import ray
        if ray.is_initialized():
            return
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
        except Exception as e:  # a cluster that is not there: one line, not Ray's traceback
            raise EngineError(f"cannot start or join Ray ({self.address or 'local'}): {e}") from None
        self._started_here = True

    def _run(self, fn, items, order, workers, preload):
        import ray
        self._ensure()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        rows = [{"i": i, "item": pickle.dumps(items[i])} for i in order]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        if isinstance(fn, Stateful):
            ds = ds.map_batches(_RayStateful, fn_constructor_args=(pickle.dumps(fn),), batch_size=1,
                                concurrency=workers, batch_format="pyarrow")
        else:
            ds = ds.map_batches(_ray_call, fn_args=(pickle.dumps(fn),), batch_size=1, concurrency=workers,
                                batch_format="pyarrow")
        for row in ds.iter_rows():
            yield int(row["i"]), pickle.loads(row["result"])

    def close(self) -> None:
        if self._started_here:
            import ray
            ray.shutdown()
            self._started_here = False


def _ray_apply(call: Callable[[Any], Any], batch) -> dict:
    idx = batch.column("i").to_pylist()
    items = batch.column("item").to_pylist()
    return {"i": idx, "result": [pickle.dumps(call(pickle.loads(x))) for x in items]}


def _ray_call(batch, payload: bytes) -> dict:
    return _ray_apply(pickle.loads(payload), batch)


class _RayStateful:
    def __init__(self, payload: bytes):
        self.call = pickle.loads(payload).build()

    def __call__(self, batch) -> dict:
        return _ray_apply(self.call, batch)


# ------------------------------------------------------------------------------------------- selection
def get_executor(engine: str | None = None, workers: int = 0, ray_address: str | None = None) -> Executor:
    """`engine` None means $SYNTHMIX_ENGINE, else local."""
    engine = engine or os.environ.get(ENGINE_ENV) or "local"
    if engine == "local":
        return LocalExecutor(workers)
    if engine == "ray":
        return RayExecutor(workers, ray_address)
    raise EngineError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help=f"where per-shard work runs: local processes or a Ray cluster "
                             f"(default: ${ENGINE_ENV} or local)")
    parser.add_argument("--ray-address", default=None,
                        help="join this Ray cluster (default: $RAY_ADDRESS, else start a local Ray)")


def executor_from_args(args: argparse.Namespace, workers: int = 0) -> Executor:
    return get_executor(getattr(args, "engine", None), workers, getattr(args, "ray_address", None))


"""The Ray engine of the executor (`corpora.executor`): Ray Data over the items, tasks for a function, an
actor pool for a `Stateful` step; joins a cluster or starts a local Ray. Imported by `corpora.executor`."""
from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corpora.executor import LOCAL_MAX_RETRIES, EngineError, Executor, Stateful, cpu_count

log = logging.getLogger("corpora.executor")

# -------------------------------------------------------------------------------------------------- ray
# A worker that dies (killed, out of memory, node lost) is retried by Ray this many times; an exception
# raised by the step itself is not retried (it would fail again) and reaches the driver as itself.
RAY_MAX_RETRIES = LOCAL_MAX_RETRIES
# Object store of a Ray started here: items and results are small (paths in, counts/paths out), and the
# machine may be shared, so not Ray's default of 30% of memory.
RAY_OBJECT_STORE_BYTES = 1 << 30


class RayExecutor(Executor):
    """Ray Data: items as rows (`from_items`), the step as `map_batches`: tasks for a function, an actor
    pool for a `Stateful` step. Joins `address` ($RAY_ADDRESS) or starts a local Ray with `workers` CPUs;
    a Ray that is already running in this process (a test session, a notebook) is used as it is.

    `max_workers=1` does not run in-process here (the user asked for Ray: the driver may be a thin head
    node); it caps the tasks or actors in flight."""

    name = "ray"

    def __init__(self, workers: int = 0, address: str | None = None):
        super().__init__(workers)
        self._auto_workers = workers == 0
        try:
            import ray  # noqa: F401  (optional extra)
        except ImportError:
            raise EngineError("--engine ray needs Ray: pip install -e '.[ray]' (ray[data]==2.60.0)") from None
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self._started_here = False
        self.startup_s = 0.0  # seconds spent starting or joining Ray (0 when it was already running)

    def start(self) -> RayExecutor:
        """Start or join Ray now (otherwise the first `map` does), e.g. to time start-up apart."""
        import logging
        import time

        import ray

        if not ray.is_initialized():
            t0 = time.perf_counter()
            if not self.address:
                # workers import steps by module name: give a local Ray's workers (which inherit the
                # driver's environment) the driver's own import path, as spawned processes get it; a
                # cluster's nodes need synthmix installed (README)
                _export_import_path()
            if self.address:
                _check_reachable(self.address)
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False, logging_level=logging.ERROR)
                else:
                    # address="local": a new Ray of our own, never a cluster someone started on this
                    # machine (ray.init would join that one); all the machine's cores as Ray's CPUs (a step may ask for several per actor); the
                    # map's concurrency is capped at `workers`
                    ray.init(address="local", num_cpus=max(self.workers, cpu_count()), include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR, object_store_memory=RAY_OBJECT_STORE_BYTES)
            except Exception as e:  # a cluster that is not there: one line, not Ray's traceback
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
                raise EngineError(f"cannot start or join {where}: {_first_line(e)}; check --ray-address / "
                                  "$RAY_ADDRESS (`ray status` on the head node)") from None
            self._started_here = True
            self.startup_s = time.perf_counter() - t0
        if self._auto_workers:  # 0 = all of the cluster's CPUs
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        _quiet_ray_data()
        return self

    _prepare = start

    def _run(self, fn, items, order, workers, preload, resources):
        import ray

        resources = dict(resources or {})
        have = ray.cluster_resources()
        for key, want in (("CPU", resources.get("num_cpus", 1)), ("GPU", resources.get("num_gpus") or 0)):
            if want and have.get(key, 0) < want:  # Ray would wait for them forever
                raise EngineError(f"each worker of this step needs {want:g} {key}, the Ray cluster has "
                                  f"{have.get(key, 0):g}: add nodes with {key}s, or lower the step's request")
        rows = [{"i": i, "item": pickle.dumps(items[i])} for i in order]
        # one item per block and batch: items are whole shards or batches, largest first, so that Ray
        # schedules them one by one as workers free up (as the local pool's imap does)
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        common = dict(batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
                      num_cpus=resources.pop("num_cpus", 1), num_gpus=resources.pop("num_gpus", None),
                      **resources)
        with warnings.catch_warnings():
            # retry limits have no named parameter of map_batches in Ray 2.60 (Ray's defaults retry a dead
            # worker forever, which hangs a run whose worker is killed every time, e.g. out of memory)
            warnings.simplefilter("ignore", DeprecationWarning)
            if isinstance(fn, Stateful):
                # the step travels inside the actor class, not as constructor arguments in the object
                # store (which a restarted actor may no longer find: ray-project/ray#53727)
                actor = type("StatefulStep", (_RayStateful,), {"payload": pickle.dumps(fn)})
                ds = ds.map_batches(actor,
                                    compute=ray.data.ActorPoolStrategy(size=workers),
                                    max_restarts=RAY_MAX_RETRIES, max_task_retries=RAY_MAX_RETRIES, **common)
            else:
                ds = ds.map_batches(_ray_call, fn_args=(pickle.dumps(fn),),
                                    compute=ray.data.TaskPoolStrategy(size=workers),
                                    max_retries=RAY_MAX_RETRIES, **common)
        try:
            for batch in ds.iter_batches(batch_size=1, batch_format="pyarrow", prefetch_batches=0):
                for i, result in zip(batch.column("i").to_pylist(), batch.column("result").to_pylist()):
                    ok, value = pickle.loads(result)
                    if not ok:
                        raise value  # the step's own exception, as the local engine raises it
                    yield int(i), value
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as e:
            if _is_ray_error(e):
                raise _engine_error(e) from None
            raise

    def close(self) -> None:
        if self._started_here:
            import ray
            ray.shutdown()
            self._started_here = False


def _export_import_path() -> None:
    import sys

    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    root = str(Path(__file__).resolve().parents[1])
    paths = [root] + [p for p in sys.path if p and os.path.isdir(p)
                      and not any(os.path.realpath(p).startswith(i) for i in installed)]
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, on a cluster address where nothing listens (ray.init would retry
    for minutes). 'auto' and names Ray resolves itself are left to Ray."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise EngineError(f"no Ray cluster at {address} ({e.strerror or e}): start one with `ray start --head` "
                          "on the head node, or fix --ray-address / $RAY_ADDRESS") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _is_ray_error(e: BaseException) -> bool:
    return type(e).__module__.startswith("ray.") or any(
        c.__module__.startswith("ray.") for c in type(e).__mro__[1:-2])


def _engine_error(e: BaseException) -> EngineError:
    """Ray's failure (a worker that died more often than retried, an actor that could not be built, a
    lost node) as one line: its last meaningful line, not Ray's traceback."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(("File ", "^"))]
    return EngineError(f"Ray failed ({type(e).__name__}): {lines[-1] if lines else e!r}"[:500])


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or per-run banners: the step shows its own tqdm bar, errors are raised."""
    import logging

    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    ctx.execution_options.verbose_progress = False
    for name in ("ray.data", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _ray_apply(call: Callable[[Any], Any], batch) -> dict:
    """(ok, result) per item; a step's exception travels back as a value, so the driver raises the very
    exception (type and message) the local engine would (Ray would turn it into a RayTaskError)."""
    out = []
    for x in batch.column("item").to_pylist():
        try:
            out.append(pickle.dumps((True, call(pickle.loads(x)))))
        except Exception as e:
            out.append(_pickled_error(e))
    return {"i": batch.column("i").to_pylist(), "result": out}


def _pickled_error(e: Exception) -> bytes:
    try:
        data = pickle.dumps((False, e))
        pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
        return data
    except Exception:
        return pickle.dumps((False, RuntimeError(f"{type(e).__name__}: {e}")))


def _ray_call(batch, payload: bytes) -> dict:
    try:
        call = pickle.loads(payload)
    except Exception as e:  # e.g. a node without synthmix installed: the step's module is not there
        error = _pickled_error(EngineError(f"a Ray worker cannot load the step: {type(e).__name__}: {e} "
                                           "(install synthmix on every node)"))
        return {"i": batch.column("i").to_pylist(), "result": [error] * batch.num_rows}
    return _ray_apply(call, batch)


class _RayStateful:
    """The actor of a `Stateful` step: builds the step once, then maps batches of one item."""

    payload: bytes = b""  # the pickled Stateful, set on a subclass per map

    def __init__(self):
        try:
            self.call = pickle.loads(self.payload).build()
        except Exception as e:  # e.g. a model that is not there: raised on the driver as itself
            self.call, self.error = None, e

    def __call__(self, batch) -> dict:
        if self.call is None:
            return {"i": batch.column("i").to_pylist(), "result": [_pickled_error(self.error)] * batch.num_rows}
        return _ray_apply(self.call, batch)



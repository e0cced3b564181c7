"""The local executor: same results in-process and in a pool, state built once per worker, errors and
Ctrl-C reach the driver alone. (The Ray engine's equivalence tests live in tests/test_engines.py.)"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from corpora.executor import EngineError, ExecutorConfig, LocalExecutor, Stateful, cpu_count, get_executor


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("bad item 3")
    return x


class Offset:
    """A stateful step: counts how many times it was built in this process."""
    built = 0

    def __init__(self, k: int):
        Offset.built += 1
        self.k = k

    def __call__(self, x: int) -> tuple[int, int]:
        return x + self.k, os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_map_gives_every_index_once(workers):
    with LocalExecutor(workers) as ex:
        got = dict(ex.map(square, range(7), sizes=[1, 9, 3, 5, 2, 8, 4]))
    assert got == {i: i * i for i in range(7)}


def test_map_reduce_in_item_order_on_both_paths():
    # concatenation is associative, not commutative: the reduce must follow item order
    one = LocalExecutor(1).map_reduce(lambda x: [x], list(range(5)), reduce=lambda a, b: a + b)
    two = LocalExecutor(2).map_reduce(square, list(range(5)), reduce=lambda a, b: a + b)
    assert one == [0, 1, 2, 3, 4]
    assert two == sum(i * i for i in range(5))


def test_stateful_built_once_in_process():
    Offset.built = 0
    with LocalExecutor(1) as ex:
        got = dict(ex.map(Stateful(Offset, 10), [1, 2, 3]))
    assert [v[0] for _, v in sorted(got.items())] == [11, 12, 13]
    assert Offset.built == 1


def test_stateful_one_instance_per_worker_process():
    with LocalExecutor(2) as ex:
        got = dict(ex.map(Stateful(Offset, 1), list(range(8))))
    assert sorted(v[0] for v in got.values()) == list(range(1, 9))
    pids = {v[1] for v in got.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


@pytest.mark.parametrize("workers", [1, 2])
def test_error_in_step_reaches_driver(workers):
    with pytest.raises(ValueError, match="bad item 3"):
        dict(LocalExecutor(workers).map(fail_on_three, range(6)))


def test_max_workers_one_runs_in_process():
    with LocalExecutor(2) as ex:
        got = dict(ex.map(Stateful(Offset, 0), [1, 2], max_workers=1))
    assert {v[1] for v in got.values()} == {os.getpid()}


def test_engine_selection(monkeypatch):
    assert get_executor("local").name == "local"
    monkeypatch.setenv("SYNTHMIX_ENGINE", "local")
    assert get_executor().name == "local"
    with pytest.raises(EngineError, match="unknown engine"):
        get_executor("spark")


def test_one_rule_decides_where_a_map_runs(monkeypatch):
    """ExecutorConfig.plan: every step asks it, none branches on the engine's name."""
    monkeypatch.delenv("SYNTHMIX_ENGINE", raising=False)
    auto = ExecutorConfig()
    assert auto.plan(10) == ("local", min(cpu_count(), 10))  # auto: one worker per core, capped at the items
    assert auto.plan(10, auto_workers=1) == ("local", 1) and auto.in_process(10, auto_workers=1)  # a small job
    assert ExecutorConfig(workers=4).plan(2) == ("local", 2)  # never more workers than items
    assert ExecutorConfig(workers=3).plan(10, auto_workers=1) == ("local", 3)  # the user's --workers wins
    assert ExecutorConfig(workers=1).in_process(10) and not ExecutorConfig(workers=2).in_process(10)
    # Ray: never in-process, 0 workers = the cluster's CPUs
    assert ExecutorConfig("ray").plan(10, auto_workers=1) == ("ray", 0)
    assert ExecutorConfig("ray", workers=4).plan(2) == ("ray", 2) and not ExecutorConfig("ray", 1).in_process(5)
    monkeypatch.setenv("SYNTHMIX_ENGINE", "ray")
    assert ExecutorConfig().plan(3)[0] == "ray"  # the environment's engine when the flag is not given
    for bad in ({"engine": "spark"}, {"workers": -1}):
        with pytest.raises(ValueError):
            ExecutorConfig(**bad)
    with LocalExecutor(1) as ex:  # in-process means this process
        assert {pid for _, (_, pid) in ex.map(Stateful(Offset, 0), [1, 2])} == {os.getpid()}


def test_ctrl_c_stops_pool_without_worker_tracebacks(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from corpora.executor import LocalExecutor
        from tests.corpora.test_executor import sleepy
        if __name__ == "__main__":
            print("started", flush=True)
            try:
                for _ in LocalExecutor(2).map(sleepy, range(8)):
                    pass
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(130)
    """))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": root})
    assert proc.stdout.readline().strip() == "started"
    time.sleep(2.5)  # workers spawned and sleeping
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in out
    assert "Traceback" not in err, err


def sleepy(x: int) -> int:
    time.sleep(20)
    return x


def die_once(job: tuple[int, str]) -> int:
    """Kills its own worker (kill -9) the first time it meets item 2: a marker file remembers across workers
    (the Ray engine's tests use it too)."""
    x, marker = job
    if x == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def die_always(x: int) -> int:
    if x == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def test_a_killed_worker_is_replaced_and_its_item_retried(tmp_path, caplog):
    marker = str(tmp_path / "died")
    with LocalExecutor(2) as ex:
        got = dict(ex.map(die_once, [(x, marker) for x in range(5)]))
    assert os.path.exists(marker)  # the worker did die
    assert got == {x: x * x for x in range(5)}
    assert "a local worker died; retrying" in caplog.text


def test_a_worker_that_dies_every_time_fails_after_bounded_retries(monkeypatch):
    import corpora.executor

    monkeypatch.setattr(corpora.executor, "LOCAL_MAX_RETRIES", 1)  # one retry: two pools, not four
    with pytest.raises(EngineError, match="died running item 1 .* 2 times .*gave up after 1 retries"):
        dict(LocalExecutor(2).map(die_always, range(2)))

"""The resumable job runner: local worker processes by default, or an existing Ray cluster.

The driver keeps the job graph, hands ready jobs (all dependencies finished) to the workers in
priority order, and writes each result file itself, atomically, when the job returns. A kill -9 at any
moment therefore loses at most the jobs in flight: local workers die with the driver (Linux
``PR_SET_PDEATHSIG``), a half-trained model's temporary folder is removed at the next start, and
every finished job is recognised by its key and never recomputed. After every job the outputs
(results.json, per_example.json, study.md, the seed-0 checkpoints) are regenerated from the stored
results, so a partial run always leaves valid outputs.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import Job, StudyConfig
from .store import Store, StudyError

RAY_INSTALL = "pip install 'ray[default]'"
Log = Callable[[str], None]


def _log(line: str) -> None:
    print(line, flush=True)


def _die_with_parent(threads: int) -> None:
    """Worker initialiser: die when the driver dies (so nothing keeps writing after a kill -9), set threads."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    import torch

    torch.set_num_threads(threads)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _LocalPool:
    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads
        self.pool = self._new()

    def _new(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                      initializer=_die_with_parent, initargs=(self.threads,))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return self.pool.submit(fn, *args)
        except cf.process.BrokenProcessPool:  # a worker died (out of memory, killed): the failed job was reported
            self.pool = self._new()
            return self.pool.submit(fn, *args)

    def wait(self, futures: list[Any]) -> list[Any]:
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return list(done)

    @staticmethod
    def result(fut: Any) -> Any:
        return fut.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayPool:
    def __init__(self, address: str, threads: int) -> None:
        try:
            import ray
        except ImportError as err:
            raise StudyError(f"--ray needs the optional package ray; install it with: {RAY_INSTALL}") from err
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise StudyError(f"cannot connect to the Ray cluster at {address!r} ({err}); start one with "
                                 "`ray start --head` or pass its address.") from err
        from .jobs import execute

        self.remote = ray.remote(num_cpus=threads)(execute)

    def submit(self, _fn: Callable[..., Any], *args: Any) -> Any:
        return self.remote.remote(*args)

    def wait(self, futures: list[Any]) -> list[Any]:
        done, _ = self.ray.wait(futures, num_returns=1)
        return done

    def result(self, fut: Any) -> Any:
        return self.ray.get(fut)

    def close(self) -> None:
        return None


def run_jobs(jobs: list[Job], store: Store, workers: int = 1, threads: int = 1, ray_address: str | None = None,
             on_result: Callable[[], None] | None = None, log: Log = _log, max_jobs: int | None = None) -> dict[str, Any]:
    """Run every unfinished job (dependencies first, then priority order); returns counts and failures."""
    from .jobs import execute

    if not isinstance(workers, int) or workers < 1:
        raise StudyError(f"workers={workers!r} is invalid: it must be an integer >= 1.")
    finished = store.finished()
    results = {k: v["result"] for k, v in finished.items()}
    by_key = {j.key: j for j in jobs}
    pending = [j for j in jobs if j.key not in results]
    total, done_before = len(jobs), len(jobs) - len(pending)
    log(f"study: {total} jobs, {done_before} already finished, {len(pending)} to run "
        f"({'ray ' + ray_address if ray_address else f'{workers} local worker(s)'}, {threads} thread(s) each)")
    pool: Any = _RayPool(ray_address, threads) if ray_address else _LocalPool(workers, threads)
    in_flight: dict[Any, tuple[Job, float]] = {}
    failed: dict[str, str] = {}
    ran = 0
    try:
        while pending or in_flight:
            blocked = {k for k in failed}
            ready = [j for j in pending if all(d in results for d in j.deps)]
            capacity = workers if not ray_address else max(1, workers)
            while ready and len(in_flight) < capacity and (max_jobs is None or ran + len(in_flight) < max_jobs):
                job = ready.pop(0)
                pending.remove(job)
                deps = {d: results[d] for d in job.deps}
                fut = pool.submit(execute, job.to_dict(), deps, str(store.work), threads)
                in_flight[fut] = (job, time.perf_counter())
                log(f"[start] {job.label} (job {job.key})")
            if not in_flight:
                stuck = [j for j in pending if any(d in blocked or d not in by_key for d in j.deps)]
                if max_jobs is not None and ran >= max_jobs:
                    break
                for j in stuck:
                    pending.remove(j)
                    failed[j.key] = "a dependency failed"
                if not stuck:
                    break
                continue
            for fut in pool.wait(list(in_flight)):
                job, t0 = in_flight.pop(fut)
                wall = time.perf_counter() - t0
                try:
                    result = pool.result(fut)
                except Exception as err:  # one failed job must not stop the others; it is reported
                    failed[job.key] = f"{type(err).__name__}: {err}"
                    log(f"[failed] {job.label}: {failed[job.key]}")
                    continue
                store.save(job.to_dict(), result, wall, _now())
                results[job.key] = result
                ran += 1
                log(f"[{done_before + ran}/{total}] {job.label}: {wall:.1f} s")
                if on_result is not None:
                    on_result()
    finally:
        pool.close()
    return {"total": total, "finished": done_before + ran, "ran": ran, "failed": failed}


def default_work(out: Path) -> Path:
    return out / "work"


def cpu_count() -> int:
    return os.cpu_count() or 1


def plan_jobs(cfg: StudyConfig) -> list[Job]:
    """The job graph for ``cfg`` with the dataset sizes and the readings that exist now."""
    from gccs_core.data import load_dataset
    from gccs_core.losses import LOSSES

    from .plan import build_jobs

    n_train = len(load_dataset(cfg.dataset, "train"))
    n_test = len(load_dataset(cfg.dataset, "test"))
    return build_jobs(cfg, tuple(LOSSES), n_train, n_test)

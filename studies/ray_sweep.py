"""Sweeps that outgrow one machine: each (method, setting, seed) run as a Ray task.

The driver keeps the one run cache (studies/runs.py): tasks return their records and the driver stores
them, so a sweep resumes whichever way its runs were made (locally, in processes, or on a cluster), and
workers need no shared file system. One GPU per task with `--device cuda`, one CPU otherwise.

    ray start --head --port 6379                        # on the head node (or: a Slurm allocation, below)
    python -m studies.bench --protocol paper-n --ray 127.0.0.1:6379
    # Slurm: in the batch script, `ray start --head` on the first node and `ray start --address HEAD:6379`
    # on the others (srun --nodes=1 --ntasks=1 -w NODE ...), then run the line above on the head.
"""
from __future__ import annotations

import os

from studies.runs import RunSpec, cached, measure, store


def _task(spec: RunSpec, in_process: bool) -> dict:
    from d2p_helpers.record import set_threads
    set_threads(1)
    return measure(spec, in_process=in_process)


def run_on_ray(specs: list[RunSpec], address: str | None = None, cache_dir=None, gpus_per_task: float = 0,
               in_process: bool = True, log=print) -> list[dict]:
    """Every spec's record: cached ones as they are, the others measured as Ray tasks and then cached."""
    import ray
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise SystemExit("ray: give --ray ADDRESS (host:port of a running head) or set RAY_ADDRESS")
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=0 if gpus_per_task else 1, num_gpus=gpus_per_task)(_task)
        pending = {remote.remote(s, in_process): s for s in specs if cached(s, cache_dir) is None}
        log(f"[ray] {len(pending)} of {len(specs)} runs submitted to {address}")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            store(ray.get(done[0]), cache_dir)
            log(f"[ray] done {spec.method} {spec.setting} seed {spec.seed} ({len(pending)} left)")
    finally:
        ray.shutdown()
    return [cached(s, cache_dir) for s in specs]

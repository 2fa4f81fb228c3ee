"""`tsf-extract --ray`: the same jobs on a Ray cluster, one worker per GPU (or per CPU slot).

Ray (the optional `cluster` extra, imported only here and only when asked for) places the
workers and moves the small messages; it schedules nothing of ours beyond that. Each worker is
an actor that loads the bundle and its backend once, then is handed one video at a time by the
driver as soon as it is idle ("pulling" from the list), so fast workers take more videos. The
driver keeps the skip rule (complete outputs are not resubmitted), the output layout (each job's
output path was fixed by `expand_jobs`) and the failure policy:
- bad input (a TsfError in the worker) fails that video once, as in the plain command;
- anything else (a worker process lost with its node or to the OOM killer, a CUDA error) is
  retried on another worker, up to `retries` more times; a lost actor is replaced.
Outputs are written by the workers, atomically, so they must go to storage every node sees.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import replace
from typing import Callable

from ..errors import BackendError, TsfError
from ..extras import require
from ..extractor import ExtractSettings, Extractor
from ..jobs import Job, Summary

log = logging.getLogger("tsf")

DEFAULT_RETRIES = 2


class ExtractWorker:
    """Body of the Ray actor (wrapped with ray.remote at run time, so importing needs no Ray)."""

    def __init__(self, model: str, settings: ExtractSettings, cpu_threads: int | None = None):
        if cpu_threads:
            # A CPU slot runs the CPU engine on as many threads as CPUs Ray reserved for it; the
            # default (every core of the node) would oversubscribe a node running several slots.
            settings = replace(settings, device="cpu", threads=cpu_threads)
        self.extractor = Extractor(model, settings)
        self.extractor.backend  # load the engine now: a worker that cannot run fails at start
        self.host = socket.gethostname()

    def process(self, job: Job) -> tuple[str, str | None, float, str, int | None]:
        """(status "done" | "failed", error, seconds, host, rows); unexpected exceptions propagate (retried)."""
        started = time.monotonic()
        try:
            rows = self.extractor.process(job).rows
        except TsfError as e:
            return "failed", str(e), time.monotonic() - started, self.host, None
        return "done", None, time.monotonic() - started, self.host, rows


def worker_plan(resources: dict, device: str, cpus_per_worker: int) -> tuple[int, dict]:
    """(number of workers, resources per worker): one per GPU, else one per CPU slot."""
    gpus = int(resources.get("GPU", 0))
    if gpus and device != "cpu":
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    if device.startswith("cuda"):
        raise BackendError("--device cuda, but the Ray cluster has no GPUs")
    slots = int(resources.get("CPU", 0)) // cpus_per_worker
    if slots < 1:
        raise BackendError(f"the Ray cluster has {resources.get('CPU', 0)} CPUs, fewer than "
                           f"--ray-cpus-per-worker {cpus_per_worker}")
    return slots, {"num_cpus": cpus_per_worker}


def run_on_ray(jobs: list[Job], model: str, settings: ExtractSettings, *, address: str | None,
               is_done: Callable[[Job], bool],
               report: Callable[[str], None], record=None, cpus_per_worker: int = 4,
               retries: int = DEFAULT_RETRIES, worker_class=ExtractWorker) -> Summary:
    """Process `jobs` on Ray (connecting to `address`, or reusing an initialised Ray); same Summary as run_jobs.

    `record(job, status, seconds=, error=, rows=, worker=host, attempts=n)` hears each outcome (the run report).
    `worker_class`: the actor's body (tests substitute one that fails on purpose).
    """
    ray = require("ray", "cluster", "--ray", BackendError)
    record = record or (lambda *args, **kwargs: None)
    summary = Summary()
    todo = deque()
    for job in jobs:
        if is_done(job):
            summary.skipped.append(job)
            record(job, "skipped")
        else:
            todo.append((job, 1))
    if not todo:
        return summary

    started_here = not ray.is_initialized()
    if started_here:
        start_ray(ray, address)
    try:
        count, resources = worker_plan(ray.cluster_resources(), settings.device, cpus_per_worker)
        count = min(count, len(todo))
        cpu_threads = resources["num_cpus"] if "num_gpus" not in resources else None
        actor_class = ray.remote(**resources)(worker_class)
        log.info("ray: %d workers (%s each) for %d videos", count,
                 ", ".join(f"{k.removeprefix('num_')}={v}" for k, v in resources.items()), len(todo))

        model = os.path.abspath(model)

        def new_worker():
            return actor_class.remote(model, settings, cpu_threads)

        idle = [new_worker() for _ in range(count)]
        running: dict = {}
        while todo or running:
            while idle and todo:
                worker = idle.pop()
                job, attempt = todo.popleft()
                # Absolute paths: a worker on another node does not share the driver's working directory.
                remote_job = Job(job.video.absolute(), job.output.absolute())
                running[worker.process.remote(remote_job)] = (worker, job, attempt, time.monotonic())
            (ref,), _ = ray.wait(list(running), num_returns=1)
            worker, job, attempt, submitted = running.pop(ref)
            try:
                status, error, seconds, host, rows = ray.get(ref)
            except ray.exceptions.RayError as e:
                lost = isinstance(e, ray.exceptions.RayActorError)
                idle.append(new_worker() if lost else worker)
                reason = f"worker lost ({type(e).__name__})" if lost else _last_line(e)
                if attempt <= retries:
                    log.warning("%s: %s; retrying (attempt %d of %d)", job.video, reason, attempt + 1, retries + 1)
                    todo.append((job, attempt + 1))
                    continue
                message = f"{job.video}: failed {attempt} times on Ray: {reason}"
                summary.failed.append((job, message))
                report(f"error: {message}")
                record(job, "failed", seconds=time.monotonic() - submitted, error=message, attempts=attempt)
                continue
            idle.append(worker)
            if status == "done":
                summary.done.append(job)
                log.info("%s -> %s (%s, %.1f s)", job.video, job.output, host, seconds)
            else:
                summary.failed.append((job, error))
                report(f"error: {error}")
            record(job, status, seconds=seconds, error=error, rows=rows, worker=host, attempts=attempt)
    finally:
        if started_here:
            ray.shutdown()
    return summary


def start_ray(ray, address: str | None) -> None:
    """Connect to the Ray of `--ray [ADDRESS]`: ADDRESS, else $RAY_ADDRESS, else a new local Ray of
    this command's own ("local"). ray.init's own default would also join whatever cluster was last
    started on this machine (/tmp/ray/ray_current_cluster: on a shared node, another user's job);
    `--ray=auto` asks for that one."""
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(target)
    try:
        ray.init(address=target, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError... for a bad address
        raise BackendError(f"cannot start or reach Ray at {target}: {_last_line(e)}") from None


# ray.init retries an address where nothing answers for about ten minutes, printing a warning every
# few seconds; a HOST:PORT that accepts no connection in this long is an error at once.
RAY_CONNECT_SECONDS = 30


def _check_reachable(address: str) -> None:
    """For HOST:PORT and ray://HOST:PORT addresses: something accepts connections there."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # "local", "auto" or another form: ray.init words what is wrong with it
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_SECONDS):
            pass
    except OSError as e:
        reason = f"nothing answered in {RAY_CONNECT_SECONDS} s" if isinstance(e, TimeoutError) else \
            (e.strerror or str(e)).lower()
        raise BackendError(f"cannot reach Ray at {address}: {reason}") from None


def _last_line(error: Exception) -> str:
    # RayTaskError's text carries the remote traceback; its last line names the exception.
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__

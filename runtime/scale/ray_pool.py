"""`tsf-extract --ray`: the same jobs on a Ray cluster, one worker per GPU (or per CPU slot).

With `--videos-at-once N`, N workers share each GPU through Ray's fractional GPUs (`num_gpus`
1/N each): N processes, each with its own copy of the model, each video with 1/N of the GPU's
NVDEC engines as decoders.

Ray (the optional `cluster` extra, imported only here and only when asked for) places the
workers and moves the small messages; it schedules nothing of ours beyond that. Each worker is
an actor that loads the bundle and its backend once, then is handed one video at a time by the
driver as soon as it is idle ("pulling" from the list), so fast workers take more videos. The
driver keeps the skip rule (complete outputs are not resubmitted), the output layout (each job's
output path was fixed by `expand_jobs`) and the failure policy:
- bad input (a TsfError in the worker) fails that video once, as in the plain command;
- anything else (a worker process lost with its node or to the OOM killer, a CUDA error) is
  retried on another worker, up to `jobs.RETRIES` more times; a lost actor is replaced.
Outputs are written by the workers, atomically, so they must go to storage every node sees.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import replace

from ..errors import BackendError, TsfError
from ..extras import require
from ..extractor import ExtractSettings, Extractor
from ..jobs import RETRIES, Job, JobLoop, Outcome, attempt

log = logging.getLogger("tsf")


class ExtractWorker:
    """Body of the Ray actor (wrapped with ray.remote at run time, so importing needs no Ray)."""

    def __init__(self, model: str, settings: ExtractSettings, cpu_threads: int | None = None):
        if cpu_threads:
            # A CPU slot runs the CPU engine on as many threads as CPUs Ray reserved for it, and
            # one decoder; the defaults (every core of the node) would oversubscribe a node
            # running several slots.
            settings = replace(settings, device="cpu", threads=cpu_threads, decoders=settings.decoders or 1)
        self.extractor = Extractor(model, settings)
        self.extractor.sharing = 1 if cpu_threads else settings.videos_at_once or 1  # workers on this GPU
        self.extractor.backend  # load the engine now: a worker that cannot run fails at start
        self.host = socket.gethostname()

    def process(self, job: Job) -> Outcome:
        """The job's outcome (bad input: "failed"); any other exception propagates, to be retried."""
        return replace(attempt(job, self.extractor.process, keep_going_on_bugs=False), host=self.host)


def worker_plan(resources: dict, device: str, cpus_per_worker: int, per_gpu: int = 1) -> tuple[int, dict]:
    """(number of workers, resources per worker): `per_gpu` per GPU, else one per CPU slot."""
    gpus = int(resources.get("GPU", 0))
    if gpus and device != "cpu":
        return gpus * per_gpu, {"num_gpus": 1 / per_gpu if per_gpu > 1 else 1, "num_cpus": 1}
    if device.startswith("cuda"):
        raise BackendError("--device cuda, but the Ray cluster has no GPUs")
    slots = int(resources.get("CPU", 0)) // cpus_per_worker
    if slots < 1:
        raise BackendError(f"the Ray cluster has {resources.get('CPU', 0)} CPUs, fewer than "
                           f"--ray-cpus-per-worker {cpus_per_worker}")
    return slots, {"num_cpus": cpus_per_worker}


def run_on_ray(jobs: list[Job], extractor: Extractor, loop: JobLoop, *, address: str | None,
               cpus_per_worker: int = 4):
    """Process `jobs` on Ray (connecting to `address`, or reusing an initialised Ray) under the
    job loop's policy; `extractor` (here, on the driver) decides what is skipped before anything is
    sent, and each worker holds one like it (`ExtractWorker`)."""
    ray = require("ray", "cluster", "--ray", BackendError)
    todo = deque()
    for job in jobs:
        try:
            decision = extractor.check(job)
        except TsfError as e:
            loop.finish(job, Outcome("failed", error=str(e)))
            continue
        if decision.skip:
            loop.finish(job, Outcome("skipped", decision.rows))
        else:
            todo.append((job, 1))
    if not todo:
        return loop.summary

    started_here = not ray.is_initialized()
    if started_here:
        start_ray(ray, address)
    try:
        settings = extractor.settings
        count, resources = worker_plan(ray.cluster_resources(), settings.device, cpus_per_worker,
                                       settings.videos_at_once or 1)
        count = min(count, len(todo))
        cpu_threads = resources["num_cpus"] if "num_gpus" not in resources else None
        actor_class = ray.remote(**resources)(ExtractWorker)
        log.info("ray: %d workers (%s each) for %d videos", count,
                 ", ".join(f"{k.removeprefix('num_')}={v}" for k, v in resources.items()), len(todo))

        model = os.path.abspath(extractor.bundle.dir)

        def new_worker():
            return actor_class.remote(model, settings, cpu_threads)

        idle = [new_worker() for _ in range(count)]
        running: dict = {}
        while todo or running:
            while idle and todo:
                worker = idle.pop()
                job, tries = todo.popleft()
                # Absolute paths: a worker on another node does not share the driver's working directory.
                remote_job = Job(job.video.absolute(), job.output.absolute())
                running[worker.process.remote(remote_job)] = (worker, job, tries, time.monotonic())
            (ref,), _ = ray.wait(list(running), num_returns=1)
            worker, job, tries, submitted = running.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as e:
                lost = isinstance(e, ray.exceptions.RayActorError)
                idle.append(new_worker() if lost else worker)
                reason = f"worker lost ({type(e).__name__})" if lost else _last_line(e)
                if tries <= RETRIES:
                    log.warning("%s: %s; retrying (attempt %d of %d)", job.video, reason, tries + 1, RETRIES + 1)
                    todo.append((job, tries + 1))
                    continue
                loop.finish(job, Outcome("failed", error=f"{job.video}: failed {tries} times on Ray: {reason}",
                                         seconds=time.monotonic() - submitted, attempts=tries))
                continue
            idle.append(worker)
            if outcome.status == "done":
                log.info("%s -> %s (%s, %.1f s)", job.video, job.output, outcome.host, outcome.seconds)
            loop.finish(job, replace(outcome, attempts=tries))
    finally:
        if started_here:
            ray.shutdown()
    return loop.summary


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

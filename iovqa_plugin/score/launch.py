"""Starting the processes of a data-parallel scoring job, and placing each on its device.

Two ways in, mirroring how LLaMA-Factory runs training:

* ``iovqa score ... --nproc N`` (or ``FORCE_TORCHRUN=1 NPROC_PER_NODE=N iovqa score ...``, LLaMA-Factory's
  variables) on one machine: this process starts N workers of the same command (ranks 0..N-1, each writing
  its log beside ``--out``), shows one progress bar, and merges their parts. If a worker dies, the others are
  stopped and the command fails naming the rank and its log.
* ``torchrun --nproc_per_node N [--nnodes ...] $(which iovqa) score ...``: every rank scores its share; rank 0
  also shows the progress bar and merges. torchrun itself stops the job, naming the rank, when one dies.

Each rank loads the model once on ``cuda:LOCAL_RANK`` when CUDA is available, else on the CPU with
(usable cores / processes on this machine) threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Optional, Sequence

from .parallel import JobProgress, ParallelError, ScoringJob, World

# Launcher variables a worker must not inherit: it is one rank of this job, not a launcher of its own.
_LAUNCHER_VARIABLES = ("FORCE_TORCHRUN", "NPROC_PER_NODE", "NNODES", "NODE_RANK", "RANK", "WORLD_SIZE",
                       "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class RankFailed(RuntimeError):
    """A worker process of the job exited before finishing its share."""


def _truthy(value: Optional[str]) -> bool:
    return str(value).lower() in ("1", "true", "y", "yes")


def device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_process_count(requested: Optional[str], environ: Optional[Mapping[str, str]] = None) -> int:
    """Processes to start on this machine: ``--nproc N`` or ``auto`` (one per visible GPU, else 1); without
    ``--nproc``, LLaMA-Factory's ``FORCE_TORCHRUN=1`` with ``NPROC_PER_NODE`` (default: one per GPU); else 1."""
    env = os.environ if environ is None else environ
    if requested is None:
        if not _truthy(env.get("FORCE_TORCHRUN")):
            return 1
        if int(env.get("NNODES", "1") or 1) > 1:
            raise ParallelError("several nodes (NNODES > 1): start `iovqa score` on every node with torchrun")
        requested = env.get("NPROC_PER_NODE") or "auto"
    if str(requested).strip().lower() == "auto":
        return max(1, device_count())
    try:
        count = int(requested)
    except ValueError:
        raise ParallelError(f"--nproc must be a number or 'auto', got {requested!r}") from None
    if count < 1:
        raise ParallelError(f"--nproc must be >= 1, got {count}")
    return count


def cpu_threads(local_size: int) -> int:
    """Torch threads of one of ``local_size`` CPU processes: the usable cores shared out evenly."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_size))


def rank_device(world: World) -> str:
    """Put this rank on its device: ``cuda:LOCAL_RANK``, or the CPU with its share of the cores."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if world.local_rank >= count:
            raise ParallelError(f"rank {world.rank}: LOCAL_RANK {world.local_rank} but {count} GPU(s) visible; "
                                f"start at most {count} processes per node")
        torch.cuda.set_device(world.local_rank)
        return f"cuda:{world.local_rank}"
    torch.set_num_threads(cpu_threads(world.local_size))
    return "cpu"


def start_barrier(world: World) -> None:
    """Wait until every rank has taken its part over (torchrun's rendezvous, gloo; nothing else is exchanged)."""
    import datetime

    import torch.distributed as dist

    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ParallelError(f"RANK/WORLD_SIZE are set but not {', '.join(missing)}: start the ranks with torchrun, "
                            "or use `iovqa score --nproc N` on one machine")
    dist.init_process_group("gloo", rank=world.rank, world_size=world.size, timeout=datetime.timedelta(hours=1))
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_local(job: ScoringJob, argv: Sequence[str], progress: bool = True) -> dict[str, Any]:
    """Run ``iovqa <argv>`` as ``job.size`` workers on this machine; the merged counts once all have finished."""
    command = [sys.executable, "-m", "iovqa_plugin.cli", *argv, "--part-only"]
    base = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    # the cores shared out before the workers' numeric libraries start their thread pools (as torchrun limits
    # them); this process does not import torch, which would only delay the workers' start
    base["OMP_NUM_THREADS"] = str(cpu_threads(job.size))
    os.makedirs(os.path.dirname(os.path.abspath(job.out)), exist_ok=True)
    workers: list[subprocess.Popen] = []
    try:
        for rank in range(job.size):
            env = dict(base, RANK=str(rank), WORLD_SIZE=str(job.size), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(job.size))
            with open(job.log(rank), "w", encoding="utf-8") as log:
                workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                stdin=subprocess.DEVNULL))
        with JobProgress(job, progress, f"iovqa score ({job.size} processes)"):
            while True:
                codes = [worker.poll() for worker in workers]
                failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
                if failed:
                    rank, code = failed[0]
                    raise RankFailed(_failure(job, rank, code))
                if all(code == 0 for code in codes):
                    break
                time.sleep(0.2)
    finally:
        _stop(workers)
    return job.merge()


def _failure(job: ScoringJob, rank: int, code: int) -> str:
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    try:
        with open(job.log(rank), encoding="utf-8", errors="replace") as handle:
            tail = [line.rstrip() for line in handle.readlines()[-12:] if line.strip()]
    except OSError:
        tail = []
    last = ("; its last lines:\n    " + "\n    ".join(tail)) if tail else ""
    return (f"rank {rank} of {job.size} {how} before finishing its share; its log: {job.log(rank)}{last}\n"
            "The other ranks were stopped. Re-run the same command: it scores only what is missing.")


def _stop(workers: Sequence[subprocess.Popen], grace_s: float = 10.0) -> None:
    """Stop the workers still running (SIGTERM, then SIGKILL after ``grace_s``)."""
    running = [w for w in workers if w.poll() is None]
    for worker in running:
        worker.terminate()
    deadline = time.time() + grace_s
    for worker in running:
        try:
            worker.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

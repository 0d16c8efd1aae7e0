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

A rank never outlives the process that started it (:func:`die_with_parent`): a worker left running would go on
writing its part file under a re-run of the same command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from .parallel import JobProgress, ParallelError, ScoringJob, World

# Launcher variables a worker must not inherit: it is one rank of this job, not a launcher of its own.
_LAUNCHER_VARIABLES = ("FORCE_TORCHRUN", "NPROC_PER_NODE", "NNODES", "NODE_RANK", "RANK", "WORLD_SIZE",
                       "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


PARENT_VARIABLE = "IOVQA_SCORE_PARENT"  # the pid of the `--nproc` launcher, set for its workers
LOCK_FD_VARIABLE = "IOVQA_SCORE_LOCK_FD"  # the output lock's descriptor, inherited by the workers
PR_SET_PDEATHSIG = 1  # linux/prctl.h


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


@contextlib.contextmanager
def process_group(world: World) -> Iterator[Callable[[], None]]:
    """torchrun's ranks joined in a gloo group (nothing is exchanged): yields the barrier where they meet."""
    import datetime

    import torch.distributed as dist

    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ParallelError(f"RANK/WORLD_SIZE are set but not {', '.join(missing)}: start the ranks with torchrun, "
                            "or use `iovqa score --nproc N` on one machine")
    dist.init_process_group("gloo", rank=world.rank, world_size=world.size, timeout=datetime.timedelta(hours=1))
    try:
        yield dist.barrier
    finally:
        dist.destroy_process_group()


def die_with_parent(parent: int, death_signal: bool = True, poll_s: float = 1.0) -> None:
    """End this process as soon as process ``parent`` is gone (SIGKILL: nothing to save, a part file cut
    mid-row is repaired on resume).

    ``death_signal``: also ask Linux to send it the moment the parent dies (prctl PR_SET_PDEATHSIG). The kernel
    sends it when the *thread* that started this process ends, so it is asked for only where that thread is
    the parent's main one (the ``--nproc`` launcher); a watchdog thread comparing getppid() with ``parent``
    covers every case (torchrun's ranks, other systems) within ``poll_s``. A parent that died before this call
    ends this process here.
    """
    if death_signal and sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl in this C library: the watchdog alone
            pass
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="iovqa-score-parent-watch", daemon=True).start()


def keep_lock_to_self() -> None:
    """Keep the inherited output lock out of the processes this worker starts (libraries run helpers such as
    ``ldconfig``): one of them left running after the workers end would still hold the lock, and the re-run
    that resumes the file would be refused."""
    fd = os.environ.get(LOCK_FD_VARIABLE)
    if fd:
        try:
            os.set_inheritable(int(fd), False)
        except OSError:  # not open here (started by hand with the variable set): nothing to keep
            pass


def run_local(job: ScoringJob, argv: Sequence[str], progress: bool = True,
              lock_fd: Optional[int] = None) -> dict[str, Any]:
    """Run ``iovqa <argv>`` as ``job.size`` workers on this machine; the merged counts once all have finished.

    ``lock_fd``: the locked file of ``job.out`` (see ``output_lock``), handed to every worker so that the lock
    lasts until the last of them has ended.
    """
    command = [sys.executable, "-m", "iovqa_plugin.cli", *argv, "--part-only"]
    base = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    base[PARENT_VARIABLE] = str(os.getpid())
    if lock_fd is not None:
        base[LOCK_FD_VARIABLE] = str(lock_fd)
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
                                                stdin=subprocess.DEVNULL,
                                                pass_fds=() if lock_fd is None else (lock_fd,)))
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

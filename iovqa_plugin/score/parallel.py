"""Data-parallel scoring: every process scores its share of the rows into a part file; one process merges them.

Beside ``--out`` (say ``preds.csv``), a job of N processes keeps, for each rank r:

* ``preds.csv.part-<r>-of-<N>.csv`` (+ ``.meta.json``): rank r's rows, a
  :class:`~.prediction_file.PredictionFile` whose identity is the run's plus the share (rank, process
  count, the share's videos), resumable like ``preds.csv`` itself;
* ``preds.csv.part-<r>-of-<N>.csv.done.json``: written when rank r has finished its share: the part's row
  count and SHA-256, and the rank's counts. A part is merged only while its content still matches it;
* ``preds.csv.part-<r>-of-<N>.log``: the rank's output, when ``--nproc`` started it.

Rank r's share is rows r, r + N, r + 2N, ... of the input: deterministic, disjoint, sizes differing by at
most one. Before scoring, a rank takes over the rows of its share already scored in ``preds.csv`` or in the
part files of a run with another process count (so a changed N resumes too); a part that is damaged, or was
written for another share, is scored again; one written by a different scoring run is refused like
``preds.csv`` is. The merger (rank 0 under torchrun, the launching process with ``--nproc``) writes
``preds.csv`` with every row in input order and the meta of a single-process run, then removes all part files.

No collective communication is needed beyond one start-up barrier under torchrun (so that the merger never
mistakes a completion mark of an earlier run for one of this run).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from .prediction_file import (DamagedFile, PredictionFile, Row, check_resumable, check_resume, file_header,
                              meta_path, one_per_video, read_meta, read_records, remove_prediction_file,
                              take_over, warn, write_meta, write_records)
from .scoring_loop import score_todo

_PART = re.compile(r"\.part-(\d+)-of-(\d+)\.csv$")


class ParallelError(ValueError):
    """A data-parallel launch that cannot work as asked (bad launcher environment, options)."""


class PartError(RuntimeError):
    """A part file that cannot be merged (missing, unfinished, or changed after its rank finished it)."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel job, from the launcher's environment (torchrun's variables)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "World":
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()

        def number(key: str, default: int) -> int:
            value = env.get(key)
            if value is None:
                return default
            try:
                return int(value)
            except ValueError:
                raise ParallelError(f"environment variable {key}={value!r} is not an integer") from None

        size = number("WORLD_SIZE", 1)
        rank = number("RANK", 0)
        world = cls(rank, size, number("LOCAL_RANK", rank), number("LOCAL_WORLD_SIZE", size))
        if size < 1 or not 0 <= rank < size or not 0 <= world.local_rank < world.local_size:
            raise ParallelError(f"inconsistent launcher environment: RANK={rank} WORLD_SIZE={size} "
                                f"LOCAL_RANK={world.local_rank} LOCAL_WORLD_SIZE={world.local_size}")
        return world


def share(rows: Sequence[Row], rank: int, size: int) -> list[Row]:
    """Rank ``rank``'s rows among ``size`` processes: every size-th row from row ``rank`` (balanced, disjoint)."""
    return list(rows[rank::size])


def part_files(out: str) -> list[tuple[str, int, int]]:
    """(path, rank, process count) of every part file beside ``out``, of any process count."""
    found = []
    for path in glob.glob(glob.escape(out) + ".part-*-of-*.csv"):
        match = _PART.search(path)
        if match and path[: match.start()] == out:
            found.append((path, int(match.group(1)), int(match.group(2))))
    return sorted(found, key=lambda item: (item[2], item[1]))


def remove_part_files(out: str) -> None:
    """Remove every part file beside ``out`` (parts, metas, completion marks, logs, temporary files)."""
    for path in glob.glob(glob.escape(out) + ".part-*-of-*"):
        if os.path.isfile(path):
            os.remove(path)


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ScoringJob:
    """Rows scored into ``out`` by ``size`` processes: shares, part files, progress and the merge."""

    def __init__(self, out: str, rows: Sequence[Row], size: int, identity: dict[str, Any],
                 save_probabilities: bool):
        if size < 1:
            raise ParallelError(f"the process count must be >= 1, got {size}")
        self.out = out
        self.rows = list(rows)
        self.size = size
        self.identity = identity  # the run's (model, inputs, mode): the same as a single-process run's
        self.save_probabilities = save_probabilities
        self.header = file_header(save_probabilities, identity.get("dimensions", ()))
        self._counters: dict[int, _RowCounter] = {}

    # ---- layout
    def share(self, rank: int) -> list[Row]:
        return share(self.rows, rank, self.size)

    def part(self, rank: int) -> str:
        return f"{self.out}.part-{rank}-of-{self.size}.csv"

    def marker(self, rank: int) -> str:
        return self.part(rank) + ".done.json"

    def log(self, rank: int) -> str:
        return f"{self.out}.part-{rank}-of-{self.size}.log"

    def part_identity(self, rank: int) -> dict[str, Any]:
        videos = "\n".join(row[0] for row in self.share(rank))
        shard = {"rank": rank, "world_size": self.size, "rows": len(self.share(rank)),
                 "videos_sha256": hashlib.sha256(videos.encode("utf-8")).hexdigest()}
        return dict(self.identity, shard=shard)

    def check_resume(self, own_parts: bool = True) -> None:
        """Refuse, before anything is loaded or written, what resuming could not use: ``out`` or a part file
        written by a different scoring run, or damaged, or an ``out`` holding videos the input has not.
        ``own_parts``: also this job's parts (not while its ranks may be writing them)."""
        parts = [path for path, _, size in part_files(self.out) if own_parts or size != self.size]
        check_resume(self.out, dict(self.identity, columns=self.header), self.rows, parts)

    def remove_all(self) -> None:
        """Start over: ``out``, its meta and every part file go."""
        remove_prediction_file(self.out)
        remove_part_files(self.out)

    # ---- one rank
    def run_rank(self, rank: int, make_scorer: Callable[[], Any], mode: str, batch_size: int,
                 restart: bool = False, claimed: Optional[Callable[[], None]] = None) -> dict[str, Any]:
        """Score rank ``rank``'s share into its part file, resuming, and mark the part finished.

        The model (``make_scorer``) is loaded only when something is left to score. ``claimed`` runs once this
        rank has taken its part over (its earlier completion mark removed), before any scoring.
        """
        if not restart:
            self.check_resume(own_parts=False)  # before touching anything
        part = self._open_part(rank, restart)
        rows = self.share(rank)
        if not restart:
            self._take_over(part, rows)
        if claimed is not None:
            claimed()
        todo = [row for row in rows if row[0] not in part.done]
        stats: dict[str, Any] = {"rows": len(rows), "skipped_done": len(rows) - len(todo), "scored": 0,
                                 "errors": 0, "changed": part.changed}
        if todo:
            began = time.time()
            scorer = make_scorer()
            stats["load_s"] = time.time() - began
            stats["score_start"] = time.time()
            try:
                stats.update(score_todo(scorer, todo, part, mode, batch_size, progress=False))
            finally:
                part.finish(row[0] for row in rows)
            stats["score_end"] = time.time()
        else:
            part.finish(row[0] for row in rows)
        self._mark_finished(rank, stats)
        return stats

    def _open_part(self, rank: int, restart: bool) -> PredictionFile:
        path, marker = self.part(rank), self.marker(rank)
        problem = None if restart or not os.path.exists(path) else self._part_problem(rank)
        if problem is None and not restart and os.path.exists(path):
            check_resumable(path, dict(self.part_identity(rank), columns=self.header))  # before touching anything
        if os.path.exists(marker):
            os.remove(marker)  # the part is being worked on again
        if problem:
            warn(f"{path} {problem}: rank {rank} scores its share again")
        return PredictionFile(path, self.part_identity(rank), self.save_probabilities, self.share(rank),
                              restart=restart or problem is not None)

    def _part_problem(self, rank: int) -> Optional[str]:
        """Why rank ``rank``'s existing part cannot be resumed, or None (a part of another run is left for
        PredictionFile to refuse)."""
        path, marker = self.part(rank), self.marker(rank)
        expected = dict(self.part_identity(rank), columns=self.header)
        meta = read_meta(path)
        if meta is None:
            return "has no readable meta"
        if {k: v for k, v in meta.items() if k != "shard"} != {k: v for k, v in expected.items() if k != "shard"}:
            return None
        if meta.get("shard") != expected["shard"]:
            return "was written for another share of the rows (the input changed)"
        try:
            header, _ = read_records(path)
        except DamagedFile as err:
            return f"is damaged ({err})"
        if header != self.header:
            return "has other columns than its meta"
        if os.path.exists(marker):
            try:
                with open(marker, encoding="utf-8") as handle:
                    recorded = json.load(handle)["sha256"]
            except (OSError, ValueError, KeyError, TypeError):
                return "has an unreadable completion mark"
            if recorded != sha256(path):
                return "changed after its rank finished it"
        return None

    def _take_over(self, part: PredictionFile, rows: Sequence[Row]) -> None:
        """Rows of this share already scored in ``out`` or in parts of a run with another process count."""
        others = [path for path, _, size in part_files(self.out) if size != self.size]  # not this run's: being written
        take_over(part, rows, [self.out, *others], ignore=("shard",))

    def _mark_finished(self, rank: int, stats: dict[str, Any]) -> None:
        path = self.part(rank)
        _, body = read_records(path)
        mark = {"rows": len(body), "sha256": sha256(path), "stats": stats}
        tmp = f"{self.marker(rank)}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(mark, handle, indent=2)
        os.replace(tmp, self.marker(rank))

    # ---- the merger
    def finished(self) -> list[int]:
        return [rank for rank in range(self.size) if os.path.exists(self.marker(rank))]

    def progress(self) -> int:
        """Rows written to the part files so far (resumed ones included): for the job's progress bar."""
        total = 0
        for rank in range(self.size):
            counter = self._counters.setdefault(rank, _RowCounter(self.part(rank)))
            total += min(counter.rows(), len(self.share(rank)))
        return total

    def wait(self, poll_s: float = 0.5, hint_after_s: float = 600.0) -> None:
        """Block until every rank has finished its part (the launcher ends the job if a rank dies)."""
        start, hinted = time.time(), False
        while len(self.finished()) < self.size:
            if not hinted and time.time() - start > hint_after_s:
                missing = [r for r in range(self.size) if not os.path.exists(self.part(r))]
                if missing:
                    warn(f"still no part file from rank(s) {missing} (e.g. {self.part(missing[0])}): every rank "
                         "must write --out on a file system the merging rank reads")
                hinted = True
            time.sleep(poll_s)

    def merge(self) -> dict[str, Any]:
        """Write ``out`` from the finished parts, in input order, one row per video (the newest); remove the
        parts; the summed counts."""
        records, ranks = [], []
        for rank in range(self.size):
            body, stats = self._verified_part(rank)
            records += body
            ranks.append(stats)
        write_meta(self.out, dict(self.identity, columns=self.header))
        write_records(self.out, self.header, one_per_video(records, [row[0] for row in self.rows], self.out))
        remove_part_files(self.out)
        return summed(ranks)

    def _verified_part(self, rank: int) -> tuple[list[list[str]], dict[str, Any]]:
        path, marker = self.part(rank), self.marker(rank)
        if not os.path.exists(marker):
            raise PartError(f"rank {rank} has not finished {path}; re-run the same command to complete it")
        with open(marker, encoding="utf-8") as handle:
            mark = json.load(handle)
        problem = None
        if not os.path.isfile(path) or mark.get("sha256") != sha256(path):
            problem = "changed after its rank finished it (SHA-256 differs)"
        else:
            header, body = read_records(path)
            videos, expected = {r[0] for r in body}, {row[0] for row in self.share(rank)}
            if header != self.header:
                problem = f"has columns {header}, not {self.header}"
            elif videos != expected or len(body) != mark.get("rows"):
                problem = (f"holds {len(body)} rows for {len(videos & expected)} of its share's {len(expected)} "
                           f"videos and {len(videos - expected)} others")
        if problem:
            for stale in (marker, path, meta_path(path)):
                if os.path.exists(stale):
                    os.remove(stale)
            raise PartError(f"{path} {problem}: removed, not merged; re-run the same command to score rank "
                            f"{rank}'s share again")
        return body, mark.get("stats", {})


def summed(ranks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The job's counts from its ranks'; ``score_s``: from the first rank starting to score to the last ending."""
    total: dict[str, Any] = {key: sum(int(r.get(key, 0)) for r in ranks)
                             for key in ("rows", "skipped_done", "scored", "errors", "changed")}
    starts = [r["score_start"] for r in ranks if "score_start" in r]
    ends = [r["score_end"] for r in ranks if "score_end" in r]
    total["score_s"] = max(ends) - min(starts) if starts and ends else 0.0
    total["processes"] = len(ranks)
    return total


class _RowCounter:
    """Data rows of a growing CSV, counted incrementally (a rewritten file, new inode, is counted again)."""

    def __init__(self, path: str):
        self.path = path
        self.key: Optional[tuple[int, int]] = None
        self.size = 0
        self.lines = 0

    def rows(self) -> int:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return 0
        key = (stat.st_dev, stat.st_ino)
        if key != self.key or stat.st_size < self.size:
            self.key, self.size, self.lines = key, 0, 0
        if stat.st_size > self.size:
            with open(self.path, "rb") as handle:
                handle.seek(self.size)
                chunk = handle.read(stat.st_size - self.size)
            self.lines += chunk.count(b"\n")
            self.size += len(chunk)
        return max(0, self.lines - 1)  # the header


class JobProgress:
    """One progress bar for the whole job, fed by the part files' row counts, polled in a thread."""

    def __init__(self, job: ScoringJob, enabled: bool, desc: str, poll_s: float = 0.5):
        self.job, self.enabled, self.desc, self.poll_s = job, enabled, desc, poll_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._bar = None

    def __enter__(self) -> "JobProgress":
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(self.job.rows), desc=self.desc, unit="video")
            self._thread = threading.Thread(target=self._run, name="iovqa-score-progress", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._update()

    def _update(self) -> None:
        try:
            done = self.job.progress()
        except OSError:  # a part replaced between stat and open: counted at the next poll
            return
        if done > self._bar.n:
            self._bar.update(done - self._bar.n)

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._update()
            self._bar.close()

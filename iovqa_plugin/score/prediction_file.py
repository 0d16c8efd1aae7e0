"""The prediction file a scoring run writes: a CSV in input order, resumable, with a record of what made it.

Beside ``preds.csv`` the scorer keeps ``preds.csv.meta.json``: the model, the
adapter's weights, the template, the input settings, the plugin keys and the
decoding options. Re-running the same command resumes (videos already
scored are kept, failed ones are tried again); a command that would score
differently is refused with the differences, never merged into the file
(``restart=True`` starts the file over), and so is a file holding videos the
input does not have. Each row records what was scored (``input_key``: a hash
of the video's path, size and modification time and of the text prompt, see
:func:`row_key`): a row whose video file or prompt has changed since is
scored again, never kept. A last row cut short by a killed
process is dropped on resume (its video is scored again); a file that cannot
be read as the scorer wrote it is refused (:class:`DamagedFile`).

Rows are kept as the text the scorer wrote: reordering, resuming and merging
never re-format a number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from typing import Any, Iterable, Optional, Sequence

from .results import COLUMNS, PROBABILITY_COLUMNS, VideoResult, dimension_columns

Row = tuple[str, str, str]  # (video id, video path, text prompt)
INPUT_KEY = "input_key"  # the last column: what the row's score was computed from (row_key)


def row_key(row: Row) -> str:
    """What a score was computed from: the video's path, size and modification time, and the text prompt (the
    run's settings, dimensions included, are the file's identity). A row is resumed only while this holds."""
    import hashlib

    video, path, prompt = row
    try:
        stat = os.stat(path)
        media = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        media = "missing"  # scoring fails and the row is tried again anyway
    text = "\0".join((video, os.path.abspath(path), media, prompt))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


class ResumeError(ValueError):
    """An existing prediction file was written by a different scoring run."""


class DamagedFile(ResumeError):
    """An existing prediction file is not a CSV as the scorer writes it (e.g. edited, or cut in a quoted cell)."""


def meta_path(out_path: str) -> str:
    return out_path + ".meta.json"


def read_meta(path: str) -> Optional[dict]:
    """The identity recorded beside a prediction file; None when missing or unreadable."""
    try:
        with open(meta_path(path), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def write_meta(path: str, meta: dict) -> None:
    """Write the meta of a prediction file (atomic)."""
    tmp = f"{meta_path(path)}.{os.getpid()}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, sort_keys=True)
    os.replace(tmp, meta_path(path))


def recorded_dimensions(path: str) -> Optional[tuple[tuple[str, ...], dict[str, str]]]:
    """(quality dimensions, MOS column of each one the run named) that a prediction file's meta records (the
    scorer's and ``iovqa ensemble``'s): no dimensions for a single score; None for a file without meta."""
    meta = read_meta(path)
    if meta is None:
        return None
    return tuple(meta.get("dimensions") or ()), dict(meta.get("dimension_columns") or {})


def read_records(path: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a prediction CSV, as text. A last row without its line end (the writer was killed
    mid-row) is left out; any other row whose field count differs from the header's raises DamagedFile."""
    with open(path, newline="", encoding="utf-8") as handle:
        text = handle.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    try:
        records = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as err:
        raise DamagedFile(f"{path}: not readable as CSV ({err})") from None
    if not records:
        raise DamagedFile(f"{path}: no header row")
    header, body = records[0], records[1:]
    for number, record in enumerate(body, start=1):
        if len(record) != len(header):
            raise DamagedFile(f"{path}: row {number} has {len(record)} fields, the header {len(header)}")
    return header, body


def write_records(path: str, header: Sequence[str], records: Iterable[Sequence[str]]) -> None:
    """Write a prediction CSV atomically (a reader never sees half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")  # pandas' dialect: what append() writes
        writer.writerow(header)
        writer.writerows(records)
    os.replace(tmp, path)


def is_scored(cell: str) -> bool:
    """A pred_mos cell holding a number (a failed video's is empty)."""
    try:
        return not math.isnan(float(cell))
    except ValueError:
        return False


def scored_records(path: str, header: Sequence[str]) -> list[list[str]]:
    """The rows of a prediction file that hold a score (a failed video's row does not)."""
    found, body = read_records(path)
    if list(found) != list(header):
        raise DamagedFile(f"{path}: columns {found} are not {list(header)}")
    score = found.index("pred_mos")
    return [record for record in body if is_scored(record[score])]


def check_resumable(path: str, identity: dict[str, Any], ignore: Sequence[str] = ()) -> None:
    """Refuse a prediction file whose recorded identity differs from ``identity`` (keys in ``ignore`` aside)."""
    before = read_meta(path)
    if before is None:
        raise ResumeError(
            f"{path} exists but has no readable {os.path.basename(meta_path(path))}: it was not written by this "
            "scorer, so it cannot be resumed. Pass --restart to score into it from scratch, or choose another --out."
        )
    differences = _differences({k: v for k, v in before.items() if k not in ignore},
                               {k: v for k, v in identity.items() if k not in ignore})
    if differences:
        shown = "\n  ".join(differences[:12])
        raise ResumeError(
            f"{path} was written by a different scoring run; resuming would mix two runs' predictions:\n"
            f"  {shown}\nRe-run with the file's settings to resume it, pass --restart to start the file over "
            "(its scores are lost), or choose another --out. Nothing was written."
        )


def check_resume(out: str, identity: dict[str, Any], rows: Sequence[Row], sources: Sequence[str] = ()) -> None:
    """What would refuse resuming ``out`` from itself and ``sources`` (other files of the run, e.g. part files),
    checked before a model is loaded or a file is written: an ``out`` of another run, damaged, or holding videos
    the input has not (resuming would leave their rows behind); a source of another run. (A source without
    readable meta, or damaged, is not used: see :func:`take_over`.)"""
    if os.path.isfile(out):
        check_resumable(out, identity)
        videos = {record[0] for record in _records(out, identity["columns"])}
        _check_input(out, videos, {row[0] for row in rows})
    for source in sources:
        if os.path.isfile(source) and read_meta(source) is not None:
            check_resumable(source, identity, ignore=("shard",))


def _records(path: str, header: Sequence[str]) -> list[list[str]]:
    try:
        return scored_records(path, header)
    except DamagedFile as err:
        raise DamagedFile(f"{err}: pass --restart to start it over, or choose another --out") from None


def _check_input(path: str, videos: set[str], wanted: set[str]) -> None:
    others = sorted(videos - wanted)
    if others:
        raise ResumeError(
            f"{path} holds {len(others)} scored video(s) that are not in this input, e.g. {others[:5]}: resuming "
            "would leave their rows behind. Score into another --out, or pass --restart to start the file over "
            "(its scores are lost). Nothing was written."
        )


def file_header(save_probabilities: bool, dimensions: Sequence[str] = ()) -> list[str]:
    """The columns of a prediction file; ``dimensions``: a run's quality dimensions (none: the single score)."""
    return (list(COLUMNS) + dimension_columns(tuple(dimensions)) + (PROBABILITY_COLUMNS if save_probabilities else [])
            + [INPUT_KEY])


def remove_prediction_file(path: str) -> None:
    for stale in (path, meta_path(path)):
        if os.path.exists(stale):
            os.remove(stale)


class PredictionFile:
    """Rows appended as they are scored; rewritten in input order by :meth:`finish`.

    ``rows``: the input. Rows of the file scored from another input (:func:`row_key`) are dropped (counted in
    ``changed``) and scored again; a file holding videos that are not in ``rows`` is refused.
    """

    def __init__(self, path: str, identity: dict[str, Any], save_probabilities: bool, rows: Sequence[Row],
                 restart: bool = False):
        self.path = path
        self.header = file_header(save_probabilities, identity.get("dimensions", ()))
        self.identity = dict(identity, columns=self.header)
        self.keys = {row[0]: row_key(row) for row in rows}
        self.done: set[str] = set()
        self.changed = 0
        if restart:
            remove_prediction_file(path)
        if os.path.isfile(path):
            check_resumable(path, self.identity)
            kept = _records(path, self.header)  # failed rows are tried again
            _check_input(path, {record[0] for record in kept}, set(self.keys))
            current = [record for record in kept if self.keys[record[0]] == record[-1]]
            self.changed = len(kept) - len(current)
            self.done = {record[0] for record in current}
            write_records(path, self.header, current)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            write_records(path, self.header, [])
            write_meta(path, self.identity)

    def append(self, result: VideoResult) -> None:
        import pandas as pd

        row = dict(result.row(), **{INPUT_KEY: self.keys.get(result.video)})
        pd.DataFrame([row]).reindex(columns=self.header).to_csv(self.path, mode="a", header=False, index=False)

    def current(self, records: Iterable[Sequence[str]]) -> list[Sequence[str]]:
        """The records (of another file of the run) that score a video of the input as it is now and that this
        file lacks."""
        return [r for r in records if r[0] not in self.done and self.keys.get(r[0]) == r[-1]]

    def add_records(self, records: Iterable[Sequence[str]]) -> None:
        """Append rows scored elsewhere (another file of the same run), as they were written."""
        records = list(records)
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows(records)
        self.done.update(record[0] for record in records)

    def finish(self, order: Iterable[str]) -> None:
        """Rewrite the file with its rows in ``order`` (the input's), one per video, atomically."""
        _, body = read_records(self.path)
        write_records(self.path, self.header, one_per_video(body, order, self.path))


def sort_records(records: Iterable[Sequence[str]], order: Iterable[str]) -> list[Sequence[str]]:
    """Rows sorted by the position of their video in ``order`` (stable; unknown videos last)."""
    rank = {video: i for i, video in enumerate(order)}
    return sorted(records, key=lambda record: rank.get(record[0], len(rank)))


def one_per_video(records: Iterable[Sequence[str]], order: Iterable[str], path: str) -> list[Sequence[str]]:
    """``records`` with one row per video, the newest (the last written: rows are appended as they are scored),
    sorted by ``order``. A file is never finished with a video twice, whatever wrote into it."""
    newest = {record[0]: record for record in records}
    rows = sort_records(newest.values(), order)
    videos = [record[0] for record in rows]
    if len(set(videos)) != len(videos):  # the guarantee itself, checked where every finished file is written
        raise DamagedFile(f"{path}: a video twice after keeping the newest row of each")
    return rows


def _differences(before: dict, now: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two identities (nested dicts)."""
    lines = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _differences(a, b, name + ".")
        elif isinstance(a, list) and isinstance(b, list) and a != b:
            lines.append(_list_difference(name, a, b))
        elif a != b:
            hint = f" (to resume it: --mode {a})" if name == "mode" else ""
            lines.append(f"{name}: file has {_short(a)}, this run has {_short(b)}{hint}")
    return lines


def _list_difference(name: str, before: list, now: list) -> str:
    """What one list has and the other has not (or that only their order differs), with a hint for columns."""
    gone = [x for x in before if x not in now]
    new = [x for x in now if x not in before]
    if not gone and not new:
        return f"{name}: the same items in another order: file has {_short(before)}, this run has {_short(now)}"
    parts = ([f"only the file has {_items(gone)}"] if gone else []) + ([f"only this run has {_items(new)}"] if new else [])
    hint = ""
    if name == "columns" and set(PROBABILITY_COLUMNS) <= set(gone):
        hint = " (the file was scored with --save-probs: add it to resume)"
    elif name == "columns" and set(PROBABILITY_COLUMNS) <= set(new):
        hint = " (the file was scored without --save-probs: leave it out to resume)"
    elif name == "columns" and INPUT_KEY in new:
        hint = " (an earlier version of iovqa score wrote the file without recording its inputs: --restart)"
    return f"{name}: {'; '.join(parts)}{hint}"


def _items(values: list) -> str:
    if len(values) <= 6:
        return ", ".join(map(str, values))
    return f"{values[0]}, {values[1]} ... {values[-1]} ({len(values)})"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def take_over(out: PredictionFile, rows: Sequence[Row], sources: Sequence[str], ignore: Sequence[str] = ()) -> int:
    """Copy into ``out`` the rows of ``sources`` (files of the same run) that score videos of ``rows`` as they are
    now (:func:`row_key`) and that it lacks.

    A source written by another run is refused (ResumeError); one without readable meta, or damaged, is not used.
    """
    wanted = {row[0] for row in rows} - out.done
    taken = 0
    for source in sources:
        if not wanted or not os.path.isfile(source):
            continue
        if read_meta(source) is None:
            warn(f"{source} has no readable meta: not used")
            continue
        check_resumable(source, out.identity, ignore=ignore)
        try:
            scored = scored_records(source, out.header)
        except DamagedFile as err:
            warn(f"{err}: not used")
            continue
        records = {r[0]: r for r in out.current(scored) if r[0] in wanted}
        out.add_records(records.values())
        wanted -= set(records)
        taken += len(records)
    return taken


def warn(message: str) -> None:
    print(f"iovqa score: {message}", file=sys.stderr, flush=True)

"""Annotation files: every row is used or reported with file, row and field."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from iovqa_plugin.data.annotations import (
    ROW_COLUMN,
    AnnotationError,
    Columns,
    annotation_rows,
    load_annotations,
    read_table,
    write_issue_report,
)
from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.demo.ladder import write_video
from iovqa_plugin.data.label_formats import read_answer
from iovqa_plugin.data.labels import OUT_OF_RANGE

COLUMNS = Columns("video_name", "Prompt", "Overall_MOS")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A media folder with good clips and a set of broken files."""
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    frames = [Image.fromarray(np.full((48, 64, 3), 12 * i, dtype=np.uint8)) for i in range(12)]
    write_video(frames, str(root / "a.mp4"), fps=8)
    for name in ("b.mp4", "c d.mp4", "vidéo_ü.mp4"):
        shutil.copy(root / "a.mp4", root / name)
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video")
    (root / "dir.mp4").mkdir()
    data = (root / "a.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(data[:200])
    return str(root)


def config(tmp_path, **kw):
    return IOVQAArguments(frame_cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"), **kw)


def write_csv(path, rows, sep=",", bom=False):
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False, sep=sep, encoding="utf-8-sig" if bom else "utf-8")
    return str(path)


GOOD = [
    {"video_name": "a.mp4", "Prompt": "a dog", "Overall_MOS": "3.666"},
    {"video_name": "b.mp4", "Prompt": "a cat", "Overall_MOS": "1.0"},
    {"video_name": "c d.mp4", "Prompt": "a car", "Overall_MOS": "5"},
    {"video_name": "vidéo_ü.mp4", "Prompt": "un été", "Overall_MOS": "2.65"},
]


def test_good_rows_become_samples(tmp_path, media):
    path = write_csv(tmp_path / "train.csv", GOOD)
    samples, issues, stats = load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
    assert issues == [] and stats["rows"] == 4 and stats["used"] == 4
    assert [s.label for s in samples] == ["37", "10", "50", "27"]
    assert [s.row for s in samples] == [1, 2, 3, 4]
    assert all(len(s.frames) == 2 and all(os.path.isfile(f) for f in s.frames) for s in samples)
    assert samples[0].prompt.startswith("<video>") and '"a dog"' in samples[0].prompt


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_formats(tmp_path, media, fmt):
    rows = [dict(r, Overall_MOS=float(r["Overall_MOS"])) for r in GOOD]
    path = tmp_path / f"train.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False))
    else:
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    samples, issues, _ = load_annotations(str(path), COLUMNS, config(tmp_path), media, progress=False)
    assert not issues and [s.label for s in samples] == ["37", "10", "50", "27"]


def test_utf8_bom_header(tmp_path, media):
    path = write_csv(tmp_path / "bom.csv", GOOD, bom=True)
    assert list(read_table(path).columns)[0] == "video_name"
    samples, issues, _ = load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
    assert len(samples) == 4 and not issues


def test_semicolon_csv_is_a_clear_error(tmp_path, media):
    path = write_csv(tmp_path / "semi.csv", GOOD, sep=";")
    with pytest.raises(ValueError, match="semi.csv: missing column.*comma-separated"):
        load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)


def test_missing_columns_name_the_file(tmp_path, media):
    path = write_csv(tmp_path / "cols.csv", [{"video": "a.mp4", "Prompt": "x", "Overall_MOS": 3}])
    with pytest.raises(ValueError, match=r"cols.csv: missing column\(s\) \['video_name'\]"):
        load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)


BAD = [
    ({"video_name": "a.mp4", "Prompt": "p", "Overall_MOS": "nan"}, "Overall_MOS", "NaN"),
    ({"video_name": "a.mp4", "Prompt": "p", "Overall_MOS": ""}, "Overall_MOS", "empty"),
    ({"video_name": "a.mp4", "Prompt": "p", "Overall_MOS": "abc"}, "Overall_MOS", "not a number"),
    ({"video_name": "a.mp4", "Prompt": "p", "Overall_MOS": "0.5"}, "Overall_MOS", "outside"),
    ({"video_name": "a.mp4", "Prompt": "p", "Overall_MOS": "5.4"}, "Overall_MOS", "outside"),
    ({"video_name": "a.mp4", "Prompt": "p", "Overall_MOS": "-2"}, "Overall_MOS", "outside"),
    ({"video_name": "", "Prompt": "p", "Overall_MOS": "3"}, "video_name", "empty"),
    ({"video_name": "a.mp4", "Prompt": "", "Overall_MOS": "3"}, "Prompt", "empty"),
    ({"video_name": "zero.mp4", "Prompt": "p", "Overall_MOS": "3"}, "video_name", "empty"),
    ({"video_name": "text.mp4", "Prompt": "p", "Overall_MOS": "3"}, "video_name", "not a readable video"),
    ({"video_name": "dir.mp4", "Prompt": "p", "Overall_MOS": "3"}, "video_name", "directory"),
    ({"video_name": "missing.mp4", "Prompt": "p", "Overall_MOS": "3"}, "video_name", "not found"),
]


@pytest.mark.parametrize("row, field, reason", BAD)
def test_each_bad_row_names_file_row_and_field(tmp_path, media, row, field, reason):
    rows = [GOOD[1], GOOD[2], row]  # the bad row is row 3, line 4
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(AnnotationError) as info:
        load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
    [issue] = info.value.issues
    assert (issue.row, issue.field) == (3, field) and reason in issue.reason
    message = str(info.value)
    assert "bad.csv: row 3 (line 4)" in message and repr(field) in message and reason in message


def test_duplicate_video_ids_are_reported_on_every_row(tmp_path, media):
    rows = GOOD + [{"video_name": "a.mp4", "Prompt": "again", "Overall_MOS": "abc"}]
    path = write_csv(tmp_path / "dup.csv", rows)
    with pytest.raises(AnnotationError) as info:
        load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
    duplicate = [i for i in info.value.issues if "duplicate" in i.reason]
    assert {i.row for i in duplicate} == {1, 5} and "row 5" in duplicate[0].reason


def test_skip_mode_keeps_the_first_row_of_a_duplicated_video(tmp_path, media):
    rows = GOOD + [dict(GOOD[0], Prompt="again", Overall_MOS="2"), dict(GOOD[0], Prompt="third", Overall_MOS="4")]
    path = write_csv(tmp_path / "dup.csv", rows)
    samples, issues, stats = load_annotations(path, COLUMNS, config(tmp_path, on_bad_row="skip"), media, progress=False)
    assert [s.row for s in samples] == [1, 2, 3, 4] and samples[0].label == "37"
    assert [(i.row, i.field) for i in issues] == [(5, "video_name"), (6, "video_name")]
    assert all("duplicate video id" in i.reason and "dup.csv row 1" in i.reason for i in issues)
    assert stats["skipped_rows"] == 2


def test_annotation_rows_read_every_cell_as_text(tmp_path):
    rows = [
        {"video_name": "007.mp4", "Prompt": "p", "Overall_MOS": 3.5},
        {"video_name": "8", "Prompt": None, "Overall_MOS": "3.25"},
    ]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(rows))
    table = annotation_rows(str(path))
    assert [r["Overall_MOS"] for r in table] == ["3.5", "3.25"] and table[1]["Prompt"] is None
    assert [r["video_name"] for r in table] == ["007.mp4", "8"]
    assert table[0][ROW_COLUMN] != table[1][ROW_COLUMN]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_numeric_text_mos_among_numbers_in_json(tmp_path, media, fmt):
    rows = [dict(r, Overall_MOS=float(r["Overall_MOS"])) for r in GOOD]
    rows[1]["Overall_MOS"] = "3.25"
    path = tmp_path / f"mixed.{fmt}"
    path.write_text(json.dumps(rows) if fmt == "json" else "\n".join(json.dumps(r) for r in rows))
    samples, issues, _ = load_annotations(str(path), COLUMNS, config(tmp_path), media, progress=False)
    assert not issues and [s.label for s in samples] == ["37", "33", "50", "27"]


def test_skip_mode_accounts_for_every_row(tmp_path, media):
    rows = GOOD + [row for row, _, _ in BAD]
    path = write_csv(tmp_path / "mixed.csv", rows)
    cfg = config(tmp_path, on_bad_row="skip")
    samples, issues, stats = load_annotations(path, COLUMNS, cfg, media, progress=False)
    bad_rows = {i.row for i in issues}
    used_rows = {s.row for s in samples}
    assert stats["rows"] == len(rows) == len(bad_rows | used_rows) and not bad_rows & used_rows
    # GOOD's a.mp4 (row 1) is named again by bad rows: the first row is kept, the later ones are reported
    assert used_rows == {1, 2, 3, 4}
    report = cfg.skip_report_path
    write_issue_report(issues, report, [path])
    table = pd.read_csv(report)
    assert set(table["row"]) == bad_rows and set(table.columns) >= {"file", "row", "field", "value", "reason"}
    write_issue_report([], report, [path])  # a clean re-run clears that file's rows
    assert pd.read_csv(report).empty


def test_truncated_video_is_used_or_reported(tmp_path, media):
    rows = [{"video_name": "cut.mp4", "Prompt": "p", "Overall_MOS": "3"}]
    path = write_csv(tmp_path / "cut.csv", rows)
    samples, issues, stats = load_annotations(path, COLUMNS, config(tmp_path, on_bad_row="skip"), media, progress=False)
    assert len(samples) + len({i.row for i in issues}) == 1


def test_long_prompt_is_cut_and_counted(tmp_path, media):
    rows = [{"video_name": "a.mp4", "Prompt": "x" * 10000, "Overall_MOS": "3"}]
    path = write_csv(tmp_path / "long.csv", rows)
    samples, _, stats = load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
    assert stats["prompts_cut"] == 1 and "x" * 2000 in samples[0].prompt and "x" * 2001 not in samples[0].prompt


def test_prompt_with_digits_and_placeholder(tmp_path, media):
    rows = [{"video_name": "a.mp4", "Prompt": "10 cats <video> score 50", "Overall_MOS": "3"}]
    path = write_csv(tmp_path / "ph.csv", rows)
    [sample], _, _ = load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
    assert sample.prompt.count("<video>") == 1 and "10 cats [video] score 50" in sample.prompt


def test_bad_input_corpus_summary(tmp_path, media):
    """Every case of the corpus in one run: its outcome is an error naming file, row and field, or a used row."""
    cases = [(f"{field} = {row[field]!r}", [row], "error", field) for row, field, _ in BAD]
    cases += [
        ("duplicate video id", [GOOD[0], dict(GOOD[0], Prompt="again")], "error", "video_name"),
        ("truncated mp4", [{"video_name": "cut.mp4", "Prompt": "p", "Overall_MOS": "3"}], "used or error", "video_name"),
        ("10,000-character prompt", [dict(GOOD[0], Prompt="x" * 10000)], "used", None),
        ("prompt with digits and <video>", [dict(GOOD[0], Prompt="3 cats <video> 50")], "used", None),
        ("path with a space", [GOOD[2]], "used", None),
        ("non-ASCII path and prompt", [GOOD[3]], "used", None),
    ]
    outcomes = []
    for i, (name, rows, expected, field) in enumerate(cases):
        path = write_csv(tmp_path / f"case{i}.csv", rows)
        try:
            samples, _, _ = load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
            outcome = "used"
            assert len(samples) == len(rows)
        except AnnotationError as err:
            outcome = "error"
            assert all(f"case{i}.csv: row" in str(issue) and issue.field == (field or issue.field) for issue in err.issues)
        assert outcome == expected or expected == "used or error", name
        outcomes.append((name, outcome))
    for name, sep, bom in (("semicolon-separated CSV", ";", False), ("UTF-8 BOM", ",", True)):
        path = write_csv(tmp_path / f"{sep == ';'}{bom}.csv", GOOD, sep=sep, bom=bom)
        try:
            load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
            outcomes.append((name, "used"))
        except ValueError as err:
            assert "comma-separated" in str(err)
            outcomes.append((name, "error"))
    path = write_csv(tmp_path / "nocol.csv", [{"video": "a.mp4", "Prompt": "x", "Overall_MOS": 3}])
    with pytest.raises(ValueError, match=r"nocol.csv: missing column\(s\) \['video_name'\]"):
        load_annotations(path, COLUMNS, config(tmp_path), media, progress=False)
    outcomes.append(("missing column", "error"))
    extra = 0
    for fmt in ("json", "jsonl"):  # the rows LLaMA-Factory's dataset holds come from annotation_rows
        rows = [dict(GOOD[0], Overall_MOS=3.5), dict(GOOD[1], Overall_MOS="3.25"), dict(GOOD[2], Overall_MOS=5)]
        path = tmp_path / f"mixed.{fmt}"
        path.write_text(json.dumps(rows) if fmt == "json" else "\n".join(json.dumps(r) for r in rows))
        assert [r["Overall_MOS"] for r in annotation_rows(str(path))] == ["3.5", "3.25", "5"]
        samples, _, _ = load_annotations(str(path), COLUMNS, config(tmp_path), media, progress=False)
        assert [s.label for s in samples] == ["35", "33", "50"]
        outcomes.append((f"{fmt.upper()}: MOS '3.25' as text among numbers", "used"))
        extra += 1
    path = write_csv(tmp_path / "dupskip.csv", [GOOD[0], GOOD[1], dict(GOOD[0], Prompt="again")])
    samples, issues, _ = load_annotations(path, COLUMNS, config(tmp_path, on_bad_row="skip"), media, progress=False)
    assert [s.row for s in samples] == [1, 2] and [(i.row, i.field) for i in issues] == [(3, "video_name")]
    outcomes.append(("duplicate video id, on_bad_row: skip", "first used, later reported"))
    extra += 1
    for answer in ("100", "9", "55", "-12"):  # greedy answers off the label grid
        mos, reason = read_answer(answer)
        assert mos is None and reason.startswith(OUT_OF_RANGE)
        outcomes.append((f"greedy answer {answer!r}", OUT_OF_RANGE))
        extra += 1
    table = pd.DataFrame(outcomes, columns=["case", "outcome"])
    print(f"\nbad-input corpus: {len(table)} cases, {table['outcome'].value_counts().to_dict()}\n{table.to_string(index=False)}")
    assert len(table) == len(cases) + 3 + extra


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_json_null_is_reported_as_null(tmp_path, media, fmt):
    rows = [dict(GOOD[0], Overall_MOS=None), dict(GOOD[1], video_name=None), {"video_name": "c d.mp4", "Prompt": "p"}]
    path = tmp_path / f"nulls.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(AnnotationError) as info:
        load_annotations(str(path), COLUMNS, config(tmp_path), media, progress=False)
    found = {(i.row, i.field): (i.value, i.reason) for i in info.value.issues}
    assert found[(1, "Overall_MOS")] == ("null", "MOS is missing (null, or no such key in the row)")
    assert found[(2, "video_name")] == ("null", "video path is empty or not text")
    assert found[(3, "Overall_MOS")][0] == "null"  # a key the row lacks
    assert "'nan'" not in str(info.value)


def test_dataset_columns_map_std_and_refuse_unknown_keys(tmp_path):
    from iovqa_plugin.data.datasets import DatasetInfoError, resolve_data

    def source(columns, **keys):
        (tmp_path / "dataset_info.json").write_text(json.dumps(
            {"own": {"file_name": "own.csv", "formatting": "iovqa", "columns": columns}}))
        return resolve_data("own", {"dataset_dir": str(tmp_path)}, IOVQAArguments(**keys))

    soft = dict(label_format="level", level_targets="soft")
    mapped = {"videos": "clip", "prompt": "text", "response": "score", "std": "score_sd"}
    assert source(mapped, **soft).columns == Columns("clip", "text", "score", std="score_sd")
    assert source(mapped).columns.std is None  # read by soft-target runs only
    with pytest.raises(DatasetInfoError) as info:
        source(dict(mapped, mos="score", video="clip"))
    message = str(info.value)
    assert "dataset 'own'" in message and "['mos', 'video']" in message
    assert "['videos', 'prompt', 'response', 'std']" in message


def test_scoring_rows_are_checked_as_training_checks_them(tmp_path):
    from iovqa_plugin.data.annotations import Columns
    from iovqa_plugin.data.datasets import DataSource, scoring_rows

    path = tmp_path / "a.csv"
    path.write_text("video_name,Prompt\na.mp4,a cat\n,a dog\nb.mp4,\n")
    source = DataSource("a", str(path), str(tmp_path), Columns("video_name", "Prompt", "Overall_MOS"))
    with pytest.raises(AnnotationError) as caught:
        scoring_rows(source)
    assert [(i.row, i.field) for i in caught.value.issues] == [(2, "video_name"), (3, "Prompt")]
    assert "video path is empty" in str(caught.value) and "text prompt is empty" in str(caught.value)
    path.write_text("video_name,Prompt\na.mp4,a cat\n b.mp4 ,a dog\n")
    assert scoring_rows(source) == [("a.mp4", str(tmp_path / "a.mp4"), "a cat"),
                                    ("b.mp4", str(tmp_path / "b.mp4"), "a dog")]

"""The scorer on the offline tiny model (conftest's `scorer`): expected score vs brute force, greedy vs a manual
argmax loop, prediction files."""

import math
import os
import re

import pandas as pd
import pytest
import torch

from conftest import base_recipe, teacher_forced_all, write_recipe


def demo_rows(demo_dir, n=3):
    """Rows of the demo test split from both of its sources (their prompts differ in length)."""
    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv"))
    rows = [(v, os.path.join(demo_dir, v), p) for v, p in zip(table["video_name"], table["Prompt"])]
    return [rows[i] for i in (0, 5, 6, 1, 7)[:n]]


def brute_force(scorer, video_path, prompt):
    """p(n) for n = 10..50 by scoring each integer's tokens after the prompt with full forwards (no cache)."""
    feature = scorer.encode(prompt, scorer.cache.get(video_path))
    answers = [scorer.loaded.tokenizer.encode(str(n), add_special_tokens=False) for n in range(10, 51)]
    logps = torch.tensor(teacher_forced_all(scorer, feature, answers), dtype=torch.float64)
    return torch.softmax(logps, dim=0)


@pytest.mark.slow
def test_expected_score_equals_brute_force_enumeration(scorer, demo_dir):
    rows = demo_rows(demo_dir, n=3)
    features = [scorer.encode(p, scorer.cache.get(path)) for _, path, p in rows]
    assert len({len(f["input_ids"]) for f in features}) > 1  # different lengths: left padding is exercised
    probabilities, _ = scorer.distribution(scorer.batch(features))
    results = scorer.score_features([v for v, _, _ in rows], features, "expected")
    for i, (_, path, prompt) in enumerate(rows):
        reference = brute_force(scorer, path, prompt)
        assert torch.allclose(probabilities[i].double(), reference, atol=1e-5)
        expected = float((reference * torch.arange(10, 51, dtype=torch.float64)).sum() / 10)
        assert abs(results[i].expected_mos - expected) < 1e-5
        variance = float((reference * (torch.arange(10, 51) / 10 - expected) ** 2).sum())
        assert abs(results[i].expected_std - math.sqrt(variance)) < 1e-5


def manual_greedy(scorer, feature, steps=6):
    """Argmax decoding with a full forward per step (no cache, no generate), up to a complete score."""
    ids = list(feature["input_ids"])
    for _ in range(steps):
        batch = scorer.batch([dict(feature, input_ids=ids, attention_mask=[1] * len(ids), labels=[-100] * len(ids))])
        with torch.no_grad():
            token = int(scorer.loaded.model(**batch, logits_to_keep=1).logits[0, -1].argmax())
        ids.append(token)
        answer = scorer.loaded.tokenizer.decode(ids[len(feature["input_ids"]) :], skip_special_tokens=True)
        if token in scorer.loaded.stop_ids or re.search(r"\d\d", answer):  # the answer's score is complete
            break
    return scorer.loaded.tokenizer.decode(ids[len(feature["input_ids"]) :], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_greedy_equals_argmax_decoding_batched_or_not(scorer, demo_dir):
    rows = demo_rows(demo_dir, n=3)
    features = [scorer.encode(p, scorer.cache.get(path)) for _, path, p in rows]
    batched = scorer.greedy(scorer.batch(features))
    single = [scorer.greedy(scorer.batch([f]))[0] for f in features]
    manual = [manual_greedy(scorer, f) for f in features]
    assert batched == single == manual


def test_score_file_resumes_and_reports_bad_videos(scorer, demo_dir, tmp_path):
    from iovqa_plugin.score.scoring_loop import score_file

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv"))
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    table = pd.concat([table.head(4), pd.DataFrame([{"video_name": str(tmp_path / "corrupt.mp4"), "Prompt": "x", "Overall_MOS": 3}])])
    annotations = tmp_path / "a.csv"
    table.to_csv(annotations, index=False)
    out = tmp_path / "preds.csv"
    stats = score_file(scorer, str(annotations), str(out), demo_dir, mode="both", batch_size=2, progress=False)
    assert stats == {"rows": 5, "skipped_done": 0, "scored": 4, "errors": 1, "changed": 0}
    preds = pd.read_csv(out)
    assert len(preds) == 5 and preds["pred_mos"].notna().sum() == 4
    bad = preds[preds["video"].str.endswith("corrupt.mp4")].iloc[0]
    assert math.isnan(bad["pred_mos"]) and "corrupt.mp4" in bad["error"]
    good = preds[preds["pred_mos"].notna()]
    assert ((good["pred_mos"] >= 1) & (good["pred_mos"] <= 5)).all()
    assert (good["pred_mos"] == good["expected_mos"]).all()

    before = preds[preds["pred_mos"].notna()].reset_index(drop=True)
    stats = score_file(scorer, str(annotations), str(out), demo_dir, mode="both", batch_size=2, progress=False)
    assert stats == {"rows": 5, "skipped_done": 4, "scored": 0, "errors": 1, "changed": 0}  # done rows skipped, the bad one retried
    after = pd.read_csv(out)
    assert len(after) == 5
    pd.testing.assert_frame_equal(after[after["pred_mos"].notna()].reset_index(drop=True), before)


def test_decimal_recipe_has_no_expected_mode(scorer):
    from iovqa_plugin.data.grid import ScoreGrid

    grid = ScoreGrid.from_tokenizer(scorer.loaded.tokenizer)
    assert grid.steps == 2 and grid.first_ids.numel() == 5 and grid.second_ids.numel() == 10


@pytest.mark.slow
def test_resuming_with_a_different_run_is_refused(scorer, demo_dir, tmp_path):
    import copy

    from iovqa_plugin.score.prediction_file import ResumeError

    from iovqa_plugin.score.scoring_loop import score_file

    annotations = os.path.join(demo_dir, "demo", "test.csv")
    out = str(tmp_path / "preds.csv")
    first = score_file(scorer, annotations, out, demo_dir, mode="expected", save_probabilities=True, progress=False)
    assert first["scored"] == 10
    before = pd.read_csv(out)
    with pytest.raises(ResumeError, match="mode: file has 'expected', this run has 'both'"):
        score_file(scorer, annotations, out, demo_dir, mode="both", progress=False)
    with pytest.raises(ResumeError, match="columns"):  # the probability columns would be dropped
        score_file(scorer, annotations, out, demo_dir, mode="expected", progress=False)
    other = copy.copy(scorer)
    other.settings = copy.deepcopy(scorer.settings)
    other.settings.model_keys["video_max_pixels"] = 4096  # another input size: other scores
    with pytest.raises(ResumeError, match="model_keys.video_max_pixels"):
        score_file(other, annotations, out, demo_dir, mode="expected", save_probabilities=True, progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(out), before)  # refused runs leave the file as it was
    again = score_file(scorer, annotations, out, demo_dir, mode="expected", save_probabilities=True, progress=False)
    assert again == {"rows": 10, "skipped_done": 10, "scored": 0, "errors": 0, "changed": 0}
    restarted = score_file(scorer, annotations, out, demo_dir, mode="both", progress=False, restart=True)
    assert restarted["scored"] == 10 and (pd.read_csv(out)["mode"] == "both").all()


def test_a_foreign_prediction_file_is_not_resumed(scorer, demo_dir, tmp_path):
    from iovqa_plugin.score.prediction_file import ResumeError
    from iovqa_plugin.score.scoring_loop import score_file

    out = tmp_path / "preds.csv"
    out.write_text("video,pred_mos\ndemo/videos/bikes_mid_L0.mp4,4.2\n")
    with pytest.raises(ResumeError, match="--restart"):
        score_file(scorer, os.path.join(demo_dir, "demo", "test.csv"), str(out), demo_dir, progress=False)


def test_predictions_come_out_in_input_order(scorer, demo_dir, tmp_path):
    from iovqa_plugin.score.scoring_loop import score_file

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).head(5)
    (tmp_path / "missing.mp4").write_bytes(b"")
    table.loc[1, "video_name"] = str(tmp_path / "missing.mp4")  # fails: retried (and appended) on resume
    annotations = tmp_path / "a.csv"
    table.to_csv(annotations, index=False)
    out = str(tmp_path / "preds.csv")
    score_file(scorer, str(annotations), out, demo_dir, progress=False)
    score_file(scorer, str(annotations), out, demo_dir, progress=False)
    assert pd.read_csv(out)["video"].tolist() == [str(v).strip() for v in table["video_name"]]


def test_an_explicit_model_gets_no_recipe_adapter(tiny_model, demo_dir, tmp_path):
    from iovqa_plugin.score.settings import ScorerSettings, SettingsError

    adapter = tmp_path / "run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, str(adapter)))
    assert ScorerSettings.from_recipe(recipe).adapter == str(adapter)  # the recipe's output_dir by default
    merged = ScorerSettings.from_recipe(recipe, model=str(tmp_path / "merged"))  # e.g. a merged export
    assert merged.adapter is None and "no adapter added" in merged.note
    both = ScorerSettings.from_recipe(recipe, model=tiny_model, adapter=str(adapter))
    assert both.adapter == str(adapter)
    untrained = write_recipe(tmp_path / "u.yaml", base_recipe(tiny_model, demo_dir, str(tmp_path / "nothing")))
    with pytest.raises(SettingsError, match="no trained adapter"):
        ScorerSettings.from_recipe(untrained)


def test_greedy_answers_off_the_label_grid_are_out_of_range(scorer, demo_dir, tmp_path, monkeypatch):
    """An answer such as "100" or "-12" is recorded with its text and counted as failed, never read as a MOS."""
    from iovqa_plugin.score.scoring_loop import score_file

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).head(4)
    annotations = tmp_path / "a.csv"
    table.to_csv(annotations, index=False)
    answers = iter(["100", "37", "-12", "9"])
    monkeypatch.setattr(scorer, "greedy", lambda batch: [next(answers) for _ in range(len(batch["input_ids"]))])
    out = tmp_path / "preds.csv"
    stats = score_file(scorer, str(annotations), str(out), demo_dir, mode="greedy", batch_size=2, progress=False)
    assert stats == {"rows": 4, "skipped_done": 0, "scored": 1, "errors": 3, "changed": 0}
    preds = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("greedy_text")
    assert float(preds.loc["37", "pred_mos"]) == 3.7 and preds.loc["37", "error"] == ""
    for answer in ("100", "-12", "9"):
        assert preds.loc[answer, "pred_mos"] == "" and preds.loc[answer, "greedy_mos"] == ""
        assert "out of range" in preds.loc[answer, "error"] and repr(answer) in preds.loc[answer, "error"]


def test_rows_scored_from_another_input_are_scored_again(scorer, demo_dir, tmp_path):
    """Resume keeps a row only while its video file and text prompt are those it was scored from."""
    import shutil

    from iovqa_plugin.score.prediction_file import ResumeError

    from iovqa_plugin.score.scoring_loop import score_file

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).head(4)
    copy = tmp_path / "copy.mp4"  # a video of our own, to touch
    shutil.copy(os.path.join(demo_dir, table.loc[3, "video_name"]), copy)
    table.loc[3, "video_name"] = str(copy)
    annotations, out = tmp_path / "a.csv", str(tmp_path / "preds.csv")
    table.to_csv(annotations, index=False)
    score_file(scorer, str(annotations), out, demo_dir, progress=False)
    first = pd.read_csv(out)

    table.loc[:2, "Prompt"] = ["a blurry " + p for p in table.loc[:2, "Prompt"]]  # every caption rewritten...
    table.to_csv(annotations, index=False)
    os.utime(copy, ns=(os.stat(copy).st_atime_ns, os.stat(copy).st_mtime_ns + 10**9))  # ...and one video changed
    stats = score_file(scorer, str(annotations), out, demo_dir, progress=False)
    assert stats == {"rows": 4, "skipped_done": 0, "scored": 4, "errors": 0, "changed": 4}
    fresh = str(tmp_path / "fresh.csv")
    score_file(scorer, str(annotations), fresh, demo_dir, progress=False)
    again = pd.read_csv(out)
    assert again["expected_mos"].tolist() == pytest.approx(pd.read_csv(fresh)["expected_mos"].tolist(), abs=1e-6)
    assert (again["expected_mos"] - first["expected_mos"]).abs()[:3].min() > 0  # the old values are gone
    assert score_file(scorer, str(annotations), out, demo_dir, progress=False)["skipped_done"] == 4

    # a smaller input into the same file: refused, and the file is left as it was
    saved = {name: open(os.path.join(tmp_path, name), "rb").read() for name in ("preds.csv", "preds.csv.meta.json")}
    table.head(2).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(ResumeError, match=r"holds 2 scored video\(s\) that are not in this input"):
        score_file(scorer, str(tmp_path / "two.csv"), out, demo_dir, progress=False)
    assert saved == {name: open(os.path.join(tmp_path, name), "rb").read() for name in saved}


@pytest.mark.slow
def test_a_refused_resume_writes_nothing_and_loads_no_model(scorer, tiny_model, demo_dir, tmp_path, monkeypatch,
                                                            capsys):
    """Adding --save-probs to a finished run is refused before the model loads, in one process and as a
    torchrun rank, naming the columns and what to run; the original command then still resumes."""
    from iovqa_plugin.cli import main
    from iovqa_plugin.score.command import score_options
    from iovqa_plugin.data.datasets import resolve_data, scoring_rows
    from iovqa_plugin.score.scoring_loop import score_rows_into
    from iovqa_plugin.score.scorer import Scorer

    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, str(tmp_path / "none")))
    annotations, out = tmp_path / "a.csv", tmp_path / "preds.csv"
    pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).head(3).to_csv(annotations, index=False)
    rows = scoring_rows(resolve_data(str(annotations), None, scorer.iovqa_args, media_dir=demo_dir))
    score_rows_into(scorer, rows, str(out), "expected", 3, False, progress=False, extra_identity=score_options())
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("preds")}
    assert set(written) == {"preds.csv", "preds.csv.meta.json"}

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded for a refused run")

    command = ["score", "--recipe", recipe, "--adapter", "", "--data", str(annotations), "--media-dir", demo_dir,
               "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(Scorer, "__init__", no_model)
        assert main(command + ["--save-probs"]) == 2
        err = capsys.readouterr().err
        assert "columns: only this run has p_10, p_11 ... p_50 (41)" in err
        assert "scored without --save-probs: leave it out to resume" in err and "Nothing was written" in err
        for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
            patch.setenv(key, value)  # a rank of a torchrun job (not the merging one)
        assert main(command + ["--save-probs"]) == 2
        assert "only this run has p_10" in capsys.readouterr().err
        assert main(command + ["--mode", "both"]) == 2
        assert "mode: file has 'expected', this run has 'both' (to resume it: --mode expected)" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("preds")} == written
    assert main(command) == 0
    assert "0 scored, 0 failed, 3 already done" in capsys.readouterr().out


def test_sampled_mode_averages_the_samples_that_give_a_score_and_counts_the_rest(scorer, demo_dir, tmp_path,
                                                                                  monkeypatch):
    """pred_mos is the mean of the readable samples, sampled_std their spread; an unreadable sample is counted,
    never averaged in; a video none of whose samples gives a score is an error; the reasoning is written."""
    from iovqa_plugin.score.scoring_loop import score_file

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).head(2)
    annotations = tmp_path / "a.csv"
    table.to_csv(annotations, index=False)
    answers = {table["video_name"][0]: ["37", "no idea", "<think>sharp, steady</think><answer>41</answer>", "45"],
               table["video_name"][1]: ["blurry", "", "<think>noise</think>", "100"]}
    monkeypatch.setattr(scorer, "sampled", lambda video, feature: answers[video])
    out = tmp_path / "preds.csv"
    stats = score_file(scorer, str(annotations), str(out), demo_dir, mode="sampled", progress=False)
    assert stats["scored"] == 1 and stats["errors"] == 1
    preds = pd.read_csv(out).set_index("video")
    good, bad = preds.loc[table["video_name"][0]], preds.loc[table["video_name"][1]]
    assert good["pred_mos"] == pytest.approx(4.1) and good["sampled_mos"] == pytest.approx(4.1)
    assert good["sampled_std"] == pytest.approx(math.sqrt(((3.7 - 4.1) ** 2 + 0 + (4.5 - 4.1) ** 2) / 3))
    assert (good["sampled_parsed"], good["sampled_unparseable"]) == (3, 1)
    assert good["reasoning"] == "sharp, steady"
    assert math.isnan(bad["pred_mos"]) and (bad["sampled_parsed"], bad["sampled_unparseable"]) == (0, 4)
    assert "none of the 4 sampled answers gave a MOS" in bad["error"] and bad["reasoning"] == "noise"


def test_greedy_writes_a_thinking_answers_reasoning(scorer, demo_dir, tmp_path, monkeypatch):
    from iovqa_plugin.score.scoring_loop import score_file

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).head(2)
    annotations = tmp_path / "a.csv"
    table.to_csv(annotations, index=False)
    # a GRPO thinking answer, and a reasoning template's (its opening tag is in the prompt: only the closing one)
    texts = iter(["<think>steady camera, crisp</think>\n<answer>42</answer>", "a little blur\n</think>\n\n31"])
    monkeypatch.setattr(scorer, "greedy", lambda batch: [next(texts) for _ in range(len(batch["input_ids"]))])
    out = tmp_path / "preds.csv"
    score_file(scorer, str(annotations), str(out), demo_dir, mode="greedy", batch_size=2, progress=False)
    preds = pd.read_csv(out)
    assert preds["reasoning"].tolist() == ["steady camera, crisp", "a little blur"]
    assert preds["greedy_mos"].tolist() == [4.2, 3.1]


@pytest.mark.slow  # runs the model (generate / rollouts): seconds
def test_sampled_answers_are_seeded_per_video(scorer, demo_dir):
    """The same seed draws the same answers (whatever the global random state), another seed others; each
    video's seed comes from its id, so batches and processes do not change its answers."""
    from dataclasses import replace

    from iovqa_plugin.score.modes import Sampling
    from iovqa_plugin.score.scorer import video_seed

    video, path, prompt = demo_rows(demo_dir, 1)[0]
    feature = scorer.encode(prompt, scorer.cache.get(path))
    before = scorer.settings.sampling
    try:
        scorer.settings.sampling = Sampling(samples=4, temperature=1.5, seed=3)
        first = scorer.sampled(video, feature)
        torch.manual_seed(1234)
        state = torch.get_rng_state()
        assert scorer.sampled(video, feature) == first and len(first) == 4
        assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
        scorer.settings.sampling = replace(scorer.settings.sampling, seed=4)
        assert scorer.sampled(video, feature) != first
    finally:
        scorer.settings.sampling = before
    assert video_seed(3, video) == video_seed(3, video) != video_seed(3, video + "x")


def test_sampling_options_belong_to_the_sampled_mode(scorer):
    import argparse

    from iovqa_plugin.errors import UserError
    from iovqa_plugin.score.command import sampling_options, score_options

    def args(**kw):
        return argparse.Namespace(**{"mode": "sampled", "samples": None, "temperature": None, "seed": None, **kw})

    assert sampling_options(args(samples=6, temperature=0.7), scorer.iovqa_args).samples == 6
    with pytest.raises(UserError, match="--samples: options of --mode sampled"):
        sampling_options(args(mode="expected", samples=6), scorer.iovqa_args)
    with pytest.raises(UserError, match="--samples must be an integer >= 1"):
        sampling_options(args(samples=0), scorer.iovqa_args)
    with pytest.raises(UserError, match="--temperature must be > 0"):
        sampling_options(args(temperature=0.0), scorer.iovqa_args)
    sampled = score_options("sampled", sampling_options(args(seed=2), scorer.iovqa_args))
    assert sampled["sampling"] == {"samples": 8, "temperature": 1.0, "seed": 2}  # a resumed file must match them
    assert "sampling" not in score_options("expected")


def test_the_summary_reports_the_sampled_answers_that_gave_no_score(tmp_path):
    from iovqa_plugin.score.command import _prediction_warnings

    path = tmp_path / "p.csv"
    pd.DataFrame({"video": ["a", "b"], "pred_mos": [4.1, None], "sampled_parsed": [3, 0],
                  "sampled_unparseable": [1, 4]}).to_csv(path, index=False)
    assert _prediction_warnings(str(path)) == [
        "5 of 8 sampled answers gave no MOS (left out of each video's mean; sampled_unparseable per video)"]

"""Comparison samples: the pairs layout, drawn pairs, the choice mask, P(A) from the choice tokens, and bad pair rows."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace

import pandas as pd
import pytest
import torch

from conftest import base_recipe, run_cli, write_recipe
from iovqa_plugin.config import IOVQAArguments
from iovqa_plugin.data.annotations import AnnotationError, AnnotationFileError, Columns
from iovqa_plugin.data.pair_samples import load_drawn_pairs, load_pair_file
from iovqa_plugin.data.pairs import PairColumns, Rated, build_pair_prompt, draw_pairs
from iovqa_plugin.data.labels import IGNORE_INDEX

DEMO = Columns(video="video_name", prompt="Prompt", mos="Overall_MOS")


def demo_rows(demo_dir, split="train"):
    table = pd.read_csv(os.path.join(demo_dir, "demo", f"{split}.csv"))
    table["video_name"] = [os.path.join(demo_dir, v) for v in table["video_name"]]
    return table


def config(tmp_path, **keys):
    return IOVQAArguments(frame_cache_dir=str(tmp_path / "frames"), **keys)


# --- drawn pairs ---------------------------------------------------------------------------------------------

def ladder_rows(groups=3, per_group=6):
    return [Rated(("f", g * per_group + i), f"v{g}_{i}.mp4", 1.0 + 0.5 * i, f"scene{g}")
            for g in range(groups) for i in range(per_group)]


def test_drawn_pairs_are_deterministic_within_groups_capped_and_never_self_paired():
    rows = ladder_rows() + [Rated(("f", 99), "v0_0.mp4", 4.5, "scene0")]  # a second row of video v0_0
    first = draw_pairs(rows, margin=0.6, cap=3, seed=7)
    assert first == draw_pairs(rows, margin=0.6, cap=3, seed=7)  # the same seed: the same pairs, same order
    assert first != draw_pairs(rows, margin=0.6, cap=3, seed=8)
    assert first
    counts = {}
    for a, b in first:
        assert a.key != b.key and a.video != b.video  # never a row with itself, nor with its own video
        assert a.group == b.group and abs(a.mos - b.mos) > 0.6
        for row in (a, b):
            counts[row.key] = counts.get(row.key, 0) + 1
    assert max(counts.values()) <= 3
    assert len({frozenset((a.key, b.key)) for a, b in first}) == len(first)  # no pair twice
    shown_first_better = sum(a.mos > b.mos for a, b in first)
    assert 0 < shown_first_better < len(first)  # both answers occur: A is not always the better one


def test_drawn_pairs_from_a_pointwise_file_and_a_missing_mos(demo_dir, tmp_path):
    table = demo_rows(demo_dir)
    path = tmp_path / "train.csv"
    table.to_csv(path, index=False)
    samples, issues, stats = load_drawn_pairs(str(path), DEMO, config(tmp_path, pairs_per_row=2), "", progress=False)
    again, _, _ = load_drawn_pairs(str(path), DEMO, config(tmp_path, pairs_per_row=2), "", progress=False)
    assert [s.key for s in samples] == [s.key for s in again] and not issues
    assert stats["rows"] == len(table) and len(samples) == stats["samples"] > 0
    prompts = dict(zip(table["video_name"], table["Prompt"]))
    mos = dict(zip(table["video_name"], table["Overall_MOS"]))
    for s in samples:
        a, b = s.media
        assert prompts[a] == prompts[b] and a != b  # the same text prompt (the default group)
        assert s.answer == ("A" if mos[a] > mos[b] else "B")
        assert f'"{prompts[a]}"' in s.prompt
    table.loc[3, "Overall_MOS"] = None
    table.to_csv(path, index=False)
    with pytest.raises(AnnotationError, match=r"train.csv: row 4 \(line 5\): field 'Overall_MOS' = '': MOS is empty"):
        load_drawn_pairs(str(path), DEMO, config(tmp_path), "", progress=False)
    samples, issues, _ = load_drawn_pairs(str(path), DEMO, config(tmp_path, on_bad_row="skip"), "", progress=False)
    assert [(i.row, i.field) for i in issues] == [(4, "Overall_MOS")]
    assert all(4 not in s.rows for s in samples)


# --- the pairs file ------------------------------------------------------------------------------------------

def test_bad_pair_rows_name_file_row_and_field(demo_dir, tmp_path):
    videos = demo_rows(demo_dir)["video_name"].tolist()
    path = tmp_path / "pairs.csv"
    pd.DataFrame({
        "video_a": [videos[0], videos[1], videos[2], videos[3], videos[4], videos[5]],
        "video_b": [videos[1], "", videos[2], videos[0], videos[6], videos[7]],
        "preference": ["A", "B", "A", "C", "tie", "b"],
    }).to_csv(path, index=False)
    with pytest.raises(AnnotationError) as err:
        load_pair_file(str(path), PairColumns(), config(tmp_path), "", progress=False)
    message = str(err.value)
    assert "3 bad annotation row(s)" in message
    assert "pairs.csv: row 2 (line 3): field 'video_b' = '': missing second video" in message
    assert "row 3 (line 4): field 'video_b' = " in message and "the same video as video A: not a pair" in message
    assert "row 4 (line 5): field 'preference' = 'C': not one of 'A', 'B', 'tie'" in message
    samples, issues, stats = load_pair_file(str(path), PairColumns(), config(tmp_path, on_bad_row="skip"), "",
                                            progress=False)
    assert [s.row for s in samples] == [1, 6] and [s.answer for s in samples] == ["A", "B"]
    assert stats["ties_left_out"] == 1 and stats["skipped_rows"] == 3 and stats["rows"] == 6
    answered, _, _ = load_pair_file(str(path), PairColumns(), config(tmp_path, on_bad_row="skip", pair_ties="answer"),
                                    "", progress=False)
    assert [s.answer for s in answered] == ["A", "tie", "B"]
    mos = tmp_path / "mos.csv"
    pd.DataFrame({"left": [videos[0], videos[2]], "right": [videos[1], videos[3]], "mos_a": ["3.5", ""],
                  "mos_b": ["2.0", "4"]}).to_csv(mos, index=False)
    with pytest.raises(AnnotationError, match=r"mos.csv: row 2 \(line 3\): field 'mos_a' = '': missing MOS"):
        load_pair_file(str(mos), PairColumns(video_a="left", video_b="right"), config(tmp_path), "", progress=False)
    with pytest.raises(AnnotationFileError, match="not a pairs file: no 'video_a' column"):
        load_pair_file(str(mos), PairColumns(), config(tmp_path), "", progress=False)


def test_a_medium_that_does_not_decode_names_its_field(demo_dir, tmp_path):
    videos = demo_rows(demo_dir)["video_name"].tolist()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"video_a": [videos[0]], "video_b": [str(broken)], "preference": ["A"]}).to_csv(path, index=False)
    with pytest.raises(AnnotationError, match=r"pairs.csv: row 1 \(line 2\): field 'video_b' = '.*broken.mp4'"):
        load_pair_file(str(path), PairColumns(), config(tmp_path), "", progress=False)


def test_the_pair_prompt_shows_a_then_b_and_the_sample_carries_their_frames_in_that_order(demo_dir, tmp_path):
    videos = demo_rows(demo_dir)["video_name"].tolist()
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([{"video_a": videos[0], "video_b": videos[5], "preference": "B", "prompt": "a cat"},
                                {"video_a": videos[5], "video_b": videos[0], "preference": "A"}]))
    samples, _, _ = load_pair_file(str(path), PairColumns(), config(tmp_path), "", progress=False)
    first, second = samples
    assert first.prompt.startswith("A: <video>\nB: <video>\n") and first.prompt.count("<video>") == 2
    assert 'text prompt: "a cat"' in first.prompt and "text prompt" not in second.prompt
    assert "Answer with A or B." in first.prompt
    assert first.frames[0] == second.frames[1] and first.frames[1] == second.frames[0]
    assert first.frames[0] != first.frames[1]
    wording = build_pair_prompt(("video", "video"), None, config(tmp_path, pair_ties="answer").choices,
                                "{first} vs {second}: {choices}?")
    assert wording == "<video> vs <video>: A, B or tie?"


# --- the choice mask (LLaMA-Factory's template and collator-side mask) ----------------------------------------

def test_the_mask_keeps_the_choice_word_only_next_to_a_score(qwen_tokenizer):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    from iovqa_plugin.patches.collator import RowMask, is_comparison
    from iovqa_plugin.patches.score_position import render_answer
    from iovqa_plugin.train.mask import masked_texts

    template = get_template_and_fix_tokenizer(qwen_tokenizer, DataArguments(template="qwen2_vl"))
    run = IOVQAArguments(choice_words="left,right,same", pair_ties="answer")
    answers = ["37", "right", "same", "left"]
    rendered = [render_answer(template, qwen_tokenizer, a)[1] for a in answers]
    width = max(len(r) for r in rendered) + 3
    labels = torch.tensor([[IGNORE_INDEX] * 3 + r + [IGNORE_INDEX] * (width - 3 - len(r)) for r in rendered])
    comparison = [is_comparison({"videos": [["f"]] * (1 if a == "37" else 2)}) for a in answers]
    assert comparison == [False, True, True, True]
    masked = RowMask(run, template, qwen_tokenizer)(labels, comparison)
    assert masked_texts(masked, qwen_tokenizer) == answers  # <|im_end|> and the newline are masked
    kept = (masked != IGNORE_INDEX).sum(1).tolist()
    assert kept == [2, *(len(qwen_tokenizer.encode(a, add_special_tokens=False)) for a in answers[1:])]
    with pytest.raises(Exception, match=r"batch row\(s\) \[0\]: the response labels do not start with"):
        RowMask(run, template, qwen_tokenizer)(labels[:1], [True])  # a comparison row answered with a score


# --- end to end: training on drawn pairs next to scores, P(A) from the choice tokens, pairwise accuracy -------

def pair_dataset_dir(demo_dir, tmp_path):
    """A dataset_dir with the demo's pointwise train split and pairs drawn from its train and test splits."""
    columns = {"videos": "video_name", "prompt": "Prompt", "response": "Overall_MOS"}
    info = {f"{name}": {"file_name": os.path.join(demo_dir, "demo", f"{split}.csv"), "formatting": formatting,
                        "columns": columns}
            for name, split, formatting in (("scores", "train", "iovqa"), ("train_pairs", "train", "iovqa_drawn_pairs"),
                                            ("test_pairs", "test", "iovqa_drawn_pairs"))}
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_info.json").write_text(json.dumps(info))
    return str(data)


@pytest.mark.slow
def test_training_on_drawn_pairs_next_to_scores_then_p_a_from_the_choice_tokens(tiny_model, demo_dir, tmp_path):
    from iovqa_plugin.data.layouts import LAYOUTS
    from iovqa_plugin.data.pair_samples import load_comparisons
    from iovqa_plugin.score.comparisons import ComparisonScorer
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    data = pair_dataset_dir(demo_dir, tmp_path)
    recipe = base_recipe(tiny_model, data, str(tmp_path / "run"), dataset="scores,train_pairs", media_dir=demo_dir,
                         max_steps=2, save_steps=2, iovqa_pairs_per_row=2, eval_dataset="test_pairs",
                         eval_strategy="steps", eval_steps=2)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    result = run_cli(["llamafactory-cli", "train", path])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    drawn = re.search(r"train.csv\): 30 rows, 0 skipped, (\d+) comparison samples drawn from (\d+) rows", log)
    assert drawn and 20 <= int(drawn.group(1)) <= 30, log[-4000:]  # at most 2 pairs per row: 30 x 2 / 2
    assert re.search(r"Num examples = %d\b" % (30 + int(drawn.group(1))), log)  # the scores and the pairs
    targets = re.findall(r"'([^']*)'", log.split("first batch targets ")[1].splitlines()[0])
    assert targets and all(t in ("A", "B") or re.fullmatch(r"\d\d", t) for t in targets), targets
    # the in-training evaluation on held-out pairs reports their pairwise accuracy
    with open(tmp_path / "run" / "trainer_state.json", encoding="utf-8") as handle:
        evaluated = [e for e in json.load(handle)["log_history"] if "eval_loss" in e]
    assert evaluated and 0 <= evaluated[-1]["eval_pairwise_diff"] <= 1 and "eval_srcc" not in evaluated[-1]

    out = tmp_path / "pairs_pred.csv"
    scored = run_cli(["iovqa", "score", "--recipe", path, "--data", "test_pairs", "--out", str(out)])
    assert scored.returncode == 0, (scored.stdout + scored.stderr)[-4000:]
    predictions = pd.read_csv(out)
    assert len(predictions) > 0 and predictions["error"].isna().all()
    assert ((predictions["p_a"] + predictions["p_b"] - 1).abs() < 1e-5).all()  # normalised over A and B
    assert predictions["p_tie"].isna().all()
    assert (predictions["choice"] == predictions["p_a"].gt(predictions["p_b"]).map({True: "A", False: "B"})).all()

    # P(A) by hand: the softmax over the tokens "A" and "B" of the next-token logits after the prompt
    settings = ScorerSettings.from_recipe(path)
    samples, _, _ = load_comparisons(LAYOUTS["iovqa_drawn_pairs"].reads, os.path.join(demo_dir, "demo", "test.csv"),
                                     settings.iovqa_args, demo_dir, columns=DEMO, progress=False)
    scorer = ComparisonScorer(Scorer(settings))
    loaded = scorer.scorer.loaded
    batch = loaded.batch([scorer.encode(s) for s in samples[:3]])
    with torch.no_grad():
        logits = loaded.model(**batch).logits[:, -1].float()
    ids = loaded.tokenizer.convert_tokens_to_ids(["A", "B"])
    by_hand = torch.softmax(logits[:, ids], dim=-1)[:, 0]
    assert torch.allclose(by_hand, torch.tensor(predictions["p_a"][:3].tolist()), atol=1e-4)
    assert [r.pair for r in scorer.score(samples[:3])] == predictions["pair"][:3].tolist()

    evaluated = run_cli(["iovqa", "eval", "--pred", str(out), "--pairs", str(tmp_path / "pairs_pred_pairs.csv")])
    assert evaluated.returncode == 0, (evaluated.stdout + evaluated.stderr)[-4000:]
    report = json.loads(evaluated.stdout)["pairs_file"]
    assert report["pairs"] == len(predictions) and 0 <= report["diff"] <= 1
    assert "pairwise accuracy diff" in evaluated.stderr


def test_pairwise_accuracy_of_comparison_predictions_against_hand_counts(tmp_path):
    from iovqa_plugin.eval.pairwise import MatchError, comparison_report

    pred = tmp_path / "pred.csv"
    pd.DataFrame({"pair": ["1", "2", "3", "4"], "video_a": ["a", "c", "f", "g"], "video_b": ["b", "d", "e", "h"],
                  "p_a": [0.8, 0.3, 0.6, 0.5], "p_b": [0.2, 0.7, 0.4, 0.5], "choice": ["A", "B", "A", "A"],
                  "error": [None] * 4}).to_csv(pred, index=False)
    pairs = tmp_path / "pairs.csv"
    # row 3 lists (e, f) the other way round than predicted: P(A) of (e, f) is P(B) of (f, e) = 0.4 -> prefers f
    pd.DataFrame({"video_a": ["a", "c", "e", "g"], "video_b": ["b", "d", "f", "h"],
                  "preference": ["A", "A", "B", "tie"]}).to_csv(pairs, index=False)
    result = comparison_report(str(pred), str(pairs))
    # right: a>b (A, p 0.8), e<f (B); wrong: c>d (p_a 0.3); (g, h) is a human tie the model ties too (0.5 = 0.5)
    assert result["diff"] == pytest.approx(2 / 3) and result["diff_pairs"] == 3
    assert result["tau"] == pytest.approx(3 / 4) and result["model_ties"] == 1 and result["human_ties"] == 1
    pd.DataFrame({"video_a": ["a", "x"], "video_b": ["b", "y"], "preference": ["A", "B"]}).to_csv(pairs, index=False)
    with pytest.raises(MatchError, match=r"row 2 \(line 3\): field 'video_b' = 'y': no comparison in"):
        comparison_report(str(pred), str(pairs))


def test_comparison_rows_are_the_runs_own_next_to_stock_question_rows(clean_plugin_state):
    """In a run mixing scores, comparisons and stock questions, a comparison row gets the choice mask, not the
    stock labels: the formatter records its origin as it does a scoring row's."""
    from types import SimpleNamespace

    from iovqa_plugin.data.pairs import PairSample
    from iovqa_plugin.patches.run import remember_sample_origins, run_samples, sample_origin, set_active_run

    scored = SimpleNamespace(file="train.csv", row=1, video="a.mp4", frames=["/cache/a/0.png", "/cache/a/1.png"])
    pair = PairSample(file="pairs.csv", row=3, key="k", media=("b.mp4", "c.mp4"), paths=("/d/b.mp4", "/d/c.mp4"),
                      human=0, prompt="which is better?", answer="A",
                      frames=[["/cache/b/0.png", "/cache/b/1.png"], ["/cache/c/0.png", "/cache/c/1.png"]])
    set_active_run(IOVQAArguments())
    remember_sample_origins([scored])
    remember_sample_origins([pair])
    question = [["/questions/q.mp4/0.png"]]
    assert run_samples([[scored.frames], pair.frames, question]) == [True, True, False]
    assert sample_origin(pair.frames) == "pairs.csv row 3 (comparison 'b.mp4' vs 'c.mp4')"
    assert sample_origin([scored.frames]) == "train.csv row 1 (video 'a.mp4')"


# --- soft choice targets from the two MOS and their raters' stds (iovqa_pair_soft_targets) ---------------------

def test_the_soft_choice_loss_equals_a_hand_computation_next_to_hard_rows():
    from types import SimpleNamespace

    from scipy.stats import norm

    from iovqa_plugin.data.levels import LevelTokens
    from iovqa_plugin.patches.trainer import LabelledLogitsTrainer
    from iovqa_plugin.train.labelled_logits import causal_lm_loss
    from iovqa_plugin.train.rank_loss import preference_probability
    from iovqa_plugin.train.soft_targets import CHOICE_KEY, choice_targets

    torch.manual_seed(0)
    a, b = 7, 8  # the choice tokens' ids
    logits = torch.randn(3, 3, 12)
    # row 0 a score (two digits), row 1 a comparison with a soft target, row 2 a comparison answered hard
    targets = torch.tensor([[3, 5, IGNORE_INDEX], [IGNORE_INDEX, a, IGNORE_INDEX], [b, IGNORE_INDEX, IGNORE_INDEX]])
    p = float(preference_probability(3.6, 3.1, 0.4, 0.3))
    assert p == pytest.approx(norm.cdf(0.5 / 0.5))  # (3.6 - 3.1) / sqrt(0.4^2 + 0.3^2)
    trainer = SimpleNamespace(_choices=LevelTokens(paths=((a,), (b,)), prefix=0))
    inputs, loss_function = LabelledLogitsTrainer._choice_loss(trainer, {CHOICE_KEY: choice_targets([None, p, None], 2),
                                                                        "input_ids": None})
    assert CHOICE_KEY not in inputs and "input_ids" in inputs
    log_p = torch.log_softmax(logits, dim=-1)
    by_hand = (-log_p[0, 0, 3] - log_p[0, 1, 5] - (p * log_p[1, 1, a] + (1 - p) * log_p[1, 1, b]) - log_p[2, 0, b]) / 4
    assert loss_function(logits, targets, None).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert loss_function(logits, targets, 8).item() == pytest.approx(by_hand.item() * 4 / 8, rel=1e-6)
    # as both stds go to 0 the target becomes the hard choice, and the loss the causal-LM loss
    for std, gap in ((0.1, 1e-2), (0.01, 1e-6), (0.0, 1e-9)):
        p = float(preference_probability(3.6, 3.1, std, std))
        _, sharp = LabelledLogitsTrainer._choice_loss(trainer, {CHOICE_KEY: choice_targets([None, p, None], 2)})
        assert 1 - p < gap
        assert sharp(logits, targets, None).item() == pytest.approx(causal_lm_loss(logits, targets).item(), abs=gap * 20)
    assert LabelledLogitsTrainer._choice_loss(trainer, {"input_ids": None})[1] is causal_lm_loss  # no soft rows
    with pytest.raises(Exception, match="needs iovqa_labelled_logits: true"):
        IOVQAArguments(pair_soft_targets=True, labelled_logits=False)


def test_soft_choice_targets_only_for_pairs_with_both_mos_and_both_stds(demo_dir, tmp_path, clean_plugin_state):
    from iovqa_plugin.patches.run import pair_targets, remember_pair_targets, set_active_run
    from iovqa_plugin.train.rank_loss import preference_probability

    videos = demo_rows(demo_dir)["video_name"].tolist()
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"video_a": videos[:3], "video_b": videos[3:6], "mos_a": [3.0, 2.0, 4.0], "mos_b": [2.0, 2.5, 1.0],
                  "std_a": [0.5, 0.5, ""], "std_b": [0.5, 0.2, 0.3]}).to_csv(path, index=False)
    samples, _, _ = load_pair_file(str(path), PairColumns(), config(tmp_path), "", progress=False)
    set_active_run(IOVQAArguments())
    remember_pair_targets(samples, preference_probability)
    found = pair_targets([s.media_lists()[1] for s in samples])
    assert found[:2] == pytest.approx([float(preference_probability(3.0, 2.0, 0.5, 0.5)),
                                       float(preference_probability(2.0, 2.5, 0.5, 0.2))])
    assert found[2] is None  # one std missing: the hard choice
    rerated = [replace(samples[0], row=7, stds=(0.9, 0.9))]  # the same two videos rated again, another target
    with pytest.raises(ValueError, match=r"pairs.csv row 7 .* shows the same two media as .*pairs.csv row 1"):
        remember_pair_targets(rerated, preference_probability)
    # drawn pairs carry the pointwise rows' MOS and stds (iovqa_std_column, read with pair soft targets on)
    table = demo_rows(demo_dir)
    table["MOS_std"] = 0.3
    table.to_csv(tmp_path / "train.csv", index=False)
    drawn, _, _ = load_drawn_pairs(str(tmp_path / "train.csv"), Columns("video_name", "Prompt", "Overall_MOS", "MOS_std"),
                                   config(tmp_path, pair_soft_targets=True, std_column="MOS_std"), "", progress=False)
    mos = dict(zip(table["video_name"], table["Overall_MOS"]))
    assert drawn and all(s.stds == (0.3, 0.3) and s.mos == (mos[s.media[0]], mos[s.media[1]]) for s in drawn)


def test_evaluation_reads_pairwise_accuracy_from_comparison_rows_next_to_scores(qwen_tokenizer):
    from types import SimpleNamespace

    from iovqa_plugin.data.grid import ScoreGrid
    from iovqa_plugin.train.score_metrics import ComputeScoreMetrics, ScoreLogits

    grid = ScoreGrid.from_tokenizer(qwen_tokenizer)
    a, b = qwen_tokenizer.convert_tokens_to_ids(["A", "B"])
    digit = {d: qwen_tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}
    vocab = len(qwen_tokenizer)
    # rows as compact_for_metrics packs them: labels[:, 0] unused, logits[:, j] predict labels[:, j + 1]
    labels = torch.full((6, 3), IGNORE_INDEX)
    for row, (first, second) in enumerate(((3, 7), (2, 0), (4, 5))):  # scored rows: MOS 3.7, 2.0, 4.5
        labels[row, 1:] = torch.tensor([digit[first], digit[second]])
    labels[3, 1], labels[4, 1], labels[5, 1] = a, b, a  # comparisons: A better, B better, A better
    logits = torch.zeros(6, 3, vocab)
    logits[0, 0, digit[4]], logits[1, 0, digit[1]], logits[2, 0, digit[5]] = 5.0, 5.0, 5.0
    logits[3, 0, a], logits[4, 0, b], logits[5, 0, b] = 2.0, 1.0, 0.5  # right, right, wrong
    reduced = ScoreLogits(grid, 1, torch.tensor([a, b]))(logits, labels)
    assert reduced[:, 2].tolist() == [0, 0, 0, 1, 1, 1]
    p = torch.sigmoid(torch.tensor([2.0, -1.0, -0.5]))  # P(A) over the two choice tokens
    assert reduced[3:, 0].tolist() == pytest.approx((2 * p - 1).tolist(), abs=1e-6)  # P(A) - P(B)
    assert reduced[3:, 1].tolist() == [1, -1, 1]
    assert reduced[:3, 1].tolist() == pytest.approx([3.7, 2.0, 4.5])  # the scored rows' MOS as before
    assert torch.equal(reduced[:3, :2], ScoreLogits(grid, 1)(logits[:3], labels[:3]))
    metrics = ComputeScoreMetrics(comparisons=True)(SimpleNamespace(predictions=reduced.numpy()))
    assert metrics["pairwise_diff"] == pytest.approx(2 / 3) and metrics["pairwise_tau"] == pytest.approx(2 / 3)
    assert metrics["srcc"] == pytest.approx(1.0)  # over the scored rows only: expected grades ~4, ~1, ~5
    only_pairs = ComputeScoreMetrics(comparisons=True)(SimpleNamespace(predictions=reduced[3:].numpy()))
    assert set(only_pairs) == {"pairwise_diff", "pairwise_tau"}

"""Several quality dimensions: recipe keys, sub-MOS rows, both layouts through the formatter and the digit mask,
per-dimension metrics and scores, and a joint run end to end."""

import json
import os
import re

import pandas as pd
import pytest
import torch

from conftest import base_recipe, train_in_process, write_recipe
from iovqa_plugin.config import IOVQAArguments, PluginConfigError
from iovqa_plugin.config_parser import build_config
from iovqa_plugin.data.annotations import AnnotationError, Columns, load_annotations
from iovqa_plugin.data.dimensions import joint_answer, joint_prefix, read_joint_answer, row_samples
from iovqa_plugin.data.label_formats import mos_to_label
from iovqa_plugin.data.prompt import build_prompt
from iovqa_plugin.data.labels import IGNORE_INDEX
from iovqa_plugin.train.mask import LabelMaskError, mask_labels, token_tables, trained_texts
from test_mask import kept_text, labels_for

FIVE = ("traditional", "alignment", "aesthetic", "temporal", "overall")
COLUMNS = Columns("video_name", "Prompt", "Overall_MOS")
ROW = {"Traditional_MOS": 3.666, "Alignment_MOS": 4.1, "Aesthetic_MOS": "3.45", "Temporal_MOS": 2.0, "Overall_MOS": 3.8}


def config(**keys):
    return build_config({f"iovqa_{k}": v for k, v in keys.items()})


def joint(names=FIVE):
    return config(dimensions=",".join(names), dimension_layout="joint")


# ---- recipe keys


def test_default_is_the_single_overall_score():
    default = IOVQAArguments()
    assert default.dimension_names == ("overall",) and not default.multi_dimension and default.scores_per_answer == 1
    labels = {"overall": "38"}
    assert row_samples("a red car", labels, default) == [(None, build_prompt("a red car"), "38")]
    assert row_samples("a red car", labels, config(dimensions="overall", dimension_layout="per_sample")) == \
        row_samples("a red car", labels, default)


@pytest.mark.parametrize("keys, message", [
    ({"dimensions": "overall", "dimension_layout": "joint"}, "joint needs at least two dimensions"),
    ({"dimensions": "temporal,temporal"}, "listed twice"),
    ({"dimensions": "motion2"}, "no digits"),
    ({"dimensions": "motion"}, "give the MOS column of dimension(s) ['motion']"),
    ({"dimensions": "temporal", "dimension_columns": {"overall": "X"}}, "does not list"),
    ({"dimensions": "temporal,overall", "dimension_columns": {"overall": "X"}}, "iovqa_mos_column"),
    ({"dimensions": "temporal,overall", "dimension_prompts": {"temporal": "no prompt field"}}, "{prompt}"),
    ({"dimensions": "temporal,overall", "dimension_layout": "joint", "dimension_prompts": {"temporal": "{prompt}"}},
     "per_sample prompts"),
    ({"dimensions": "temporal,overall", "label_format": "decimal"}, "label_format: integer"),
    ({"dimensions": "temporal,overall", "dimension_layout": "both"}, "dimension_layout must be one of"),
])
def test_bad_dimension_keys_are_refused(keys, message):
    with pytest.raises(PluginConfigError, match=re.escape(message)):
        config(**keys)


def test_keys_from_yaml_lists_and_command_line_text():
    assert config(dimensions=["temporal", "overall"]).dimension_names == ("temporal", "overall")
    remapped = config(dimensions="motion,overall", dimension_columns='{"motion": "Motion_MOS"}')
    assert remapped.dimension_columns == {"motion": "Motion_MOS"}


# ---- annotation rows


def write_rows(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def rows(n=3, changes=None):
    table = [{"video_name": f"v{i}.mp4", "Prompt": f"prompt {i}", **ROW} for i in range(n)]
    for (row, column), value in (changes or {}).items():
        table[row][column] = value
    return table


def load(path, cfg, tmp_path):
    """load_annotations with frames stubbed out (the rows' checks are the subject here)."""
    import iovqa_plugin.data.annotations as annotations

    real = annotations._attach_frames
    annotations._attach_frames = lambda samples, columns, config, progress: (samples, [])
    try:
        return load_annotations(path, COLUMNS, cfg, media_dir=str(tmp_path), progress=False)
    finally:
        annotations._attach_frames = real


def test_joint_rows_become_one_answer_with_every_score(tmp_path):
    samples, issues, _ = load(write_rows(tmp_path / "a.csv", rows(2)), joint(), tmp_path)
    assert not issues and len(samples) == 2
    assert samples[0].label == "traditional 37, alignment 41, aesthetic 35, temporal 20, overall 38"
    assert samples[0].dimension is None and "<video>" in samples[0].prompt
    assert "traditional N, alignment N, aesthetic N, temporal N, overall N" in samples[0].prompt
    assert not re.search(r"\d", re.sub(r"\d\d", "", samples[0].label))  # the words hold no digit


def test_per_sample_rows_become_one_sample_per_dimension(tmp_path):
    cfg = config(dimensions="temporal,overall", dimension_prompts={"temporal": "{video}Motion of {prompt}? "
                                                                   "{answer_format}"})
    samples, _, _ = load(write_rows(tmp_path / "a.csv", rows(2)), cfg, tmp_path)
    assert [(s.video, s.dimension, s.label) for s in samples] == [
        ("v0.mp4", "temporal", "20"), ("v0.mp4", "overall", "38"), ("v1.mp4", "temporal", "20"), ("v1.mp4", "overall", "38")]
    assert samples[0].prompt.startswith("<video>Motion of prompt 0?")
    assert samples[1].prompt == build_prompt("prompt 0")  # overall keeps the paper's prompt
    default = config(dimensions="aesthetic,overall")
    first = load(write_rows(tmp_path / "b.csv", rows(1)), default, tmp_path)[0][0]
    assert "Rate one dimension of the video only: aesthetic quality" in first.prompt


@pytest.mark.parametrize("value, reason", [
    (None, "MOS is empty"), ("", "MOS is empty"), ("  ", "MOS is empty"), ("7.5", "outside [1, 5]"),
    ("0.5", "outside [1, 5]"), ("good", "not a number"), ("nan", "empty or NaN"),
])
@pytest.mark.parametrize("layout", ["joint", "per_sample"])
def test_a_bad_sub_mos_names_file_row_and_field(tmp_path, value, reason, layout):
    cfg = config(dimensions=",".join(FIVE), dimension_layout=layout)
    path = write_rows(tmp_path / "a.csv", rows(3, {(1, "Temporal_MOS"): value}))
    with pytest.raises(AnnotationError) as err:
        load(path, cfg, tmp_path)
    assert "a.csv: row 2 (line 3): field 'Temporal_MOS'" in str(err.value) and reason in str(err.value)
    assert len(err.value.issues) == 1

    skip = config(dimensions=",".join(FIVE), dimension_layout=layout, on_bad_row="skip")
    samples, issues, stats = load(path, skip, tmp_path)
    assert [(i.row, i.field) for i in issues] == [(2, "Temporal_MOS")]
    assert {s.row for s in samples} == {1, 3} and stats["skipped_rows"] == 1


def test_a_missing_sub_mos_column_is_named(tmp_path):
    table = pd.DataFrame(rows(2)).drop(columns=["Aesthetic_MOS"])
    table.to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['Aesthetic_MOS'\].*iovqa_dimension_columns"):
        load(str(tmp_path / "a.csv"), joint(), tmp_path)
    # remapped like the overall column; overall follows the run's MOS column
    table = table.rename(columns={"Temporal_MOS": "motion", "Overall_MOS": "total"})
    table.to_csv(tmp_path / "b.csv", index=False)
    cfg = config(dimensions="temporal,overall", dimension_layout="joint", dimension_columns={"temporal": "motion"})
    samples, _, _ = load_annotations_with(tmp_path / "b.csv", cfg, tmp_path, Columns("video_name", "Prompt", "total"))
    assert samples[0].label == "temporal 20, overall 38"


def load_annotations_with(path, cfg, tmp_path, columns):
    import iovqa_plugin.data.annotations as annotations

    real = annotations._attach_frames
    annotations._attach_frames = lambda samples, columns, config, progress: (samples, [])
    try:
        return load_annotations(str(path), columns, cfg, media_dir=str(tmp_path), progress=False)
    finally:
        annotations._attach_frames = real


# ---- the digit mask, both layouts, two tokenizers


def answers(layout):
    cfg = joint(FIVE) if layout == "joint" else config(dimensions=",".join(FIVE))
    scores = [{"traditional": "37", "alignment": "41", "aesthetic": "35", "temporal": "10", "overall": "50"},
              {"traditional": "20", "alignment": "19", "aesthetic": "44", "temporal": "33", "overall": "28"}]
    return [answer for labels in scores for _, _, answer in row_samples("p", labels, cfg)], cfg.scores_per_answer


@pytest.mark.parametrize("tokenizer_name", ["qwen_tokenizer", "grouping_tokenizer"])
@pytest.mark.parametrize("layout", ["joint", "per_sample"])
def test_mask_keeps_every_score_and_nothing_else(request, tokenizer_name, layout):
    tokenizer = request.getfixturevalue(tokenizer_name)
    texts, scores = answers(layout)
    labels = labels_for(tokenizer, texts)
    masked = mask_labels(labels, *token_tables(tokenizer), scores=scores)
    expected = ["".join(re.findall(r"\d\d", t)) for t in texts]
    assert [t.replace(" ", "") for t in kept_text(tokenizer, masked)] == expected
    kept = (masked != IGNORE_INDEX).sum(1).tolist()
    per_score = 2 if tokenizer_name == "qwen_tokenizer" else 1
    assert kept == [per_score * scores] * len(texts)


def test_joint_prompt_names_a_custom_dimension_once():
    cfg = config(dimensions="sharpness,motion,overall", dimension_layout="joint",
                 dimension_columns={"sharpness": "S", "motion": "M"})
    (_, prompt, answer), = row_samples("a cat", {"sharpness": "32", "motion": "49", "overall": "13"}, cfg)
    assert "- sharpness\n- motion\n- overall: overall quality" in prompt and "sharpness: sharpness" not in prompt
    assert answer == "sharpness 32, motion 49, overall 13"


@pytest.mark.parametrize("tokenizer_name", ["qwen_tokenizer", "grouping_tokenizer"])
def test_logged_targets_show_each_score_apart(request, tokenizer_name):
    tokenizer = request.getfixturevalue(tokenizer_name)
    names = ("sharpness", "motion", "look", "overall")
    answer = "sharpness 32, motion 49, look 13, overall 29"
    masked = mask_labels(labels_for(tokenizer, [answer]), *token_tables(tokenizer), scores=4)
    assert trained_texts(masked, tokenizer, names) == [answer]  # not '32491329'
    assert trained_texts(masked, tokenizer) == ["32 49 13 29"]
    single = mask_labels(labels_for(tokenizer, ["37"]), *token_tables(tokenizer))
    assert trained_texts(single, tokenizer) == ["37"]


@pytest.mark.parametrize("tokenizer_name", ["qwen_tokenizer", "grouping_tokenizer"])
def test_joint_mask_refuses_a_missing_or_cut_score(request, tokenizer_name):
    tokenizer = request.getfixturevalue(tokenizer_name)
    is_number, digits = token_tables(tokenizer)
    whole = "traditional 37, alignment 41, overall 50"
    good = labels_for(tokenizer, [whole])
    assert kept_text(tokenizer, mask_labels(good, is_number, digits, scores=3))[0].replace(" ", "") == "374150"
    missing = labels_for(tokenizer, ["traditional 37, alignment 41"])
    with pytest.raises(LabelMaskError, match=r"\[\[2, 2, 0\]\]"):
        mask_labels(missing, is_number, digits, scores=3)
    ids = tokenizer.encode(whole, add_special_tokens=False)
    cut = torch.tensor([[IGNORE_INDEX] * 3 + ids[:-1]])  # cutoff_len cut the last digit (or the last integer)
    with pytest.raises(LabelMaskError, match="cut it off"):
        mask_labels(cut, is_number, digits, scores=3)


@pytest.mark.parametrize("tokenizer_name", ["qwen_tokenizer", "grouping_tokenizer"])
def test_joint_prefix_tokenizes_as_the_trained_answer_does(request, tokenizer_name):
    tokenizer = request.getfixturevalue(tokenizer_name)
    names = ("traditional", "alignment", "overall")
    answer = "traditional 37, alignment 41, overall 50"
    full = tokenizer.encode(answer, add_special_tokens=False)
    for k, earlier in enumerate(([], ["37"], ["37", "41"])):
        prefix = tokenizer.encode(joint_prefix(names, k, earlier), add_special_tokens=False)
        assert full[: len(prefix)] == prefix
        assert tokenizer.decode(full[len(prefix):])[:2] == ("37", "41", "50")[k]
    read = read_joint_answer(answer, names)
    assert {n: v for n, (v, _) in read.items()} == {"traditional": 3.7, "alignment": 4.1, "overall": 5.0}
    broken = read_joint_answer("traditional 37, overall 99", names)
    assert broken["alignment"][0] is None and "no 'alignment' score" in broken["alignment"][1]
    assert broken["overall"][0] is None and "out of range" in broken["overall"][1]


# ---- in-training metrics of several scores


def test_metrics_read_each_score_at_its_own_first_token(qwen_tokenizer):
    from iovqa_plugin.data.grid import ScoreGrid
    from iovqa_plugin.train.labelled_logits import compact_for_metrics, next_token_targets
    from iovqa_plugin.train.score_metrics import ComputeScoreMetrics, score_logits

    grid = ScoreGrid.from_tokenizer(qwen_tokenizer)
    texts = ["traditional 37, overall 41", "traditional 12, overall 50", "traditional 25, overall 33"]
    labels = mask_labels(labels_for(qwen_tokenizer, texts), *token_tables(qwen_tokenizer), scores=2)
    torch.manual_seed(0)
    logits = torch.randn(labels.shape[0], labels.shape[1], len(qwen_tokenizer))
    both = score_logits(logits, labels, grid, scores=2)
    assert both[:, 1].tolist() == pytest.approx([3.7, 1.2, 2.5]) and both[:, 3].tolist() == pytest.approx([4.1, 5.0, 3.3])
    for k in range(2):  # each score alone, the other's labels ignored, gives the same columns
        runs = (labels != IGNORE_INDEX).long().cumsum(1)
        alone = torch.where((runs > 2 * k) & (runs <= 2 * k + 2), labels, torch.full_like(labels, IGNORE_INDEX))
        assert torch.allclose(both[:, 2 * k: 2 * k + 2], score_logits(logits, alone, grid))
    # the labelled-position path's packed logits give the same values
    targets = next_token_targets(labels)
    positions = (targets != IGNORE_INDEX).any(0).nonzero().flatten()
    packed, packed_labels = compact_for_metrics(logits[:, positions], targets[:, positions])
    assert torch.allclose(score_logits(packed, packed_labels, grid, scores=2), both)

    from transformers import EvalPrediction

    metrics = ComputeScoreMetrics(("traditional", "overall"))(EvalPrediction(predictions=both.numpy(), label_ids=None))
    for key in ("srcc", "plcc", "final"):
        assert metrics[key] == pytest.approx((metrics[f"{key}_traditional"] + metrics[f"{key}_overall"]) / 2)


@pytest.mark.slow
def test_labelled_logits_loss_matches_stock_with_several_scores(qwen_tokenizer, tmp_path):
    from iovqa_plugin.demo.tiny_model import build_tiny_model
    from test_labelled_logits import assert_same, batch, load as load_model

    model = load_model(build_tiny_model(str(tmp_path / "tiny"), hidden_size=64, head_std=0.1))
    answers_ = ("traditional 37, overall 41", "traditional 12, overall 50", "traditional 25, overall 33")
    inputs = batch(qwen_tokenizer, answers_, mask=False)
    inputs["labels"] = mask_labels(inputs["labels"], *token_tables(qwen_tokenizer), scores=2)
    assert ((inputs["labels"] != IGNORE_INDEX).sum(1) == 4).all()
    assert_same(model, [inputs])


# ---- the ladder's sub-MOS


def test_demo_sub_mos_differ_by_dimension(demo_dir):
    table = pd.read_csv(os.path.join(demo_dir, "demo", "train.csv"))
    level = table["video_name"].str.extract(r"_L(\d)")[0].astype(int)
    by_level = table.groupby(level).mean(numeric_only=True)
    # temporal quality follows dropped frames only (levels 3-4); traditional falls at every level
    assert by_level["Temporal_MOS"].loc[:2].max() - by_level["Temporal_MOS"].loc[:2].min() < 0.5
    assert by_level["Traditional_MOS"].is_monotonic_decreasing
    assert by_level["Temporal_MOS"].loc[2] - by_level["Temporal_MOS"].loc[4] > 1.5
    rank = table[["Traditional_MOS", "Alignment_MOS", "Aesthetic_MOS", "Temporal_MOS"]].corr("spearman")
    assert (rank.values[~torch.eye(4, dtype=torch.bool).numpy()] < 0.97).all()


# ---- end to end: joint training, scoring, evaluation


@pytest.mark.slow
def test_joint_recipe_trains_scores_and_evaluates(tiny_model, demo_dir, tmp_path, capsys):
    from iovqa_plugin.cli import main

    out = str(tmp_path / "run")
    names = ("traditional", "temporal", "overall")
    recipe = base_recipe(tiny_model, demo_dir, out, max_steps=2, save_steps=2, eval_dataset="demo_val",
                         do_eval=True, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4,
                         iovqa_dimensions=",".join(names), iovqa_dimension_layout="joint")
    path = write_recipe(tmp_path / "r.yaml", recipe)
    log = train_in_process(recipe)
    targets = eval(re.search(r"first batch targets (\[.*?\])", log).group(1))
    train = pd.read_csv(os.path.join(demo_dir, "demo", "train.csv"))
    wanted = {joint_answer({n: mos_to_label(row[c]) for n, c in zip(names, ("Traditional_MOS", "Temporal_MOS",
                                                                             "Overall_MOS"))}, names)
              for _, row in train.iterrows()}
    assert len(targets) == 4 and set(targets) <= wanted  # the six digits of the three scores (shown apart), nothing else
    with open(os.path.join(out, "eval_results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    for name in names:
        assert -1 <= results[f"eval_srcc_{name}"] <= 1 and -1 <= results[f"eval_plcc_{name}"] <= 1
    assert results["eval_srcc"] == pytest.approx(sum(results[f"eval_srcc_{n}"] for n in names) / 3)

    preds = str(tmp_path / "preds.csv")
    capsys.readouterr()
    code = main(["score", "--recipe", path, "--data", "demo_test", "--out", preds, "--mode", "both",
                 "--batch-size", "5"])
    assert code in (0, 1), capsys.readouterr().err[-3000:]  # 1: a random model may answer off the format
    table = pd.read_csv(preds)
    assert len(table) == 10
    for name in names:
        column = table[f"expected_mos_{name}"]
        assert column.between(1, 5).all() and table[f"integer_mass_{name}"].between(0, 1).all()
    assert table["expected_mos"].tolist() == pytest.approx(
        table[[f"expected_mos_{n}" for n in names]].mean(axis=1).tolist())
    for name in names:  # each greedy score is read after its name, or its absence is recorded
        greedy, error = table[f"greedy_mos_{name}"], table[f"greedy_error_{name}"]
        assert (greedy.between(1, 5) | error.notna()).all(), table.to_string()

    capsys.readouterr()
    assert main(["eval", "--pred", preds, "--labels", "demo_test", "--recipe", path,
                 "--score-column", "expected_mos"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["dimensions"]) == set(names)
    assert report["mean"]["srcc"] == pytest.approx(sum(report["dimensions"][n]["srcc"] for n in names) / 3)
    assert os.path.isfile(str(tmp_path / "preds_expected_mos_temporal_scatter.png"))  # named after the column

    ensemble = str(tmp_path / "ens.csv")
    assert main(["ensemble", "--pred", preds, preds, "--out", ensemble, "--recipe", path,
                 "--score-column", "expected_mos"]) == 0
    combined = pd.read_csv(ensemble)
    assert combined.set_index("video")["pred_mos_temporal"].to_dict() == pytest.approx(
        table.set_index("video")["expected_mos_temporal"].to_dict())


@pytest.mark.slow
def test_per_sample_recipe_trains_one_sample_per_row_and_dimension(tiny_model, demo_dir, tmp_path):
    out = str(tmp_path / "run")
    recipe = base_recipe(tiny_model, demo_dir, out, max_steps=1, save_steps=1, per_device_train_batch_size=6,
                         iovqa_dimensions="temporal,overall")
    log = train_in_process(recipe)
    assert "30 rows, 30 used, 0 skipped (60 samples: one per row and dimension)" in log
    targets = eval(re.search(r"first batch targets (\[.*?\])", log).group(1))
    train = pd.read_csv(os.path.join(demo_dir, "demo", "train.csv"))
    wanted = {mos_to_label(m) for column in ("Temporal_MOS", "Overall_MOS") for m in train[column]}
    assert len(targets) == 6 and all(re.fullmatch(r"[1-5]\d", t) for t in targets) and set(targets) <= wanted


# ---- the scorer's per-dimension decoding (untrained tiny model, no adapter)


def scorer_for(tiny_model, demo_dir, **keys):
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    iovqa_args = config(frame_cache_dir=os.path.join(demo_dir, "frame_cache"), **keys)
    return Scorer(ScorerSettings(model=tiny_model, adapter=None, iovqa_args=iovqa_args,
                                 model_keys={"video_max_pixels": 50176, "video_min_pixels": 3136}))


def scoring_rows_of(demo_dir, n=2):
    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).iloc[[0, 6][:n]]
    return [(v, os.path.join(demo_dir, v), p) for v, p in zip(table["video_name"], table["Prompt"])]



@pytest.mark.slow
def test_per_sample_scores_each_dimension_with_its_prompt(tiny_model, demo_dir):
    rows = scoring_rows_of(demo_dir)
    single = list(scorer_for(tiny_model, demo_dir).score_rows(rows, mode="both"))
    scorer = scorer_for(tiny_model, demo_dir, dimensions="temporal,overall")
    multi = list(scorer.score_rows(rows, mode="both"))
    for one, many in zip(single, multi):
        overall, temporal = many.dimensions["overall"], many.dimensions["temporal"]
        # overall is asked with the paper's prompt: the single-score run's numbers
        assert overall.expected_mos == pytest.approx(one.expected_mos, rel=1e-5)
        assert overall.greedy_text == one.greedy_text
        assert temporal.expected_mos != pytest.approx(overall.expected_mos, rel=1e-7)  # its own prompt
        assert many.expected_mos == pytest.approx((overall.expected_mos + temporal.expected_mos) / 2)
        row = many.row()
        assert row["expected_mos_temporal"] == temporal.expected_mos and row["pred_mos"] == many.expected_mos


@pytest.mark.slow
def test_joint_scores_are_decoded_one_by_one_after_the_earlier_ones(tiny_model, demo_dir, monkeypatch):
    scorer = scorer_for(tiny_model, demo_dir, dimensions="traditional,temporal,overall", dimension_layout="joint")
    names = scorer.iovqa_args.dimension_names
    answers, asked = iter(["37", "??", "41"]), []

    def greedy(batch):  # one greedy score per dimension, after the answer so far
        asked.append([scorer.loaded.tokenizer.decode(row[-12:]) for row in batch["input_ids"]])
        return [next(answers)] * batch["input_ids"].shape[0]

    monkeypatch.setattr(scorer, "greedy", greedy)
    rows = scoring_rows_of(demo_dir)
    results = list(scorer.score_rows(rows, mode="both", batch_size=len(rows)))
    from iovqa_plugin.data.grid import expected_mos

    assert all(a.endswith("assistant\ntraditional ") for a in asked[0])
    assert all(a.endswith("traditional 37, temporal ") for a in asked[1])
    for i, ((video, path, prompt), result) in enumerate(zip(rows, results)):
        parts = result.dimensions
        assert (parts["traditional"].greedy_mos, parts["overall"].greedy_mos) == (3.7, 4.1)
        assert parts["temporal"].greedy_mos is None and "temporal" in result.greedy_error
        assert result.greedy_text == "traditional 37, temporal ??, overall 41"
        assert result.greedy_mos is None  # the mean needs every dimension
        feature = scorer.encode(prompt, scorer.cache.get(path))
        # temporal's greedy score is missing: overall is read after temporal's rounded expected score
        temporal = str(int(round(parts["temporal"].expected_mos * 10)))
        assert asked[2][i].endswith(f"traditional 37, temporal {temporal}, overall ")
        for k, earlier in ((0, []), (1, ["37"]), (2, ["37", temporal])):
            prefixed = scorer._with_answer_prefix(feature, joint_prefix(names, k, earlier))
            mean, _ = expected_mos(scorer.distribution(scorer.batch([prefixed]))[0])
            assert parts[names[k]].expected_mos == pytest.approx(float(mean[0]), rel=1e-4)

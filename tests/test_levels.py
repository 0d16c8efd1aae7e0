"""Level-word labels (Q-Align) and soft targets (DeQA-Score): labels, token paths, mask, loss, scoring."""

import json
import math
import os

import pandas as pd
import pytest
import torch

from iovqa_plugin.config import IOVQAArguments, PluginConfigError
from iovqa_plugin.config_parser import build_config
from iovqa_plugin.data.annotations import AnnotationError, Columns, load_annotations
from iovqa_plugin.data.label_formats import label_to_mos, mos_to_label, read_answer
from iovqa_plugin.data.labels import LEVEL_WORDS, mos_to_level
from iovqa_plugin.data.levels import LevelTokens, LevelTokensError, expected_level
from iovqa_plugin.data.prompt import build_prompt
from iovqa_plugin.data.labels import IGNORE_INDEX
from iovqa_plugin.train.mask import LabelMaskError, mask_level_labels
from iovqa_plugin.train.soft_targets import gaussian_levels, level_logits, row_sigmas, soft_level_loss


@pytest.mark.parametrize(
    "mos, level",
    [(1, 1), ("1.49", 1), ("1.5", 2), (2.5, 3), ("2.4999", 2), (3.666, 4), ("3.5", 4), (4.5, 5), (4.4999, 4), (5, 5)],
)
def test_mos_to_nearest_level_half_up(mos, level):
    assert mos_to_level(mos) == level
    assert mos_to_label(mos, "level") == LEVEL_WORDS[level - 1]
    assert label_to_mos(LEVEL_WORDS[level - 1], "level") == level


def test_level_answers_read_back_as_levels_and_prompt_asks_for_a_word():
    assert read_answer("good", "level") == (4.0, None)
    assert read_answer("Excellent.", "level") == (5.0, None)
    assert read_answer("the video is poor, not good", "level") == (2.0, None)  # the first level word
    for text in ("goodness", "37", ""):
        mos, reason = read_answer(text, "level")
        assert mos is None and reason.startswith("no level word")
    prompt = build_prompt("a cat", "level")
    assert "one of bad, poor, fair, good, excellent" in prompt and "Output the word only" in prompt
    assert "Output the number only" in build_prompt("a cat", "integer")


def test_level_recipe_keys_are_checked():
    assert build_config({"iovqa_label_format": "level", "iovqa_level_targets": "soft"}).soft_targets
    with pytest.raises(PluginConfigError, match="needs iovqa_label_format: level"):
        build_config({"iovqa_level_targets": "soft"})
    with pytest.raises(PluginConfigError, match="needs iovqa_label_format: level"):
        build_config({"iovqa_label_format": "level", "iovqa_label_mask": "none", "iovqa_level_targets": "soft"})
    with pytest.raises(PluginConfigError, match="iovqa_level_sigma must be > 0"):
        build_config({"iovqa_label_format": "level", "iovqa_level_targets": "soft", "iovqa_level_sigma": 0})
    with pytest.raises(PluginConfigError, match="iovqa_std_column is read for iovqa_level_targets: soft "):
        build_config({"iovqa_label_format": "level", "iovqa_std_column": "std"})
    with pytest.raises(PluginConfigError, match="iovqa_head needs"):
        build_config({"iovqa_label_format": "level", "iovqa_head": "softmax_regression"})


# --- token paths -------------------------------------------------------------------------------------------

def char_tokenizer(merges=()):
    """A tokenizer that writes every word letter by letter after a shared "▁" (sentencepiece style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = sorted(set("".join(LEVEL_WORDS)) | set("xyz"))
    vocab = {"<eos>": 0, "\n": 1, "\u2581": 2, **{c: i + 3 for i, c in enumerate(letters)}}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", name_or_path="char-tokenizer")


def answers_of(tokenizer):
    """Each level word encoded as a template writes an answer: the word, then an end token and a newline."""
    return [tokenizer.encode(word, add_special_tokens=False) + [0, 1] for word in LEVEL_WORDS]


def test_level_tokens_of_the_real_qwen_vocabulary_through_its_template(qwen_tokenizer):
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    from iovqa_plugin.patches.score_position import level_tokens

    template = get_template_and_fix_tokenizer(qwen_tokenizer, DataArguments(template="qwen2_vl"))
    levels = level_tokens(template, qwen_tokenizer)
    # after "<|im_start|>assistant\n" the words have no leading space; "poor" and "excellent" are two tokens
    assert [qwen_tokenizer.decode(list(path)) for path in levels.paths] == list(LEVEL_WORDS)
    assert [len(path) for path in levels.paths] == [1, 2, 1, 1, 2] and levels.prefix == 0
    assert qwen_tokenizer.convert_ids_to_tokens(levels.ids.tolist()) == ["bad", "po", "fair", "good", "ex"]


def test_level_tokens_of_a_letter_by_letter_tokenizer():
    tokenizer = char_tokenizer()
    levels = LevelTokens.from_answers(answers_of(tokenizer), "char-tokenizer")
    assert levels.prefix == 1  # every answer starts with the same "▁": the letters after it tell the levels apart
    assert levels.shared_prefix == (2,)
    assert tokenizer.convert_ids_to_tokens(levels.ids.tolist()) == ["b", "p", "f", "g", "e"]
    assert [len(p) for p in levels.paths] == [1 + len(w) for w in LEVEL_WORDS]  # template ending dropped


def test_levels_sharing_their_distinguishing_token_are_refused():
    tokenizer = char_tokenizer(merges=[("\u2581", "b")])  # "bad" -> "▁b" "a" "d"; the others -> "▁" + letters
    with pytest.raises(LevelTokensError) as err:
        LevelTokens.from_answers(answers_of(tokenizer), "char-tokenizer", decode=lambda t: tokenizer.decode([t]))
    message = str(err.value)
    assert "'char-tokenizer'" in message and "['poor', 'fair', 'good', 'excellent'] all start with token 2" in message


# --- mask, expected score, soft loss ------------------------------------------------------------------------

def padded_rows(rows, width):
    return torch.tensor([[IGNORE_INDEX] * lead + ids + [IGNORE_INDEX] * (width - lead - len(ids)) for lead, ids in rows])


def brute_force_kept(tokenizer, row):
    """The shortest start of the row's labelled tokens whose text is a level word, found by decoding."""
    positions = [i for i, t in enumerate(row) if t != IGNORE_INDEX]
    for k in range(1, len(positions) + 1):
        text = tokenizer.decode([row[i] for i in positions[:k]]).replace("\u2581", " ").strip()
        if text in LEVEL_WORDS:
            return positions[:k], LEVEL_WORDS.index(text) + 1
    return None, None


@pytest.mark.parametrize("kind", ["qwen", "letters"])
def test_level_mask_matches_brute_force(kind, qwen_tokenizer):
    if kind == "qwen":
        tokenizer, end = qwen_tokenizer, qwen_tokenizer.encode("<|im_end|>\n", add_special_tokens=False)
    else:
        tokenizer, end = char_tokenizer(), [0, 1]
    answers = [tokenizer.encode(w, add_special_tokens=False) + end for w in LEVEL_WORDS]
    levels = LevelTokens.from_answers(answers, kind)
    generator = torch.Generator().manual_seed(0)
    order = torch.randint(0, 5, (12,), generator=generator).tolist()
    rows = [(int(torch.randint(1, 6, (1,), generator=generator)), answers[i]) for i in order]
    labels = padded_rows(rows, 24)
    masked, found = mask_level_labels(labels, levels)
    for b, row in enumerate(labels.tolist()):
        kept, level = brute_force_kept(tokenizer, row)
        assert (masked[b] != IGNORE_INDEX).nonzero().flatten().tolist() == kept
        assert masked[b, kept].tolist() == [row[i] for i in kept]
        assert found[b] == level == order[b] + 1
    cut = padded_rows([(2, answers[4][:-3])], 24)  # "excellent" cut by cutoff_len
    with pytest.raises(LabelMaskError, match=r"batch row\(s\) \[0\]: the response labels do not start with a level"):
        mask_level_labels(cut, levels)


def test_expected_score_and_level_position_match_brute_force():
    tokenizer = char_tokenizer()
    levels = LevelTokens.from_answers(answers_of(tokenizer), "char-tokenizer")
    vocab = len(tokenizer)
    logits = torch.randn(3, 9, vocab, generator=torch.Generator().manual_seed(1))
    # next-token targets: row b's answer (shared "▁", then the word) starts at column 1 + b
    targets = torch.full((3, 9), IGNORE_INDEX)
    for b, level in enumerate((2, 5, 1)):
        path = list(levels.paths[level - 1])[:8 - b]
        targets[b, 1 + b: 1 + b + len(path)] = torch.tensor(path)
    at = level_logits(logits, targets, levels.prefix)
    mean, std = expected_level(levels.probabilities(at))
    for b in range(3):
        column = 2 + b  # the target after the shared "▁": the level's first letter
        z = [float(logits[b, column, int(levels.ids[k])]) for k in range(5)]
        weights = [math.exp(v) for v in z]
        p = [w / sum(weights) for w in weights]
        expected = sum(pk * (k + 1) for k, pk in enumerate(p))
        assert mean[b].item() == pytest.approx(expected, abs=1e-5)
        assert std[b].item() == pytest.approx(math.sqrt(sum(pk * (k + 1 - expected) ** 2 for k, pk in enumerate(p))), abs=1e-5)


def test_soft_target_loss_equals_a_hand_computed_value():
    # vocabulary of 7: token 0 a template token, 1..5 the levels' tokens, 6 the second token of level 5
    ids = torch.tensor([1, 2, 3, 4, 5])
    logits = torch.tensor(
        [
            [[0.0, 1.0, 2.0, 0.5, -1.0, 0.0, 0.0], [0.0] * 7],  # row 0: the level ("fair") predicted at column 0
            [[1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0], [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5]],  # row 1: "excellent" = 5, 6
        ]
    )
    targets = torch.tensor([[3, IGNORE_INDEX], [5, 6]])
    mos, sigma = torch.tensor([3.4, 4.6]), torch.tensor([0.5, 0.8])
    loss = soft_level_loss(logits, targets, ids, 0, gaussian_levels(mos, sigma))

    def log_softmax(z, i):
        return z[i] - math.log(sum(math.exp(v) for v in z))

    def gaussian(m, s):
        w = [math.exp(-((k - m) ** 2) / (2 * s * s)) for k in (1, 2, 3, 4, 5)]
        return [v / sum(w) for v in w]

    z00, z10, z11 = logits[0, 0].tolist(), logits[1, 0].tolist(), logits[1, 1].tolist()
    soft0 = -sum(t * log_softmax(z00, k + 1) for k, t in enumerate(gaussian(3.4, 0.5)))
    soft1 = -sum(t * log_softmax(z10, k + 1) for k, t in enumerate(gaussian(4.6, 0.8)))
    hard = -log_softmax(z11, 6)  # the rest of "excellent" keeps its one-hot cross-entropy
    assert loss.item() == pytest.approx((soft0 + soft1 + hard) / 3, rel=1e-6)
    # a target sum over 2 items (the Trainer's count) instead of the mean
    summed = soft_level_loss(logits, targets, ids, 0, gaussian_levels(mos, sigma), num_items_in_batch=2)
    assert summed.item() == pytest.approx((soft0 + soft1 + hard) / 2, rel=1e-6)
    # sigma -> 0 on a MOS that is a level: the hard cross-entropy
    one_hot = soft_level_loss(logits, targets, ids, 0, gaussian_levels(torch.tensor([3.0, 5.0]), 0.0))
    assert one_hot.item() == pytest.approx((-log_softmax(z00, 3) - log_softmax(z10, 5) + hard) / 3, rel=1e-6)
    assert row_sigmas([None, 0.3], 0.5).tolist() == pytest.approx([0.5, 0.3])


# --- the std column -----------------------------------------------------------------------------------------

def soft_config(tmp_path, **kw):
    return IOVQAArguments(label_format="level", level_targets="soft", std_column="MOS_std",
                          frame_cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out"), **kw)


def test_bad_std_cells_name_file_row_and_field(tmp_path):
    cells = ["", "abc", "-0.1", "4.5", "nan", "inf"]
    rows = [{"video_name": f"v{i}.mp4", "Prompt": "p", "Overall_MOS": "3", "MOS_std": c} for i, c in enumerate(cells)]
    path = tmp_path / "a.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    columns = Columns("video_name", "Prompt", "Overall_MOS", std="MOS_std")
    with pytest.raises(AnnotationError) as err:
        load_annotations(str(path), columns, soft_config(tmp_path), str(tmp_path), progress=False)
    found = {(i.row, i.field): i.reason for i in err.value.issues}
    assert set(found) == {(r, "MOS_std") for r in range(1, 7)}
    assert found[(1, "MOS_std")] == "MOS standard deviation is empty"
    assert found[(2, "MOS_std")] == "MOS standard deviation is not a number: 'abc'"
    assert found[(3, "MOS_std")] == "MOS standard deviation -0.1 is outside [0, 4]"
    assert found[(4, "MOS_std")] == "MOS standard deviation 4.5 is outside [0, 4]"
    assert "NaN" in found[(5, "MOS_std")] and "finite" in found[(6, "MOS_std")]
    assert f"{path}: row 3 (line 4): field 'MOS_std' = '-0.1'" in str(err.value)
    # under skip they are reported, not dropped silently
    samples, issues, stats = load_annotations(str(path), columns, soft_config(tmp_path, on_bad_row="skip"),
                                              str(tmp_path), progress=False)
    assert samples == [] and stats["skipped_rows"] == 6 and {i.row for i in issues} == set(range(1, 7))
    pd.DataFrame(rows).drop(columns="MOS_std").to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['MOS_std'\]"):
        load_annotations(str(path), columns, soft_config(tmp_path), str(tmp_path), progress=False)


# --- end to end (conftest's `level_run`) ----------------------------------------------------------------------

@pytest.mark.slow
def test_level_run_trains_scores_and_evaluates(level_run, tmp_path, capsys):
    from iovqa_plugin.cli import main

    recipe, out, data, log = level_run
    # the mask keeps the level words: "poor" and "excellent" are two Qwen tokens each, and decode whole
    line = next(l for l in log.splitlines() if "label mask active" in l)
    texts, rest = line.split("first batch targets ", 1)[1].split("; MOS ")
    mos, sigma = rest.split(", soft-target sigma ")
    targets, mos, sigma = eval(texts), eval(mos), eval(sigma)
    assert len(targets) == 4 and set(targets) <= set(LEVEL_WORDS)
    assert targets == [mos_to_label(m, "level") for m in mos]  # each row's MOS reached the batch with its label
    assert sigma == pytest.approx([0.2 + 0.1 * m for m in mos], abs=1e-4)  # from the rows' std column
    with open(os.path.join(out, "eval_results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    assert -1 <= results["eval_srcc"] <= 1 and results["eval_final"] == pytest.approx(
        (results["eval_srcc"] + results["eval_plcc"]) / 2)
    with open(os.path.join(out, "trainer_log.jsonl"), encoding="utf-8") as handle:
        losses = [json.loads(l)["loss"] for l in handle if '"loss"' in l]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)

    pred = str(tmp_path / "pred.csv")
    assert main(["score", "--recipe", recipe, "--data", "lv_test", "--out", pred, "--mode", "both"]) == 0
    table = pd.read_csv(pred)
    test = pd.read_csv(os.path.join(data, "test.csv"))
    assert len(table) == len(test) and table["error"].isna().all()
    assert table["expected_mos"].between(1, 5).all() and (table["pred_mos"] == table["expected_mos"]).all()
    probabilities = table[[f"p_{w}" for w in LEVEL_WORDS]].to_numpy()
    assert probabilities.sum(axis=1) == pytest.approx([1.0] * len(table))
    assert (probabilities @ [1, 2, 3, 4, 5]) == pytest.approx(table["expected_mos"].to_numpy(), abs=1e-5)
    for text, mos in zip(table["greedy_text"], table["greedy_mos"]):
        assert read_answer(str(text), "level")[0] == (None if pd.isna(mos) else mos)
    report = str(tmp_path / "report.json")
    assert main(["eval", "--pred", pred, "--labels", "lv_test", "--recipe", recipe, "--report", report,
                 "--plot", str(tmp_path / "p.png")]) == 0
    with open(report, encoding="utf-8") as handle:
        evaluation = json.load(handle)
    assert evaluation["n"] == len(test)
    ensemble, other = str(tmp_path / "ensemble.csv"), str(tmp_path / "other.csv")
    table.to_csv(other, index=False)  # a level run is an ensemble member like any other
    assert main(["ensemble", "--pred", pred, other, "--weights", "0.5", "0.5", "--out", ensemble]) == 0
    assert pd.read_csv(ensemble)["pred_mos"].to_numpy() == pytest.approx(table["pred_mos"].to_numpy())


@pytest.mark.slow
def test_level_expected_score_equals_brute_force_enumeration(level_run):
    """The scorer's level distribution vs each level word scored after the prompt by full forwards (no cache)."""
    from iovqa_plugin.score.decoding import level_distribution
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    recipe, _, data, _ = level_run
    scorer = Scorer(ScorerSettings.from_recipe(recipe))
    levels = scorer.levels
    test = pd.read_csv(os.path.join(data, "test.csv"))
    rows = [(test["video_name"][i], test["Prompt"][i]) for i in (0, 5)]
    features = [scorer.encode(prompt, scorer.cache.get(video)) for video, prompt in rows]
    results = scorer.score_features([v for v, _ in rows], features, "expected")
    assert len({len(f["input_ids"]) for f in features}) > 1  # left padding is exercised
    # as the template writes them (no shared token), and with a shared leading " " token before every word
    space = scorer.loaded.tokenizer.encode(" ", add_special_tokens=False)
    spaced = LevelTokens(tuple(tuple(space) + path for path in levels.paths), len(space))
    spaced_probabilities, _ = level_distribution(scorer.loaded.model, scorer.batch(features), spaced)
    for i, feature in enumerate(features):
        for tokens, found in ((levels, results[i].grades), (spaced, spaced_probabilities[i].tolist())):
            # the words share their first `prefix` tokens: one full forward (no cache) up to the distinguishing
            # token gives every word's logit there
            ids = feature["input_ids"] + list(tokens.paths[0][: tokens.prefix])
            assert all(list(path[: tokens.prefix]) == ids[len(feature["input_ids"]):] for path in tokens.paths)
            batch = scorer.batch([dict(feature, input_ids=ids, attention_mask=[1] * len(ids), labels=[-100] * len(ids))])
            with torch.no_grad():
                logits = scorer.loaded.model(**batch, logits_to_keep=1).logits[0, -1].float()
            logps = [float(logits[path[tokens.prefix]]) for path in tokens.paths]
            reference = torch.softmax(torch.tensor(logps, dtype=torch.float64), dim=0)
            assert found == pytest.approx(reference.tolist(), abs=1e-5)
        reference = torch.tensor(results[i].grades, dtype=torch.float64)
        assert results[i].expected_mos == pytest.approx(float((reference * torch.arange(1, 6)).sum()), abs=1e-6)


@pytest.mark.slow
def test_level_words_after_a_reasoning_templates_think_block(tiny_qwen3_vl):
    """qwen3_vl writes an empty think block before every answer: it is the lead (the scoring prompt's end,
    never trained); the level words and their mask are those of a plain template."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    from iovqa_plugin.patches.score_position import check_template_support, level_tokens, render_answer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_vl)
    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="qwen3_vl"))
    levels = level_tokens(template, tokenizer)
    assert tokenizer.decode(list(levels.lead)) == "<think>\n\n</think>\n\n"
    assert [tokenizer.decode(list(path)) for path in levels.paths] == list(LEVEL_WORDS)
    assert check_template_support(template, tokenizer, "qwen3_vl", "level").prefix == list(levels.lead)
    rows = [[IGNORE_INDEX] + render_answer(template, tokenizer, word)[1] for word in ("poor", "good")]
    labels = torch.tensor([row + [IGNORE_INDEX] * (max(map(len, rows)) - len(row)) for row in rows])
    masked, found = mask_level_labels(labels, levels)
    assert [tokenizer.decode(row[row != IGNORE_INDEX]) for row in masked] == ["poor", "good"]
    assert found.tolist() == [2, 4]
    plain = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="qwen3_vl_nothink"))
    assert level_tokens(plain, tokenizer).lead == () and level_tokens(plain, tokenizer).paths == levels.paths


def test_level_sigma_without_soft_targets_is_refused():
    for keys in ({"iovqa_label_format": "decimal"}, {"iovqa_label_format": "level"}):
        with pytest.raises(PluginConfigError, match=r"iovqa_level_sigma \(0.3\) is read for iovqa_level_targets: soft"):
            build_config({**keys, "iovqa_level_sigma": 0.3})
    assert build_config({"iovqa_label_format": "level", "iovqa_level_targets": "soft", "iovqa_level_sigma": 0.3})
    assert build_config({"iovqa_label_format": "decimal"}).level_sigma == 0.5  # the default, unused: as saved runs hold


def test_training_reads_a_dataset_std_column_and_refuses_unknown_columns(tmp_path, clean_plugin_state):
    import json

    import iovqa_plugin
    from iovqa_plugin.data.annotations import resolve_columns
    from iovqa_plugin.data.datasets import DatasetInfoError
    from iovqa_plugin.patches.run import set_active_run

    iovqa_plugin.apply()
    from llamafactory.data import loader

    columns = {"videos": "clip", "prompt": "text", "response": "score", "std": "score_sd"}
    (tmp_path / "dataset_info.json").write_text(json.dumps({"own": {"file_name": "own.csv", "formatting": "iovqa",
                                                                     "columns": columns}}))
    soft = build_config({"iovqa_label_format": "level", "iovqa_level_targets": "soft"})
    set_active_run(soft)
    attr, = loader.get_dataset_list(["own"], str(tmp_path))
    assert resolve_columns(attr, soft).std == "score_sd"  # the soft target's sigma column of every row
    set_active_run(build_config({"iovqa_label_format": "level"}))
    with pytest.raises(PluginConfigError, match="maps the `std` column 'score_sd', which is read for"):
        loader.get_dataset_list(["own"], str(tmp_path))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"own": {"file_name": "own.csv", "formatting": "iovqa",
                                                                     "columns": {"video": "clip"}}}))
    with pytest.raises(DatasetInfoError, match=r"maps \['video'\], which the plugin does not read"):
        loader.get_dataset_list(["own"], str(tmp_path))

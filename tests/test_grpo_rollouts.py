"""Exact-distribution rollouts on the tiny model: the scorer's distribution, teacher-forced log-probs, a chi-square
test of the sampled answers."""

import os

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from conftest import teacher_forced
from iovqa_plugin.data.grid import ScoreGrid
from iovqa_plugin.rl.rollouts import (answer_logits, answer_starts, completion_batch, completion_logps, prompt_batch,
                                      sample_completions, token_distribution)
from iovqa_plugin.data.labels import IGNORE_INDEX


@pytest.fixture(scope="module")
def features(scorer, demo_dir):
    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv"))
    rows = [(os.path.join(demo_dir, v), p) for v, p in zip(table["video_name"], table["Prompt"])][:7]
    chosen = [rows[i] for i in (0, 5, 6)]  # prompts of different lengths
    return [scorer.encode(p, scorer.cache.get(path)) for path, p in chosen]


def sft_batch(scorer, features, answers):
    """A right-padded SFT batch as training collates it: prompt, then the answer (labelled: its digits only when it
    has any, as the digit mask keeps a joint answer's scores) and <|im_end|>."""
    tokenizer = scorer.loaded.tokenizer
    rows = []
    for feature, answer in zip(features, answers):
        digits = tokenizer.encode(answer, add_special_tokens=False)
        end = tokenizer.encode("<|im_end|>\n", add_special_tokens=False)
        ids = feature["input_ids"] + digits + end
        numeric = any(c.isdigit() for c in answer)
        kept = [t if not numeric or tokenizer.decode([t]).isdigit() else IGNORE_INDEX for t in digits]
        labels = [IGNORE_INDEX] * len(feature["input_ids"]) + kept + [IGNORE_INDEX] * len(end)
        rows.append(dict(feature, input_ids=ids, attention_mask=[1] * len(ids), labels=labels))
    tokenizer.padding_side = "right"
    try:
        batch = scorer.loaded.collator([dict(r) for r in rows])
    finally:
        tokenizer.padding_side = "left"
    return batch


def test_rollout_logits_and_log_probs_are_the_scorers_and_teacher_forcing(scorer, features):
    model, tokenizer = scorer.loaded.model, scorer.loaded.tokenizer
    grid = ScoreGrid.from_tokenizer(tokenizer)
    batch = sft_batch(scorer, features, ["37", "12", "50"])
    starts = answer_starts(batch["labels"])
    assert starts.tolist() == [len(f["input_ids"]) for f in features]
    # the prompts cut from the training batch give the scorer's distribution on its own prompt batch
    first, second = answer_logits(model, prompt_batch(batch, starts, tokenizer.pad_token_id), grid)
    reference, _ = scorer.distribution(scorer.batch(features))
    assert torch.allclose(grid.probabilities(first, second), reference, atol=1e-6)
    # the lazy step (only the continuations the drawn answers take) gives the same logits and the same answers
    prompts = prompt_batch(batch, starts, tokenizer.pad_token_id)
    lazy_first, lazy_second = answer_logits(model, prompts, grid, lazy=True)
    assert torch.allclose(lazy_first, first, atol=1e-5)
    assert torch.allclose(lazy_second(torch.tensor([2, 0, 2]), torch.tensor([4, 1, 0])),
                          second[[2, 0, 2], [4, 1, 0]], atol=1e-4)
    sharp = first.clone()  # mass on the digits, so that continuations are drawn
    sharp[:, grid.first_ids] += 30.0
    lazy_first, lazy_second = answer_logits(model, prompts, grid, lazy=True)
    assert (sample_completions(sharp, lazy_second, 6, grid, generator=torch.Generator().manual_seed(5))
            == sample_completions(sharp, second, 6, grid, generator=torch.Generator().manual_seed(5)))
    # drawn answers (and an unreadable one) teacher-forced in one batch: a forward of each prompt + answer alone
    drawn = sample_completions(first, second, 1, grid, generator=torch.Generator().manual_seed(0))
    drawn[1] = tokenizer.encode("50", add_special_tokens=False)  # a first digit other than the batch label's
    drawn[2] = tokenizer.encode("a", add_special_tokens=False)  # off the answer set: one token, then the end
    completions = completion_batch(batch, starts, drawn, tokenizer.pad_token_id)
    with torch.no_grad():
        logps = completion_logps(model, completions)
    assert completions.mask.sum(1).tolist() == [len(d) for d in drawn]
    for i, tokens in enumerate(drawn):
        assert float(logps[i].sum()) == pytest.approx(teacher_forced(scorer, features[i], tokens), abs=1e-4)
        assert completions.tokens[i, : len(tokens)].tolist() == tokens



def test_log_probs_are_the_sampling_distributions_at_the_rollout_temperature(scorer, features):
    """The loss's log-probs are those of the policy the answers were drawn from: logits / temperature (TRL's
    GRPOTrainer divides them too), so the ratio and the KL compare the sampling policy at any temperature."""
    model, tokenizer = scorer.loaded.model, scorer.loaded.tokenizer
    grid = ScoreGrid.from_tokenizer(tokenizer)
    batch = sft_batch(scorer, features, ["37", "12", "50"])
    starts = answer_starts(batch["labels"])
    first, _ = answer_logits(model, prompt_batch(batch, starts, tokenizer.pad_token_id), grid)
    drawn = [tokenizer.encode(answer, add_special_tokens=False) for answer in ("37", "12", "50")]
    completions = completion_batch(batch, starts, drawn, tokenizer.pad_token_id)
    for temperature in (0.5, 2.0):
        with torch.no_grad():
            logps = completion_logps(model, completions, temperature)
        sampled = token_distribution(first, temperature)  # what sample_completions draws the first digit from
        for i, tokens in enumerate(drawn):
            assert float(logps[i, 0]) == pytest.approx(float(sampled[i, tokens[0]].log()), abs=1e-4)

def chi_square_p(counts, q, total):
    q = np.asarray(q, dtype=np.float64)
    expected = q / q.sum() * total  # a float32 distribution sums to 1 within 1e-7, chisquare wants 1e-8
    big = expected >= 5  # chi-square needs >= 5 expected per cell: pool the rare cells into one
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    return stats.chisquare(observed, expected).pvalue


def test_sampled_answers_follow_the_policys_token_distributions():
    torch.manual_seed(1)
    vocab, n = 30, 4000
    grid = ScoreGrid(2, torch.arange(1, 6), torch.arange(10, 20))  # first digits 1..5, digits 0..9
    first = torch.randn(2, vocab) * 1.5
    first[:, 1:6] += 2.0  # mostly first digits, some tokens off the answer set
    second = torch.randn(2, 5, vocab) * 1.5
    drawn = sample_completions(first, second, n, grid, temperature=0.7, generator=torch.Generator().manual_seed(123))
    assert len(drawn) == 2 * n
    for row in range(2):
        answers = drawn[row * n:(row + 1) * n]
        q = token_distribution(first[row], 0.7).numpy()
        counts = np.bincount([a[0] for a in answers], minlength=vocab)
        assert chi_square_p(counts, q, n) > 0.01
        assert all(len(a) == (2 if a[0] in range(1, 6) else 1) for a in answers)  # off the set: the answer ends
        digit = int(np.argmax(counts[1:6]))  # the second token, given the most drawn first digit
        seconds = [a[1] for a in answers if a[0] == digit + 1]
        q2 = token_distribution(second[row, digit], 0.7).numpy()
        assert chi_square_p(np.bincount(seconds, minlength=vocab), q2, len(seconds)) > 0.01
    sharp = torch.softmax(first[0] / 0.7, -1)
    assert torch.allclose(token_distribution(first[0], 0.7).float(), sharp, atol=1e-6)
    # top-p keeps the most likely tokens holding top_p of the mass, and nothing else is drawn
    cut = token_distribution(first, top_p=0.5)
    p = torch.softmax(first[0].double(), -1)
    order = p.argsort(descending=True)
    kept = int((p[order].cumsum(0) - p[order] < 0.5).sum())
    assert set(cut[0].nonzero().flatten().tolist()) == set(order[:kept].tolist())
    drawn = sample_completions(first, second, 200, grid, top_p=0.5)
    assert {a[0] for a in drawn[:200]} <= set(order[:kept].tolist())


def test_level_answers_are_whole_words_or_end_off_the_set():
    from iovqa_plugin.data.levels import LevelTokens

    levels = LevelTokens.from_answers([[7, 99], [8, 9, 99], [10, 99], [11, 99], [12, 13, 99]], "fake")
    logits = torch.full((2, 20), -30.0)
    logits[0, 8] = 30.0  # "poor" (two tokens)
    logits[1, 3] = 30.0  # no level
    assert sample_completions(logits, None, 2, levels=levels) == [[8, 9], [8, 9], [3], [3]]


def grpo_steps(iovqa_args, tokenizer, grid=None):
    """The GRPO step of the trainer, without a Trainer around it (what _new_rollouts reads)."""
    from collections import defaultdict

    from iovqa_plugin.patches.grpo_trainer import GRPOTrainer

    steps = object.__new__(GRPOTrainer)
    steps._iovqa_args, steps.processing_class, steps._lead = iovqa_args, tokenizer, 0
    steps._group = iovqa_args.grpo_num_generations
    steps._grid, steps._levels = grid or ScoreGrid.from_tokenizer(tokenizer), None
    steps._metrics, steps._generator = defaultdict(list), torch.Generator().manual_seed(0)
    steps._word_tokens, steps._words_cache, steps._choice_words = None, {}, ("A", "B", "tie")
    return steps


def test_reference_is_the_base_with_the_adapter_disabled_and_beta_zero_skips_it(scorer, features, tiny_model,
                                                                                  monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.patches import grpo_trainer

    def load():
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model, dtype=torch.float32).eval()

    base = load()
    torch.manual_seed(0)
    policy = get_peft_model(load(), LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "lm_head"],
                                               init_lora_weights=False))
    tokenizer = scorer.loaded.tokenizer
    batch = sft_batch(scorer, [features[0], features[0], features[1], features[1]], ["37", "37", "12", "12"])
    iovqa_args = build_config({"iovqa_rl": "grpo", "iovqa_grpo_num_generations": 2, "iovqa_grpo_beta": 0.04})
    rollouts = grpo_steps(iovqa_args, tokenizer)._new_rollouts(policy, batch)
    with torch.no_grad():
        reference = completion_logps(base, rollouts.completions)
        adapted = completion_logps(policy, rollouts.completions)
    assert torch.allclose(rollouts.ref_logps, reference, atol=1e-6)
    assert not torch.allclose(adapted, reference, atol=1e-3)  # the adapter does change the policy
    assert rollouts.old_logps is None  # num_iterations 1: the ratio's old policy is the policy detached
    steps = grpo_steps(build_config({"iovqa_rl": "grpo", "iovqa_grpo_num_generations": 2}), tokenizer)

    def no_reference(model):
        raise AssertionError("beta = 0 ran a reference pass")

    monkeypatch.setattr(grpo_trainer, "_adapter_disabled", no_reference)
    rollouts = steps._new_rollouts(policy, batch)
    assert rollouts.ref_logps is None and rollouts.completions.mask.shape[0] == 4
    # the untrained tiny model puts little mass on the integers: most drawn answers leave the set and score 0
    parseable = steps._metrics["parseable"][0]
    assert 0 <= parseable < 1 and len(steps._metrics["reward/score_relative"]) == 1


def test_temporal_shuffling_permutes_the_frames_the_model_sees(scorer):
    from iovqa_plugin.rl.rollouts import frame_orders, shuffle_frames

    processor = scorer.loaded.processor.video_processor
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (56, 84, 3), dtype=np.uint8) for _ in range(4)]
    order = frame_orders([4], torch.Generator().manual_seed(3))[0]
    assert sorted(order) == [0, 1, 2, 3] and order != [0, 1, 2, 3]

    def processed(video):
        out = processor(videos=[np.stack(video)], return_tensors="pt", do_sample_frames=False)
        return out["pixel_values_videos"], out["video_grid_thw"]

    pixels, grid = processed(frames)
    expected, same_grid = processed([frames[i] for i in order])
    assert torch.equal(grid, same_grid) and grid[0, 0] == 2  # two temporal patches of two frames each
    config = scorer.loaded.model.config.vision_config
    shuffled = shuffle_frames(pixels, grid, config.temporal_patch_size, config.patch_size, [order])
    assert torch.allclose(shuffled, expected) and not torch.allclose(shuffled, pixels)


def test_temporal_rollouts_answer_the_shuffled_frames(scorer, features, monkeypatch):
    from iovqa_plugin.config_parser import build_config

    tokenizer, model = scorer.loaded.tokenizer, scorer.loaded.model
    batch = sft_batch(scorer, [features[0], features[0], features[1], features[1]], ["37", "37", "12", "12"])
    iovqa_args = build_config({"iovqa_rl": "grpo", "iovqa_grpo_num_generations": 2, "iovqa_num_frames": 4,
                        "iovqa_grpo_rewards": {"score_relative": 1.0, "temporal": {"weight": 1.0, "tolerance": 5}}})
    steps = grpo_steps(iovqa_args, tokenizer)
    steps.model = model
    seen = []
    original = steps._sample_closed

    def recording(model_, batch_, starts, pad, sets, generators=None, wording=None):
        seen.append(batch_["pixel_values_videos"])
        return original(model_, batch_, starts, pad, sets, generators, wording)

    monkeypatch.setattr(steps, "_sample_closed", recording)
    rollouts = steps._new_rollouts(model, batch)
    assert len(seen) == 2 and seen[0].shape == seen[1].shape and not torch.equal(seen[0], seen[1])
    assert "reward/temporal" in steps._metrics and len(steps._metrics["parseable_shuffled"]) == 1
    assert rollouts.completions.mask.shape[0] == 4


@pytest.mark.slow  # runs the model (generate / rollouts): seconds
def test_yes_no_rows_draw_from_their_words_and_score_rows_from_the_grid(scorer, features, monkeypatch):
    """A batch mixing score rows and yes/no question rows: each group's answers come from its own answer set
    (the words as its label spells them, "Yes"/"No"), `choice` rewards the question rows and `score_relative`
    the score rows, and each reward's mean is taken over its own rows."""
    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.patches import grpo_trainer
    from iovqa_plugin.patches.score_position import level_tokens

    tokenizer, model = scorer.loaded.tokenizer, scorer.loaded.model
    batch = sft_batch(scorer, [features[0], features[0], features[1], features[1]], ["37", "37", "Yes", "Yes"])
    iovqa_args = build_config({"iovqa_rl": "grpo", "iovqa_grpo_num_generations": 2,
                               "iovqa_grpo_rewards": {"score_relative": 1.0, "choice": 1.0}})
    steps = grpo_steps(iovqa_args, tokenizer)
    steps._word_tokens = lambda words: level_tokens(scorer.loaded.template, tokenizer, words)
    asked, original = [], grpo_trainer.answer_logits

    def certain(model_, prompts, grid=None, levels=None, lazy=False):
        """The policy's logits with all the mass on "37" (scores) or on the first word (choices)."""
        first, second = original(model_, prompts, grid, levels)
        asked.append((prompts["input_ids"].shape[0], grid is not None, levels))
        first = torch.full_like(first, -1e4)
        if grid is not None:
            first[:, tokenizer.convert_tokens_to_ids("3")] = 0.0
            second = torch.full_like(second, -1e4)
            second[:, :, tokenizer.convert_tokens_to_ids("7")] = 0.0
        else:
            first[:, levels.ids[0]] = 0.0
        return first, second

    monkeypatch.setattr(grpo_trainer, "answer_logits", certain)
    rollouts = steps._new_rollouts(model, batch)
    # one prefill per prompt: one prompt of each answer set
    assert [(n, is_grid) for n, is_grid, _ in asked] == [(1, True), (1, False)]
    assert [tokenizer.decode(t) for t in asked[1][2].paths] == ["Yes", "No"]
    texts = [tokenizer.decode(row[mask.bool()]) for row, mask in zip(rollouts.completions.tokens,
                                                                        rollouts.completions.mask)]
    assert texts == ["37", "37", "Yes", "Yes"]
    assert steps._metrics["reward/score_relative"] == [1.0] and steps._metrics["reward/choice"] == [1.0]
    assert steps._metrics["parseable"] == [1.0]


def test_each_prompts_answers_come_from_its_own_generator():
    """With one generator per prompt, a prompt's answers do not depend on the prompts drawn before it (what
    makes N processes sample what one process does)."""
    grid = ScoreGrid(2, torch.tensor([11, 12, 13, 14, 15]), torch.tensor([20 + d for d in range(10)]))
    logits = torch.randn(2, 40, generator=torch.Generator().manual_seed(0))
    logits[:, 11:16] += 3.0
    second = torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(1))
    second[..., 20:30] += 3.0

    def rngs(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    both = sample_completions(logits, second, 6, grid, generator=rngs(7, 8))
    alone = sample_completions(logits[1:], second[1:], 6, grid, generator=rngs(8))
    assert both[6:] == alone and both[:6] != both[6:]


def token_logps(scorer, feature, tokens) -> list[float]:
    """log p(token_j | prompt, tokens_<j) of each token, from one full forward of prompt + tokens (no padding, no
    cache): the teacher-forced reference, token by token."""
    ids = feature["input_ids"] + list(tokens)
    batch = scorer.batch([dict(feature, input_ids=ids, attention_mask=[1] * len(ids), labels=[-100] * len(ids))])
    with torch.no_grad():
        logits = scorer.loaded.model(**batch, logits_to_keep=len(tokens) + 1).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens).unsqueeze(-1)).flatten().tolist()


JOINT = {"iovqa_dimensions": "traditional,overall", "iovqa_dimension_layout": "joint"}


def full_forward_logits(scorer, feature, tokens) -> torch.Tensor:
    """(V,) next-token logits after the prompt and ``tokens``, from one full forward (no padding, no cache)."""
    ids = feature["input_ids"] + list(tokens)
    batch = scorer.batch([dict(feature, input_ids=ids, attention_mask=[1] * len(ids), labels=[-100] * len(ids))])
    with torch.no_grad():
        return scorer.loaded.model(**batch, logits_to_keep=1).logits[0, -1].float()


def test_answers_so_far_carry_the_prompts_cache_as_a_full_forward_would(scorer, features):
    """The next-token logits after a prompt and an answer so far, from the prompts' prefill cache carried along the
    answers (extended twice, entries branching), and one first digit further: those of a full forward of prompt +
    answer; the step for the second digit leaves the cache for the next extension."""
    from iovqa_plugin.rl.rollouts import AnswersSoFar

    model, tokenizer = scorer.loaded.model, scorer.loaded.tokenizer
    grid = ScoreGrid.from_tokenizer(tokenizer)
    answers = AnswersSoFar(model, scorer.batch(features[:2]), grid)  # left-padded prompts of two lengths

    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    def check(so_far):  # (prompt, answer so far) of each entry
        for m, (row, tokens) in enumerate(so_far):
            assert torch.allclose(answers.logits[m].float(), full_forward_logits(scorer, features[row], tokens),
                                  atol=1e-4)
        picked, digits = torch.tensor([len(so_far) - 1, 0]), torch.tensor([3, 0])  # "4" and "1" further
        stepped = answers.second(picked, digits)
        for m, (entry, digit) in enumerate(zip(picked.tolist(), digits.tolist())):
            row, tokens = so_far[entry]
            after = tokens + [int(grid.first_ids[digit])]
            assert torch.allclose(stepped[m].float(), full_forward_logits(scorer, features[row], after), atol=1e-4)
        assert torch.allclose(answers.second(picked, digits), stepped, atol=1e-5)  # the cache was not used up

    answers.extend([0, 1, 1], [encode("37, overall "), encode("12, overall "), encode("45, overall ")])
    check([(0, encode("37, overall ")), (1, encode("12, overall ")), (1, encode("45, overall "))])
    answers.extend([2, 0], [encode("20, look "), encode("33, look ")])  # entries branch and end
    check([(1, encode("45, overall 20, look ")), (0, encode("37, overall 33, look "))])
    with pytest.raises(ValueError, match="different numbers of tokens"):
        answers.extend([0, 1], [encode("1"), encode("12")])


@pytest.mark.slow  # runs the model (rollouts, the loss's forward, a teacher-forced forward per answer): seconds
def test_joint_rollouts_draw_each_score_after_the_earlier_ones_with_teacher_forced_log_probs(scorer, features):
    """A joint answer ("traditional 37, overall 41") drawn score by score on the tiny model (its digits made likely
    by a bias on the output layer, so that answers reach their second score): the wording between the scores is
    the row's own (written, mask 0, log-prob 0), and each drawn token's log-prob in the loss's one forward equals
    teacher forcing; the first score is drawn from one prefill per prompt, the second after the first."""
    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.rl.rollouts import joint_drawn, joint_wording

    tokenizer, model = scorer.loaded.tokenizer, scorer.loaded.model
    grid = ScoreGrid.from_tokenizer(tokenizer)
    pair = [features[0]] * 4 + [features[1]] * 4
    batch = sft_batch(scorer, pair, ["traditional 37, overall 41"] * 4 + ["traditional 12, overall 50"] * 4)
    steps = grpo_steps(build_config({"iovqa_rl": "grpo", "iovqa_grpo_num_generations": 4, **JOINT}), tokenizer)
    head = tokenizer.encode("traditional ", add_special_tokens=False)
    bias = torch.zeros(model.lm_head.out_features)
    bias[grid.second_ids] = 29.0
    bias[grid.first_ids] = 30.0
    prefills = []
    hooks = [model.lm_head.register_forward_hook(lambda module, inputs, output: output + bias),
             model.model.visual.register_forward_hook(lambda module, inputs, output: prefills.append(1))]
    try:
        rollouts = steps._new_rollouts(model, batch)
        completions = rollouts.completions
        with torch.no_grad():
            logps = completion_logps(model, completions)
        wording = joint_wording(batch["input_ids"], batch["labels"], 2, grid.steps)
        assert tokenizer.decode(wording[0][0]) == ", overall " and wording[0] == wording[5]
        drawn = [completions.tokens[i, :int((completions.tokens[i] != tokenizer.pad_token_id).sum())].tolist()
                 for i in range(8)]
        answers = steps._read(drawn, tokenizer)
        complete = [i for i, a in enumerate(answers) if a.parsed]
        assert complete, "no answer reached its second score"
        for i in complete:  # "traditional 37, overall 41": both scores read, the wording the row's own
            assert set(answers[i].dimensions) == {"traditional", "overall"}
            assert drawn[i][2:-2] == wording[i][0] and answers[i].text.startswith("traditional ")
        for i, tokens in enumerate(drawn):  # a score off the grid ends its answer there
            assert len(tokens) in (1, 2, 2 + len(wording[i][0]) + 1, 2 + len(wording[i][0]) + 2)
            flags = joint_drawn(wording[i], grid.steps, len(tokens))
            assert completions.mask[i, :len(tokens)].tolist() == flags
            prompt = dict(pair[i], input_ids=pair[i]["input_ids"] + head)
            expected = [r if f else 0.0 for r, f in zip(token_logps(scorer, prompt, tokens), flags)]
            assert logps[i, :len(tokens)].tolist() == pytest.approx(expected, abs=1e-4)
    finally:
        for hook in hooks:
            hook.remove()
    # the vision tower ran once for the rollouts (one prefill of the 2 prompts, every dimension from its cache),
    # once for the loss's forward and once per teacher-forced reference above
    assert len(prefills) == 1 + 1 + 8
    assert {"reward/dimensions", "reward/dimensions/traditional", "reward/dimensions/overall"} <= set(steps._metrics)


class SequenceCache:
    """Each row's tokens so far."""

    def __init__(self, rows):
        self.rows = rows

    def reorder_cache(self, index):
        self.rows = [self.rows[r] for r in index.tolist()]


class SequenceModel:
    """A causal LM whose next-token logits are a fixed function of the whole sequence so far (its unmasked
    tokens), with a cache that keeps each row's sequence: the exact distribution of any answer is known."""

    def __init__(self, vocab):
        self.vocab = vocab

    def logits_of(self, sequence):
        logits = torch.randn(self.vocab, generator=torch.Generator().manual_seed(hash(tuple(sequence)) % 2**31))
        if sequence[-1] in range(11, 16):  # after a first digit: mostly a digit
            logits[20:30] += 4.0
        else:  # mostly a first digit
            logits[11:16] += 4.0
        return logits * 1.5

    def __call__(self, input_ids, attention_mask, past_key_values=None, logits_to_keep=1, **unused):
        from types import SimpleNamespace

        step = attention_mask[:, -input_ids.shape[1]:].bool()  # the new tokens' mask (a left-padded step's)
        past = past_key_values.rows if past_key_values is not None else [[] for _ in input_ids]
        sequences = [before + ids[keep].tolist() for before, ids, keep in zip(past, input_ids, step)]
        logits = torch.stack([self.logits_of(s) for s in sequences]).unsqueeze(1)
        return SimpleNamespace(logits=logits, past_key_values=SequenceCache(sequences))


def test_joint_answers_follow_the_policys_distribution_score_by_score():
    """Whole joint answers drawn (a chi-square test at a fixed seed): each answer's frequency is the product of
    its tokens' probabilities, each after the prompt, the earlier scores and the wording, at the temperature."""
    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.data.labels import INTEGER_LABELS

    grid = ScoreGrid(2, torch.arange(11, 16), torch.arange(20, 30))  # "1".."5", "0".."9"
    model, n, temperature = SequenceModel(40), 3000, 0.8
    prompt, wording = [1, 2, 3], [5, 6]  # prompt, then "traditional 37, overall 41" as [11+2, 27, 5, 6, 14, 21]
    ids = torch.tensor([prompt + [13, 27] + wording + [14, 21] + [7]] * n)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, [3, 4, 7, 8]] = ids[:, [3, 4, 7, 8]]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "position_ids": torch.arange(ids.shape[1]).repeat(n, 1)}
    iovqa_args = build_config({"iovqa_rl": "grpo", "iovqa_grpo_num_generations": n, "iovqa_grpo_temperature":
                               temperature, **JOINT})
    steps = grpo_steps(iovqa_args, None, grid)
    starts = answer_starts(labels)
    from iovqa_plugin.rl.rollouts import joint_wording

    rows = joint_wording(ids, labels, 2, 2)
    drawn = steps._sample_closed(model, batch, starts, 0, [None] * n, torch.Generator().manual_seed(11), rows)

    def path(value):
        return [11 + value // 10 - 1, 20 + value % 10]

    def q(sequence):
        return token_distribution(model.logits_of(sequence), temperature)

    cells = {}  # each complete answer's probability; everything else (an answer that left the grid) is one cell
    for a in INTEGER_LABELS:
        first = prompt + path(a)
        p_a = float(q(prompt)[path(a)[0]] * q(prompt + path(a)[:1])[path(a)[1]])
        after = q(first + wording)
        for b in INTEGER_LABELS:
            cells[(a, b)] = p_a * float(after[path(b)[0]] * q(first + wording + path(b)[:1])[path(b)[1]])
    keys = list(cells)
    index = {tuple(path(a) + wording + path(b)): k for k, (a, b) in enumerate(keys)}
    counts = np.bincount([index.get(tuple(t), len(keys)) for t in drawn], minlength=len(keys) + 1)
    probabilities = np.array([cells[k] for k in keys] + [1 - sum(cells.values())])
    assert (probabilities * n >= 5).sum() >= 20  # enough cells for the test to see a wrong distribution
    assert chi_square_p(counts, probabilities, n) > 0.01
    assert counts[-1] > 0 and all(len(t) in (1, 2, 5, 6) for t in drawn)  # some answers left the grid and ended


def test_generated_joint_answers_are_read_per_dimension_and_one_missing_scores_zero(scorer, features, monkeypatch):
    """Thinking (generated) rollouts of a joint recipe start where the answer does (before its first dimension's
    name) and are read dimension by dimension; an answer missing a dimension is unparseable and gets 0 from the
    dimensions reward, without an error."""
    from iovqa_plugin.config_parser import build_config

    tokenizer = scorer.loaded.tokenizer
    batch = sft_batch(scorer, [features[0]] * 2 + [features[1]] * 2, ["traditional 37, overall 41"] * 2
                      + ["traditional 12, overall 50"] * 2)
    steps = grpo_steps(build_config({"iovqa_rl": "grpo", "iovqa_grpo_num_generations": 2, "iovqa_grpo_mode": "thinking",
                                     **JOINT}), tokenizer)
    texts = ["<think>sharp</think><answer>traditional 37, overall 41</answer>", "<answer>traditional 37</answer>",
             "<think>soft</think><answer>overall 20, traditional 12</answer>", "traditional 12, overall"]
    asked = []

    def generate(model, batch_, starts, pad):
        asked.append(starts)
        return [tokenizer.encode(t, add_special_tokens=False) for t in texts]

    monkeypatch.setattr(steps, "_generate", generate)
    rollouts = steps._new_rollouts(scorer.loaded.model, batch)
    assert asked[0].tolist() == [len(features[0]["input_ids"])] * 2 + [len(features[1]["input_ids"])] * 2
    assert steps._metrics["parseable"] == [0.5] and steps._metrics["reward/format"] == [0.5]
    # 1 (exact), 0 (overall missing), 1 - |2.0 - 5.0| / 5.0 = 0.4 on overall and 1 on traditional, 0 (no overall score)
    assert steps._metrics["reward/dimensions"] == [pytest.approx((1 + 0 + (1 + 0.4) / 2 + 0) / 4)]
    assert steps._metrics["reward/dimensions/overall"] == [pytest.approx((1 + 0 + 0.4 + 0) / 4)]
    assert rollouts.completions.mask.sum().item() == sum(len(tokenizer.encode(t)) for t in texts)


@pytest.mark.slow  # loads the tiny Qwen3.5
def test_answers_so_far_on_a_hybrid_model_with_linear_attention(tiny_qwen3_5):
    """Qwen3.5's linear-attention layers take their previous state only in one-token steps (transformers runs a
    longer step as a fresh prefill): the answers so far, stepped token by token from left-padded prompts, still
    give a full forward's logits."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from iovqa_plugin.rl.rollouts import AnswersSoFar

    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen3_5, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_5)
    grid = ScoreGrid.from_tokenizer(tokenizer)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    prompts = [encode("Rate the quality of this video"), encode("Rate it")]
    width = max(map(len, prompts))
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batch = {"input_ids": torch.tensor([[0] * (width - len(p)) + p for p in prompts]), "attention_mask": mask,
             "position_ids": (mask.cumsum(1) - 1).clamp(min=0).unsqueeze(0).repeat(3, 1, 1)}

    def full(tokens):
        ids = torch.tensor([tokens])
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1,
                         position_ids=torch.arange(len(tokens)).view(1, 1, -1).repeat(3, 1, 1)).logits[0, -1]

    answers = AnswersSoFar(model, batch, grid)
    so_far = [encode("37, overall "), encode("12, overall ")]
    answers.extend([0, 1], so_far)
    stepped = answers.second(torch.tensor([0, 1]), torch.tensor([3, 0]))
    for m in range(2):
        assert torch.allclose(answers.logits[m], full(prompts[m] + so_far[m]), atol=1e-5)
        digit = int(grid.first_ids[(3, 0)[m]])
        assert torch.allclose(stepped[m], full(prompts[m] + so_far[m] + [digit]), atol=1e-5)


class CountingModel(SequenceModel):
    """A SequenceModel that counts its forwards and puts its mass on the score digits, or off them (``dead``)."""

    def __init__(self, vocab, dead=False):
        super().__init__(vocab)
        self.dead, self.calls = dead, 0

    def logits_of(self, sequence):
        logits = super().logits_of(sequence)
        if self.dead:
            logits[11:30] -= 50.0  # no first digit: every answer leaves the grid at its first token
        return logits

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return super().__call__(*args, **kwargs)


def test_joint_rollouts_run_the_same_forwards_on_every_process():
    """Under ZeRO-3 every process must run the same forwards: a process whose answers all left the grid at the
    first score still steps (stand-ins of the answers' length) as one whose answers went on; alone, it stops."""
    from types import SimpleNamespace

    from iovqa_plugin.config_parser import build_config
    from iovqa_plugin.rl.rollouts import joint_wording

    grid = ScoreGrid(2, torch.arange(11, 16), torch.arange(20, 30))
    ids = torch.tensor([[1, 2, 3, 13, 27, 5, 6, 14, 21, 8, 9, 12, 20, 7]] * 4)  # three scores, two words between
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, [3, 4, 7, 8, 11, 12]] = ids[:, [3, 4, 7, 8, 11, 12]]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "position_ids": torch.arange(ids.shape[1]).repeat(4, 1)}
    iovqa_args = build_config({"iovqa_rl": "grpo", "iovqa_grpo_num_generations": 2,
                               "iovqa_dimensions": "traditional,temporal,overall", "iovqa_dimension_layout": "joint"})
    wording = joint_wording(ids, labels, 3, 2)
    calls = {}
    for processes in (1, 2):
        for dead in (False, True):
            steps = grpo_steps(iovqa_args, None, grid)
            steps.args = SimpleNamespace(world_size=processes)
            model = CountingModel(40, dead)
            drawn = steps._sample_closed(model, batch, answer_starts(labels), 0, [None] * 4,
                                         torch.Generator().manual_seed(3), wording)
            assert all(len(t) == 1 for t in drawn) if dead else any(len(t) == 10 for t in drawn)
            calls[(processes, dead)] = model.calls
    # prefill, then per score: the second digits' step, and the 4 one-token steps of a score and its wording
    assert calls[(2, True)] == calls[(2, False)] == 1 + 3 + 2 * 4
    assert calls[(1, True)] == 2  # alone, a process stops once no answer goes on

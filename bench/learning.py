"""Does it learn? The paper's label ablation in miniature, on a held-out quality ladder.

    python bench/learning.py [--steps 150] [--seeds 0 1 2]
        [--arms decimal integer_nomask iovqa head levels levels_soft control multidim fidelity comparison
                image_warmup grpo grpo_fidelity grpo_scratch iovqa_pairs blind_blur blind_noise]
        [--warmup-steps 50] [--rl-steps 150] [--rl-lr 1e-4]

Every arm trains the same benchmark model (the tiny test model, `build_tiny_model()`: 64 wide, its vision
tower with the analytic first stage of `iovqa_plugin/demo/vision_init.py`) with the stock
`llamafactory-cli train` and the learnable CPU recipe (`examples/iovqa_demo_cpu.yaml`: freeze tuning of
every layer and the output layer, lr 1e-3) on the same 600 ladder videos (bench/ladder.py: scenes split
train/val/test, no scene in two splits; each source pristine, each degradation kind alone at four levels and
all kinds together at four levels), with the same steps, optimiser and seed; only the plugin keys differ.
Each trained model then scores the 250 held-out test videos with the plugin's scorer; a no-training row
scores the untouched model. The control arm is the IOVQA arm with each video's quality level written
in its prompt (a deliberate leak, on train and test): it checks the text -> label -> loss -> scorer
side apart from the vision side. The multidim arm trains the ladder's five TaobaoVD-GC-style MOS (each from
what its dimension judges, see iovqa_plugin/demo/ladder.py) in one joint answer; its table row is its
overall score, and its expected SRCC per dimension is listed below the table. The fidelity arm is the IOVQA arm
plus DeQA-Score's fidelity ranking loss (weight 1.0) over each batch's 6 pairs. The comparison arm trains on
pairs instead of scores: pairs drawn from the train split (`formatting: iovqa_drawn_pairs`: within each source's
text prompt, videos of different MOS, at most 4 pairs per video), each sample showing both videos and answered
"A" or "B"; it is scored by P(A) on pairs drawn the same way from the test split (held-out scenes), and every
other arm's expected score is evaluated on those same pairs too (the checkable lines `learning: pairwise accuracy
<arm> <diff> (<n> seeds)`). The image_warmup arm is the IOVQA arm after a first stage on the training videos'
stills as images (each one's middle frame, the same MOS; Q-Align and VQ-Insight's image warm-up): --warmup-steps
on the stills, then the same --steps on the videos, starting from the first stage's model. SRCC, PLCC and final =
(SRCC + PLCC) / 2 are reported for greedy decoding (the answer's number or level word) and expected decoding
(probability-weighted mean of 10..50, or of the levels 1..5 for the level-word arms; not for decimal labels),
as mean +- standard deviation over seeds, and the pairwise accuracy of the expected score over all pairs of
test videos ("diff": pairs of different MOS; "tau": Deutsch et al.'s accuracy with ties). Below the table: each
arm's mean probability on valid scores (integer mass) and training loss per label token; and, for the IOVQA,
IOVQA-pairs, blind and control arms, the expected SRCC per degradation kind on the videos degraded by that kind
alone (with each source's pristine video; the mean of the SRCC within each held-out source, and pooled) and the
share of held-out sources whose pristine video scores above their level-1 videos (the lines `learning: iovqa per
degradation <kind> ...`), and the expected SRCC of every test video but the dropped-frames ones (which 2 frames far apart
cannot show: bench/ladder_probes.py). The iovqa_pairs arm is the IOVQA arm with its 2 frames sampled as one
adjacent pair (`iovqa_frame_strategy: pairs`: the middle frame and the next, one temporal patch), which shows a
repeated frame. The RL arms (grpo: score_relative; grpo_fidelity: fidelity_rank) continue the IOVQA arm's model
of the same seed with answer-only GRPO (4 prompts x 4 answers per step, --rl-steps at --rl-lr, beta 0: the
default 150 steps see the 600 training videos once, as the SFT arm's 150 steps x 4 do) and report the same
metrics plus the mean reward, the group reward std and the share of parseable answers over their first and last
5 steps and the reward curve (the line `learning: grpo after sft expected SRCC <mean> ± <sd> (<n> seeds)`); the
grpo_scratch arm runs the grpo arm's GRPO (same steps and learning rate) from the untrained model. The blind arms
(blind_blur, blind_noise) are the IOVQA arm trained on labels that rate every video degraded by that kind alone
as its source's pristine video (bench/ladder.py's taught_blind): a model taught that the kind does not matter,
which their per-degradation lines must show.
Each run's result is stored next to its recipe (work/bench_learning/runs/*.result.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from iovqa_plugin.data.dimensions import TAOBAO_DIMENSION_COLUMNS  # noqa: E402 (after the path)
from ladder import BLIND_KINDS  # noqa: E402

# The arms differ only in these keys (the paper's Table 4/5 rows, and the head variant).
ARMS = {
    "decimal": {"iovqa_label_format": "decimal", "iovqa_label_mask": "none"},
    "integer_nomask": {"iovqa_label_format": "integer", "iovqa_label_mask": "none"},
    "iovqa": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits"},
    # the IOVQA arm with its 2 frames sampled as one adjacent pair (the middle frame and the next), not 1/4 and 3/4
    "iovqa_pairs": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits", "iovqa_frame_strategy": "pairs"},
    "head": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits", "iovqa_head": "softmax_regression"},
    "levels": {"iovqa_label_format": "level", "iovqa_label_mask": "digits"},
    "levels_soft": {"iovqa_label_format": "level", "iovqa_label_mask": "digits", "iovqa_level_targets": "soft"},
    "control": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits"},
    "multidim": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits",
                 "iovqa_dimensions": "traditional,alignment,aesthetic,temporal,overall",
                 "iovqa_dimension_layout": "joint"},
    "fidelity": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits", "iovqa_rank_loss": "fidelity",
                 "iovqa_rank_weight": 1.0},
    # trained on pairs drawn from the train split (within each source, at most 4 per video), answered "A" / "B"
    "comparison": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits"},
    # answer-only GRPO continuing the IOVQA arm's model of the same seed: 4 prompts x 4 answers per step (2 prompts
    # per step over 60 steps lost to the SFT start: too few videos, the reward rose by sharpening the answers only)
    "grpo": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits", "iovqa_rl": "grpo",
             "iovqa_grpo_rewards": {"score_relative": 1.0}, "iovqa_grpo_num_generations": 4,
             "per_device_train_batch_size": 16},
    "grpo_fidelity": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits", "iovqa_rl": "grpo",
                      "iovqa_grpo_rewards": {"fidelity_rank": 1.0}, "iovqa_grpo_num_generations": 4,
                      "per_device_train_batch_size": 16},
    "image_warmup": {"iovqa_label_format": "integer", "iovqa_label_mask": "digits"},
}
# The blind arms: the IOVQA arm taught that one kind does not matter (its videos rated as their pristine source,
# bench/ladder.py's taught_blind), to show that the per-degradation lines catch a model blind to a kind.
BLIND_ARMS = {f"blind_{kind}": kind for kind in BLIND_KINDS}
ARMS.update({arm: dict(ARMS["iovqa"]) for arm in BLIND_ARMS})
# the grpo arm's GRPO from the untrained model (no CONTINUES entry): what SFT first adds
ARMS["grpo_scratch"] = ARMS["grpo"]
# RL arms start from an SFT arm's trained model (of the same seed), with their own steps and learning rate
CONTINUES = {"grpo": "iovqa", "grpo_fidelity": "iovqa"}
# Two-stage arms: the dataset of their first stage (then the arm's own dataset, from the first stage's model).
WARMUP_DATASETS = {"image_warmup": "ladder_stills_train"}
# The multidim arm: each dimension's expected score against its ladder column (TaobaoVD-GC's names).
DIMENSION_COLUMNS = TAOBAO_DIMENSION_COLUMNS
# The control arm trains and scores the ladder with the level in words in every prompt.
DATASETS = {"control": ("ladder_train_control", "test_control.csv"), "comparison": ("ladder_train_pairs", "test.csv"),
            **{arm: (f"ladder_train_blind_{kind}", "test.csv") for arm, kind in BLIND_ARMS.items()}}
DEFAULT_DATASETS = ("ladder_train", "test.csv")
ARM_TITLES = {
    "baseline": "no training",
    "decimal": "decimal labels (x.x), full-answer loss",
    "integer_nomask": "integer labels, full-answer loss",
    "iovqa": "integer labels, digit-only loss (IOVQA)",
    "iovqa_pairs": "IOVQA, its 2 frames an adjacent pair",
    "head": "softmax-regression head",
    "levels": "level words (Q-Align), hard targets",
    "levels_soft": "level words, soft targets (DeQA-Score, sigma 0.5)",
    "control": "control: IOVQA with the level written in the prompt (a leak)",
    "multidim": "five dimensions, joint answer (its overall score)",
    "fidelity": "IOVQA + fidelity ranking loss (DeQA-Score, weight 1)",
    "comparison": "comparison only: trained on drawn pairs, answers A / B",
    "grpo": "answer-only GRPO after the IOVQA arm (score_relative)",
    "grpo_fidelity": "answer-only GRPO after the IOVQA arm (fidelity_rank)",
    "image_warmup": "IOVQA after an image warm-up on the training stills",
    "grpo_scratch": "answer-only GRPO from the untrained model (score_relative)",
    **{arm: f"IOVQA taught blind to {kind} (its videos rated as pristine)" for arm, kind in BLIND_ARMS.items()},
}
# Decimal answers have no 41-integer distribution, and the head's score is its own expectation.
SCORE_MODE = {"baseline": "both", "decimal": "greedy", "integer_nomask": "both", "iovqa": "both", "head": "head",
              "iovqa_pairs": "both", "levels": "both", "levels_soft": "both", "control": "both", "multidim": "both",
              "fidelity": "both", "comparison": "pairs", "grpo": "both", "grpo_fidelity": "both",
              "image_warmup": "both", "grpo_scratch": "both", **{arm: "both" for arm in BLIND_ARMS}}
# The scorer's prediction columns each mode fills, by the decoding they report.
DECODINGS = {
    "both": {"greedy": "greedy_mos", "expected": "expected_mos"},
    "greedy": {"greedy": "greedy_mos"},
    "head": {"head": "pred_mos"},
    "pairs": {},  # comparisons: P(A) per pair, no score per video
}
REUSED: list[str] = []  # runs whose stored result was reused (see `finished`)


def bench_model(work: str) -> str:
    from iovqa_plugin.demo.tiny_model import ensure_tiny_model

    return ensure_tiny_model(os.path.join(work, "tiny-qwen2.5-vl"))


def ladder(work: str, pristine_views: int = 0) -> str:
    from ladder import build

    path = os.path.join(work, "ladder")
    files = [os.path.join(path, name) for name in ("test_control.csv", "train.csv")]
    text = "".join(pathlib.Path(f).read_text(encoding="utf-8") for f in files if os.path.isfile(f))
    stills = os.path.isfile(os.path.join(path, "stills_train.csv"))
    built_views = len(set(re.findall(r"_pristine(\d+)_L0\.mp4", text)))
    if ("Temporal_MOS" not in text or "_L1_blur.mp4" not in text or not stills  # none yet, or an older ladder (no
            or built_views != pristine_views):  # sub-MOS columns, kinds alone, stills; other pristine views)
        build(path, pristine_views=pristine_views)
    add_derived_entries(path)
    return path


def add_derived_entries(path: str) -> None:
    """The comparison arm's drawn-pairs datasets and the blind arms' datasets in a ladder built before they
    existed."""
    from ladder import blind_entries, pair_entries

    info_path = os.path.join(path, "dataset_info.json")
    with open(info_path, encoding="utf-8") as handle:
        info = json.load(handle)
    wanted = pair_entries({split: os.path.join(path, f"{split}.csv") for split in ("train", "test")})
    wanted.update(blind_entries(path))
    if any(info.get(name) != entry for name, entry in wanted.items()):
        with open(info_path, "w", encoding="utf-8") as handle:
            json.dump({**info, **wanted}, handle, indent=2)


def recipe(work: str, model: str, data: str, arm: str, seed: int, steps: int, learning_rate: float,
           stage: str = "") -> str:
    """The learnable CPU recipe with the benchmark's model, data, steps and the arm's plugin keys; ``stage``
    "images": a two-stage arm's first stage (its warm-up dataset)."""
    with open(os.path.join(REPO, "examples", "iovqa_demo_cpu.yaml"), encoding="utf-8") as handle:
        base = yaml.safe_load(handle)
    base = {k: v for k, v in base.items()
            if not k.startswith("iovqa_") and k not in ("eval_dataset", "eval_strategy", "eval_steps")}
    base.update(
        model_name_or_path=model,
        dataset_dir=data,
        media_dir=data,
        dataset=WARMUP_DATASETS[arm] if stage else DATASETS.get(arm, DEFAULT_DATASETS)[0],
        iovqa_num_frames=2,
        iovqa_frame_strategy="segment",
        iovqa_frame_cache_dir=os.path.join(data, "frame_cache"),
        max_steps=steps,
        learning_rate=learning_rate,
        save_strategy="no",
        logging_steps=1 if is_rl(arm) else max(1, steps // 10),  # RL: every step's rewards, for their curve
        seed=seed,
        output_dir=os.path.join(work, "runs", f"{arm}_seed{seed}{'_' + stage if stage else ''}"),
    )
    base.update(ARMS[arm])  # an arm's own frame strategy replaces the default in place
    path = os.path.join(work, "runs", f"{arm}_seed{seed}{'_' + stage if stage else ''}.yaml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(base, handle, sort_keys=False)
    return path


def train(path: str) -> float:
    """Run the stock CLI on a recipe; seconds taken."""
    cli = os.path.join(os.path.dirname(sys.executable), "llamafactory-cli")
    start = time.time()
    result = subprocess.run([cli, "train", path], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{path} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return time.time() - start


def score(recipe_path: str, model: str | None, data: str, mode: str, arm: str) -> dict:
    """{decoding: metrics or the count of answers without a number} on the arm's test split; ``model``: score
    that model as it is (the untrained baseline), else what the recipe trained."""
    import pandas as pd

    import numpy as np

    from iovqa_plugin.eval.metrics import compute_metrics
    from iovqa_plugin.eval.pairwise import all_pairs, pairwise_accuracy
    from iovqa_plugin.score.scorer import Scorer
    from iovqa_plugin.score.settings import ScorerSettings

    table = pd.read_csv(os.path.join(data, DATASETS.get(arm, DEFAULT_DATASETS)[1]))
    scorer = Scorer(ScorerSettings.from_recipe(recipe_path, model=model))
    pairs = test_pairs(scorer.iovqa_args, data)
    if mode == "pairs":
        return score_comparisons(scorer, pairs)
    rows = [(v, os.path.join(data, v), p) for v, p in zip(table["video_name"], table["Prompt"])]
    results = {r.video: r.row() for r in scorer.score_rows(rows, mode=mode, batch_size=10)}
    out = {}
    multidim = "iovqa_dimensions" in ARMS.get(arm, {})
    masses = [results[v].get("integer_mass") for v in table["video_name"]]
    masses = [m for m in masses if m is not None and m == m]
    if masses and not multidim:
        out["integer_mass"] = sum(masses) / len(masses)
    for decoding, column in DECODINGS[mode].items():
        column = f"{column}_overall" if multidim else column
        values = [results[v].get(column) for v in table["video_name"]]
        answered = [(v, m) for v, m in zip(values, table["Overall_MOS"]) if v is not None and v == v]
        if len(answered) < 3:  # too few numbers to correlate
            out[decoding] = {"no_number": len(values) - len(answered)}
            continue
        out[decoding] = compute_metrics(*zip(*answered))
        scores, mos = (np.asarray(side, dtype=float) for side in zip(*answered))
        out[decoding]["pairwise"] = pairwise_accuracy(*all_pairs(scores, mos))
        out[decoding]["no_number"] = len(values) - len(answered)  # metrics are over the answered rows
        if not multidim:
            out[decoding]["test_pairs"] = drawn_pairs_accuracy(pairs, dict(zip(table["video_name"], values)))
    ranked = DECODINGS[mode].get("expected") or DECODINGS[mode].get("head")
    if ranked and not multidim:
        out["degradations"] = per_degradation(table, {v: results[v].get(ranked) for v in table["video_name"]})
    if multidim:
        out["dimensions"] = {name: compute_metrics([results[v][f"expected_mos_{name}"] for v in table["video_name"]],
                                                   table[column].tolist())
                             for name, column in DIMENSION_COLUMNS.items()}
    return out


def test_pairs(plugin, data: str) -> list:
    """The comparison arm's held-out pairs, drawn from the test split as training draws its pairs (every arm's
    pairwise accuracy is also reported on them)."""
    from iovqa_plugin.data.annotations import Columns
    from iovqa_plugin.data.pair_samples import load_drawn_pairs

    columns = Columns(video="video_name", prompt="Prompt", mos="Overall_MOS")
    samples, _, _ = load_drawn_pairs(os.path.join(data, DEFAULT_DATASETS[1]), columns, plugin, data, progress=False)
    return samples


def drawn_pairs_accuracy(pairs: list, predicted: dict) -> dict:
    """Pairwise accuracy of per-video scores on the drawn test pairs (a pair without both scores counts as a
    model tie: wrong)."""
    from iovqa_plugin.eval.pairwise import pairwise_accuracy

    diffs = [predicted[a] - predicted[b] if predicted.get(a) == predicted.get(a) and predicted.get(b) == predicted.get(b)
             and predicted.get(a) is not None and predicted.get(b) is not None else 0.0
             for a, b in (p.media for p in pairs)]
    return pairwise_accuracy(diffs, [p.human for p in pairs])


def score_comparisons(scorer, pairs: list) -> dict:
    """The comparison arm: P(A) - P(B) per held-out pair, its pairwise accuracy and the mass on the choice tokens."""
    from iovqa_plugin.eval.pairwise import pairwise_accuracy
    from iovqa_plugin.score.comparisons import ComparisonScorer

    results = list(ComparisonScorer(scorer).score(pairs, batch_size=8))
    failed = [r.error for r in results if r.error]
    if failed:
        raise SystemExit(f"comparison scoring failed on {len(failed)} pairs: {failed[:3]}")
    accuracy = pairwise_accuracy([r.probabilities[0] - r.probabilities[1] for r in results], [p.human for p in pairs])
    return {"pairs": {"test_pairs": accuracy}, "choice_mass": sum(r.choice_mass for r in results) / len(results)}


def per_degradation(table, predicted: dict) -> dict:
    """Expected SRCC per degradation kind on the videos degraded by that kind alone (with each source's pristine
    video): the mean over sources of the SRCC within a source, and the SRCC of all of them pooled; and the share of
    sources whose pristine video scores above their level-1 videos (their mean; and per kind)."""
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    from iovqa_plugin.demo.ladder import KINDS, video_degradation, video_source

    rows = []
    for name, mos in zip(table["video_name"], table["Overall_MOS"]):
        kind, level = video_degradation(name)
        rows.append((video_source(name), kind, level, mos, predicted[name]))
    videos = pd.DataFrame(rows, columns=["source", "kind", "level", "mos", "pred"]).dropna(subset=["pred"])
    pristine = videos[videos["level"] == 0].set_index("source")["pred"]
    out = {"kinds": {}}
    for kind in KINDS:
        alone = pd.concat([videos[videos["level"] == 0], videos[videos["kind"] == kind]])
        within = [spearmanr(group["pred"], group["mos"]).statistic for _, group in alone.groupby("source")]
        level1 = videos[(videos["kind"] == kind) & (videos["level"] == 1)].set_index("source")["pred"]
        out["kinds"][kind] = {
            "within": float(np.nanmean(within)) if len(within) else float("nan"),
            "pooled": float(spearmanr(alone["pred"], alone["mos"]).statistic),
            "level0_above_level1": float((pristine.reindex(level1.index) > level1).mean()),
        }
    # every other video (what a model blind to one kind could still rank: see bench/ladder_probes.py)
    out["without"] = {kind: float(spearmanr(videos[videos["kind"] != kind]["pred"],
                                            videos[videos["kind"] != kind]["mos"]).statistic) for kind in KINDS}
    level1 = videos[videos["level"] == 1].groupby("source")["pred"].mean()
    out["level0_above_level1"] = float((pristine.reindex(level1.index) > level1).mean())
    return out


def training_loss(output_dir: str) -> dict:
    """The run's mean training loss and its last logged one (per label token: the loss is averaged over them)."""
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        history = json.load(handle)["log_history"]
    logged = [entry["loss"] for entry in history if "loss" in entry]
    mean = [entry["train_loss"] for entry in history if "train_loss" in entry]
    return {"last_loss": logged[-1] if logged else None, "train_loss": mean[-1] if mean else None}


def continued(path: str, first: str) -> str:
    """The arm's recipe, rewritten to start from what the first-stage recipe ``first`` trains (and to name that
    recipe's text, so a changed first stage runs both again)."""
    with open(path, encoding="utf-8") as handle:
        settings = yaml.safe_load(handle)
    with open(first, encoding="utf-8") as handle:
        first_settings = yaml.safe_load(handle)
    settings.update(model_name_or_path=first_settings["output_dir"])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("# continues from " + first + ":\n# " + yaml.safe_dump(first_settings).replace("\n", "\n# ")
                     + "\n")
        yaml.safe_dump(settings, handle, sort_keys=False)
    return path


def train_and_score(path: str, data: str, arm: str) -> dict:
    first = os.path.splitext(path)[0] + "_images.yaml"
    seconds = train(first) if arm in WARMUP_DATASETS else 0.0
    seconds += train(path)
    with open(path, encoding="utf-8") as handle:
        output_dir = yaml.safe_load(handle)["output_dir"]
    extra = rl_rewards(output_dir) if is_rl(arm) else {}
    return dict(score(path, None, data, SCORE_MODE[arm], arm), train_seconds=seconds, **training_loss(output_dir),
                **extra)


def is_rl(arm: str) -> bool:
    """An RL arm: trained with --rl-steps at --rl-lr, its rewards reported."""
    return "iovqa_rl" in ARMS.get(arm, {})


def rl_group_text() -> str:
    """The RL arms' step, "<prompts> prompts x <answers> answers" (the grpo arm's; the others share it)."""
    answers, group = ARMS["grpo"]["per_device_train_batch_size"], ARMS["grpo"]["iovqa_grpo_num_generations"]
    return f"{answers // group} prompts x {group} answers"


def rl_rewards(output_dir: str) -> dict:
    """An RL run's logged curves (mean reward, group reward std, share of parseable answers, per logged step) and
    their means over the first and last 5 logged steps (``<name>_start`` / ``<name>_end``)."""
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        history = [entry for entry in json.load(handle)["log_history"] if "reward" in entry]
    out = {"reward_steps": [entry["step"] for entry in history]}
    for name in ("reward", "reward_std", "parseable"):
        curve = [entry[name] for entry in history if name in entry]
        out[f"{name}_curve"] = curve
        out[f"{name}_start"] = sum(curve[:5]) / len(curve[:5]) if curve else None
        out[f"{name}_end"] = sum(curve[-5:]) / len(curve[-5:]) if curve else None
    return out


def finished(recipe_path: str, arm: str, run) -> dict:
    """The stored result of ``arm`` under this exact recipe, or ``run()``'s, stored: an interrupted
    benchmark resumes where it stopped, and a changed recipe runs again."""
    with open(recipe_path, encoding="utf-8") as handle:
        key = handle.read()
    store = os.path.splitext(recipe_path)[0] + f".{arm}.result.json"
    if os.path.isfile(store):
        with open(store, encoding="utf-8") as handle:
            stored = json.load(handle)
        if stored["recipe"] == key:
            REUSED.append(os.path.basename(store))
            return stored["result"]
    result = run()
    with open(store, "w", encoding="utf-8") as handle:
        json.dump({"recipe": key, "result": result}, handle)
    return result


def cell(runs: list[dict], decoding: str, metric: str, videos: int) -> str:
    import numpy as np

    scored = [r[decoding] for r in runs if decoding in r]
    if not scored:
        return "-"
    missing = max(s["no_number"] for s in scored)
    values = [s[metric] for s in scored if metric in s]
    if len(values) < len(scored):
        return f"n/a ({missing}/{videos} no number)"
    note = f" ({missing}/{videos} no number)" if missing else ""
    constant = sum(math.isnan(v) for v in values)
    if constant:  # every answer the same number: a correlation is undefined
        note += f" ({constant} of {len(values)} runs answered one constant score)"
        values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a" + note
    if len(values) == 1:
        return f"{values[0]:.3f}{note}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}{note}"


def split_sizes(data: str) -> dict[str, int]:
    """{split: videos} of the ladder's annotation files."""
    import pandas as pd

    return {split: len(pd.read_csv(os.path.join(data, f"{split}.csv"))) for split in ("train", "test")}


def report(results: dict, args, sizes: dict[str, int]) -> str:
    from ladder import SPLITS, TEST_SCENES

    decodings = ("greedy", "expected")
    scenes = len({getattr(s, "photo", None) or s.clip for s in TEST_SCENES})
    lines = [
        f"Test split: {sizes['test']} videos of {scenes} unseen scenes ({len(SPLITS['test'])} sources x 25 videos); "
        f"train {sizes['train']} videos; "
        f"{args.steps} steps x batch 4, lr {args.lr}, seeds {' '.join(map(str, args.seeds))}"
        + (f"; RL arms {args.rl_steps} steps x {rl_group_text()}, lr {args.rl_lr}." if any(map(is_rl, results))
           else "."),
        "",
        "| arm | greedy SRCC | greedy PLCC | greedy final | greedy answers with a score | expected SRCC | expected PLCC "
        "| expected final | expected pairwise diff | expected pairwise tau | held-out pairs diff | held-out pairs tau "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, runs in results.items():
        row = [ARM_TITLES[arm]]
        for decoding in decodings:
            source = "head" if arm == "head" else decoding
            if arm == "head" and decoding == "greedy":
                row += ["-", "-", "-", "-"]
                continue
            row += [cell(runs, source, metric, sizes["test"]) for metric in ("srcc", "plcc", "final")]
            if decoding == "greedy":
                row.append(answer_rate(runs, sizes["test"]))
        row += [pairwise_cell(runs, "expected", kind) for kind in ("diff", "tau")]
        row += [mean_sd_cell([held_out_pairs(r)[kind] for r in runs if held_out_pairs(r)]) for kind in ("diff", "tau")]
        seconds = [r["train_seconds"] for r in runs if "train_seconds" in r]
        row.append(f"{sum(seconds) / len(seconds):.0f}" if seconds else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("The head row's expected columns are the head's own expected score (softmax over 5 grades). "
                 "Where some answers hold no number, the metrics are over the answered rows. \"expected pairwise\": "
                 "all pairs of test videos; \"held-out pairs\": the comparison arm's test pairs (drawn from the "
                 "test split within each source, at most 4 per video), from each arm's expected score (the head's "
                 "for the head arm) or, for the comparison arm, from P(A) - P(B).")
    lines.append("")
    lines += summary_lines(results)
    return "\n".join(lines)


def held_out_pairs(run: dict) -> dict:
    """A run's pairwise accuracy on the held-out drawn pairs ({} when it has none)."""
    for decoding in ("pairs", "expected", "head"):
        if "test_pairs" in run.get(decoding, {}):
            return run[decoding]["test_pairs"]
    return {}


def mean_sd_cell(values: list[float]) -> str:
    import numpy as np

    if not values:
        return "-"
    return f"{np.mean(values):.3f}" + (f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "")


def pairwise_cell(runs: list[dict], decoding: str, kind: str) -> str:
    """Mean +- sd over seeds of a decoding's pairwise accuracy (``kind``: diff or tau)."""
    return mean_sd_cell([r[decoding]["pairwise"][kind] for r in runs if "pairwise" in r.get(decoding, {})])


def answer_rate(runs: list[dict], videos: int) -> str:
    """Mean share of greedy answers that gave a MOS."""
    import numpy as np

    shares = [1 - r["greedy"]["no_number"] / videos for r in runs if "greedy" in r]
    return f"{100 * np.mean(shares):.0f} %" if shares else "-"


def summary_lines(results: dict) -> list[str]:
    """The checkable lines: the IOVQA arm's and the control's expected SRCC (mean +- sd over seeds)."""
    import numpy as np

    lines = []
    multidim = [r["dimensions"] for r in results.get("multidim", []) if "dimensions" in r]
    for name in DIMENSION_COLUMNS if multidim else ():
        values = [d[name]["srcc"] for d in multidim]
        lines.append(f"learning: multidim expected SRCC {name} {np.nanmean(values):.3f} ({len(values)} seeds)")
    for arm in ("iovqa", "iovqa_pairs", "control", "fidelity", "image_warmup", "grpo", "grpo_fidelity", "grpo_scratch"):
        values = [r["expected"]["srcc"] for r in results.get(arm, []) if "srcc" in r.get("expected", {})]
        plcc = [r["expected"]["plcc"] for r in results.get(arm, []) if "plcc" in r.get("expected", {})]
        if values:
            sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
            name = {"grpo": "grpo after sft", "grpo_fidelity": "grpo fidelity after sft",
                    "grpo_scratch": "grpo from untrained"}.get(arm, arm)
            lines.append(f"learning: {name} expected SRCC {np.mean(values):.3f} ± {sd:.3f} ({len(values)} seeds)")
            lines.append(f"learning: {arm} expected PLCC {np.mean(plcc):.3f} ({len(plcc)} seeds)")
    for arm, runs in results.items():  # every arm on the same held-out pairs ("diff": no human ties there)
        values = [held_out_pairs(r)["diff"] for r in runs if held_out_pairs(r)]
        if values:
            lines.append(f"learning: pairwise accuracy {arm} {np.mean(values):.3f} ({len(values)} seeds)")
        lines += confidence_line(arm, runs)
        masses = [r["choice_mass"] for r in runs if "choice_mass" in r]
        if masses:
            lines.append(f"learning: {arm} choice mass {mean_sd(masses, '.3g')} (the probability on the choice "
                         f"tokens at the answer, {len(masses)} runs)")
        lines += reward_lines(arm, runs)
    for arm in ("iovqa", "iovqa_pairs", "control", *BLIND_ARMS):
        lines += degradation_lines(arm, results.get(arm, []))
    return lines


def reward_lines(arm: str, runs: list[dict]) -> list[str]:
    """An RL arm's mean reward, group reward std and share of parseable answers over its first and last 5 steps
    (mean over seeds), and its reward curve in tenths of the run (mean over seeds)."""
    import numpy as np

    runs = [r for r in runs if r.get("reward_start") is not None]
    if not runs:
        return []
    names = (("reward", "mean reward"), ("reward_std", "group reward std"), ("parseable", "parseable answers"))
    parts = [f"{label} {np.mean([r[name + '_start'] for r in runs]):.3f} -> "
             f"{np.mean([r[name + '_end'] for r in runs]):.3f}"
             for name, label in names if all(r.get(name + "_start") is not None for r in runs)]
    lines = [f"learning: {arm} first 5 steps -> last 5 steps: {', '.join(parts)} ({len(runs)} seeds)"]
    curves = [r["reward_curve"] for r in runs if r.get("reward_curve")]
    if curves:
        length = min(len(c) for c in curves)
        tenths = np.array_split(np.mean([c[:length] for c in curves], axis=0), min(10, length))
        lines.append(f"learning: {arm} mean reward by tenth of the run " + " ".join(f"{t.mean():.3f}" for t in tenths)
                     + f" ({len(curves)} seeds)")
    return lines


def mean_sd(values: list[float], spec: str = ".3f") -> str:
    import numpy as np

    values = [v for v in values if v is not None and v == v]
    if not values:
        return "n/a"
    return f"{np.mean(values):{spec}} ± {np.std(values, ddof=1) if len(values) > 1 else 0.0:{spec}}"


def confidence_line(arm: str, runs: list[dict]) -> list[str]:
    """How much probability the arm's answers hold on valid scores, and its training loss per label token."""
    if not any("integer_mass" in r for r in runs):
        return []
    line = f"learning: {arm} integer mass {mean_sd([r.get('integer_mass') for r in runs], '.3g')}"
    if any("train_loss" in r for r in runs) and not is_rl(arm):  # an RL arm's loss is GRPO's, not per label token
        line += (f", training loss per label token {mean_sd([r.get('train_loss') for r in runs])} (mean over the "
                 f"run), {mean_sd([r.get('last_loss') for r in runs])} (last logged)")
    return [line + f" ({len(runs)} runs)"]


def degradation_lines(arm: str, runs: list[dict]) -> list[str]:
    """The checkable per-degradation lines (expected SRCC on the videos degraded by one kind only)."""
    from iovqa_plugin.demo.ladder import KINDS

    runs = [r["degradations"] for r in runs if "degradations" in r]
    if not runs:
        return []
    lines = []
    for kind in KINDS:
        cells = [r["kinds"][kind] for r in runs]
        lines.append(f"learning: {arm} per degradation {kind} {mean_sd([c['within'] for c in cells])} within source, "
                     f"{mean_sd([c['pooled'] for c in cells])} pooled; level 0 above level 1 in "
                     f"{mean_sd([c['level0_above_level1'] for c in cells])} of held-out sources ({len(runs)} seeds)")
    lines.append(f"learning: {arm} level 0 above level 1 (mean of the level-1 videos) in "
                 f"{mean_sd([r['level0_above_level1'] for r in runs])} of held-out sources ({len(runs)} seeds)")
    without = [r["without"]["drop"] for r in runs if "without" in r]
    if without:
        lines.append(f"learning: {arm} expected SRCC without the dropped-frames videos {mean_sd(without)} "
                     f"({len(without)} seeds)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--warmup-steps", type=int, default=50, help="the image_warmup arm's steps on the stills")
    parser.add_argument("--work", default=os.path.join(REPO, "work", "bench_learning"))
    parser.add_argument("--pristine-views", type=int, default=0,
                        help="random pristine views of each training source in the ladder (5: the pristine level as "
                        "common as each other); a work folder holds one ladder")
    parser.add_argument("--rl-steps", type=int, default=150,
                        help="steps of the RL arms (after their SFT arm, or from the untrained model), each of "
                        f"{rl_group_text()}: 150 see the 600 training videos once")
    parser.add_argument("--rl-lr", type=float, default=1e-4,
                        help="learning rate of the RL arms (3e-4 collapses the answers faster and ranks worse)")
    args = parser.parse_args()

    model, data = bench_model(args.work), ladder(args.work, args.pristine_views)
    base_recipe = recipe(args.work, model, data, "iovqa", args.seeds[0], args.steps, args.lr)
    results = {
        "baseline": [finished(base_recipe, "baseline",
                              lambda: score(base_recipe, model, data, SCORE_MODE["baseline"], "baseline"))]
    }
    for seed in args.seeds:
        for arm in sorted(args.arms, key=lambda a: a in CONTINUES):  # an RL arm after the SFT arm it continues
            if arm in CONTINUES:
                start = CONTINUES[arm]
                sft = recipe(args.work, model, data, start, seed, args.steps, args.lr)
                if start not in args.arms:
                    finished(sft, start, lambda: train_and_score(sft, data, start))
                with open(sft, encoding="utf-8") as handle:
                    trained = yaml.safe_load(handle)["output_dir"]
                path = recipe(args.work, trained, data, arm, seed, args.rl_steps, args.rl_lr)
            elif is_rl(arm):
                path = recipe(args.work, model, data, arm, seed, args.rl_steps, args.rl_lr)
            else:
                path = recipe(args.work, model, data, arm, seed, args.steps, args.lr)
                if arm in WARMUP_DATASETS:  # the first stage trains the model the arm's recipe continues from
                    first = recipe(args.work, model, data, arm, seed, args.warmup_steps, args.lr, stage="images")
                    path = continued(path, first)
            run = finished(path, arm, lambda: train_and_score(path, data, arm))
            results.setdefault(arm, []).append(run)
            print(f"[learning] seed {seed} {arm}: {json.dumps(run)}", file=sys.stderr, flush=True)
    print(report(results, args, split_sizes(data)))
    if REUSED:
        print(f"\n{len(REUSED)} of {1 + len(args.seeds) * len(args.arms)} results were reused from earlier runs "
              f"(this command or a subset of its arms and seeds) with the same recipes "
              f"({args.work}/runs/*.result.json); delete them to train every arm again.")


if __name__ == "__main__":
    main()

"""The quick-start demo: tiny model, demo data, the stock ``llamafactory-cli train``, then scoring.

``iovqa demo`` (``make demo``) runs it on CPU in minutes and prints a short
report: progress bars for data, training and scoring, then SRCC / PLCC /
final of each decoding on the held-out test split and where the adapter,
predictions, plot and LLaMA-Factory's full log are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque

DEMO_RECIPE = os.path.join("examples", "iovqa_demo_cpu.yaml")
DEMO_DATA_DIR = os.path.join("data_info", "demo")
DEMO_MEDIA_ROOT = "data_info"
# The trainer's progress bar ("12/40 [00:10<00:20, 1.2it/s]"); dataset bars count examples/s and are left out.
_TRAIN_STEP = re.compile(r"(\d+)/(\d+) \[[^\]]*(?:it/s|s/it)\]")


def make_demo_extras() -> None:
    """The ladder's stills and quality questions (the image warm-up and Q&A mixing CPU recipes), when missing."""
    from .questions import QUESTIONS_FILE, make_questions
    from .stills import make_stills

    if not os.path.isfile(os.path.join(DEMO_DATA_DIR, "stills_test.csv")):
        make_stills(DEMO_DATA_DIR, DEMO_MEDIA_ROOT)
    if not os.path.isfile(os.path.join(DEMO_DATA_DIR, QUESTIONS_FILE)):
        make_questions(DEMO_DATA_DIR, DEMO_MEDIA_ROOT)


def run_demo(work_dir: str, recipe: str = DEMO_RECIPE, overrides: tuple[str, ...] = ()) -> int:
    """Build what is missing, train through the stock CLI, score the held-out split; the process's exit code."""
    import yaml

    from .ladder import make_demo_dataset
    from .tiny_model import ensure_tiny_model

    start = time.time()
    with open(recipe, encoding="utf-8") as handle:
        settings = yaml.safe_load(handle)
    for override in overrides:
        key, _, value = override.partition("=")
        settings[key] = yaml.safe_load(value)
    model_dir, output_dir = settings["model_name_or_path"], settings["output_dir"]
    ensure_tiny_model(model_dir)
    if not os.path.isfile(os.path.join(DEMO_DATA_DIR, "test.csv")):
        make_demo_dataset(DEMO_DATA_DIR, media_root=DEMO_MEDIA_ROOT, progress=True)
    make_demo_extras()
    os.makedirs(output_dir, exist_ok=True)
    run_recipe = os.path.join(output_dir, "demo_recipe.yaml")  # the recipe with the overrides, for training and scoring
    with open(run_recipe, "w", encoding="utf-8") as handle:
        yaml.safe_dump(settings, handle, sort_keys=False)
    log = os.path.join(output_dir, "train.log")
    cli = shutil.which("llamafactory-cli") or os.path.join(os.path.dirname(sys.executable), "llamafactory-cli")
    command = [cli, "train", run_recipe]
    print(f"training: {' '.join(command)}  (LLaMA-Factory's log: {log})", flush=True)
    code = run_with_progress(command, log, "train", settings.get("max_steps"))
    if code != 0:
        print(f"training failed (exit {code}); the end of {log}:", file=sys.stderr)
        with open(log, encoding="utf-8", errors="replace") as handle:
            print("".join(deque(handle, maxlen=30)), file=sys.stderr)
        return code
    train_seconds = time.time() - start
    summary = score_demo_test_split(run_recipe, output_dir, os.path.join(DEMO_DATA_DIR, "test.csv"))
    print(report(summary, output_dir, log, train_seconds, time.time() - start))
    return 0


def run_with_progress(command: list[str], log_path: str, desc: str, steps: int | None = None) -> int:
    """Run ``command`` with its whole output in ``log_path``; one progress bar follows the trainer's ``steps``
    (or, unknown, its longest bar)."""
    from tqdm.auto import tqdm

    with open(log_path, "w", encoding="utf-8") as log, tqdm(desc=desc, unit="step", total=steps) as bar:
        # text mode reads "\r" as a line end too, so every progress-bar refresh is its own line
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
        for line in process.stdout:
            log.write(line)
            match = _TRAIN_STEP.search(line)
            if match:
                done, total = int(match.group(1)), int(match.group(2))
                if total == steps or (steps is None and total >= (bar.total or 0)):  # not the data or eval bars
                    bar.total = total
                    bar.n = done
                    bar.refresh()
        return process.wait()


def quiet_loading() -> None:
    """Loading the model for scoring prints no INFO lines (they are in the training log already)."""
    os.environ.setdefault("LLAMAFACTORY_VERBOSITY", "WARN")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def score_demo_test_split(recipe: str, output_dir: str, test_csv: str) -> dict:
    """Score the demo's held-out split with both decodings; metrics of each."""
    import pandas as pd

    from ..eval.evaluation import evaluate
    from ..score.scoring_loop import score_file
    from ..score.scorer import Scorer
    from ..score.settings import ScorerSettings

    predictions = os.path.join(output_dir, "test_predictions.csv")
    quiet_loading()
    scorer = Scorer(ScorerSettings.from_recipe(recipe))  # the adapter, or the whole model, in output_dir
    # a fresh adapter: start the file over rather than resume an old run's rows
    score_file(scorer, test_csv, predictions, DEMO_MEDIA_ROOT, mode="both", restart=True)
    table = pd.read_csv(predictions)
    decodings, plot = {}, None
    for decoding, column in (("expected", "expected_mos"), ("greedy", "greedy_mos")):
        answered = int(table[column].notna().sum())
        entry = {"answered": answered, "n": len(table)}
        if answered >= 3:  # correlations over the answered rows
            entry.update(evaluate(predictions, test_csv, score_column=column, answered_only=True))
            plot = plot or entry["plot"]
        decodings[decoding] = entry
    mass = float(table["integer_mass"].mean()) if "integer_mass" in table else float("nan")
    return {"predictions": predictions, "decodings": decodings, "plot": plot, "integer_mass": mass}


def report(summary: dict, output_dir: str, log: str, train_seconds: float, total_seconds: float) -> str:
    """The demo's closing report: one table and the paths a person looks at next."""
    lines = ["", "held-out test split (sources never seen in training)",
             f"  {'decoding':10s}{'SRCC':>8s}{'PLCC':>8s}{'final':>8s}   answers holding a score"]
    for decoding, entry in summary["decodings"].items():
        if "srcc" in entry:
            lines.append(f"  {decoding:10s}{entry['srcc']:8.3f}{entry['plcc']:8.3f}{entry['final']:8.3f}"
                         f"   {entry['answered']}/{entry['n']}")
        else:
            lines.append(f"  {decoding:10s}{'n/a':>8s}{'n/a':>8s}{'n/a':>8s}   {entry['answered']}/{entry['n']}")
    lines += [
        f"  trained       {output_dir}",
        f"  predictions   {summary['predictions']}",
        f"  scatter plot  {summary['plot']}",
        f"  training log  {log}",
        f"  time          {train_seconds:.0f} s to train, {total_seconds:.0f} s in all",
    ]
    # the mean probability on valid scores at the answer position: near 1 once the model answers with a score
    lines.append(f"integer mass {summary['integer_mass']:.3f}")
    expected = summary["decodings"]["expected"]
    if "srcc" in expected:
        lines.append(f"expected SRCC {expected['srcc']:.3f}")
    return "\n".join(lines)

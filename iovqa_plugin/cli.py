"""The ``iovqa`` console command.

    iovqa train RECIPE.yaml [key=value ...]        train through LLaMA-Factory (same as llamafactory-cli train)
    iovqa prepare RECIPE.yaml [--workers N]        check the recipe's datasets and fill the frame cache
    iovqa score --recipe R.yaml --data D --out preds.csv [--mode expected|greedy|both|head|sampled] [--nproc N]
    iovqa eval --pred preds.csv --labels D         metrics, JSON report and scatter plot
    iovqa ensemble (--config ens.yaml | --pred a.csv b.csv ...) --out ens.csv [--fit-labels D]
    iovqa demo | build-tiny-model DIR | demo-data DIR | keys

Data (``--data``, ``--labels``, ``--fit-labels``) is named the same way everywhere: a dataset name in the
recipe's dataset_info.json (read with its ``columns``), or an annotation file (read with the column options).
A user error (bad key, bad row, bad option) prints one message, without a Python traceback, and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .data.label_formats import LABEL_FORMATS
from .errors import UserError
from .score.modes import SCORING_MODES
from .version import __version__


def cmd_train(args: argparse.Namespace) -> int:
    import iovqa_plugin

    iovqa_plugin.apply()
    from llamafactory.cli import main as llamafactory_main

    sys.argv = ["llamafactory-cli", "train", args.recipe, *args.overrides]
    llamafactory_main()
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Fill the frame cache with worker processes, then run every check training runs before the model loads."""
    from .data.annotations import AnnotationError, load_annotations, write_issue_report
    from .data.datasets import dataset_names, resolve_data
    from .data.layouts import LAYOUTS
    from .data.pair_samples import load_comparisons
    from .patches.preflight import check_training_data, training_args
    from .patches.run import run_scope
    from .recipe import load_recipe_file, split_recipe

    raw = load_recipe_file(args.recipe)
    recipe, iovqa_args = split_recipe(raw)
    if iovqa_args is None:
        raise UserError(f"{args.recipe}: the recipe has no iovqa_* key")
    with run_scope(None):
        training_args(raw)  # the recipe's own checks (keys, template) before any frame is extracted
    if args.workers:
        iovqa_args.frame_workers = args.workers
    status = 0
    for name in dataset_names(recipe):
        source = resolve_data(name, recipe, iovqa_args)
        if source.formatting not in LAYOUTS:
            print(f"{name}: formatting is {source.formatting!r}, not one of the plugin's {list(LAYOUTS)}: skipped")
            continue
        layout = LAYOUTS[source.formatting]
        start = time.time()
        try:
            if layout.comparison:
                samples, issues, stats = load_comparisons(layout.reads, source.path, iovqa_args, source.media_dir,
                                                          columns=source.columns, pair_columns=source.pairs)
            else:
                samples, issues, stats = load_annotations(source.path, source.columns, iovqa_args, source.media_dir)
        except AnnotationError as err:
            print(f"{name}: {err}", file=sys.stderr)
            status = 1
            continue
        ready = f"{stats['samples']} comparisons" if layout.comparison else f"{stats['used']}"
        print(
            f"{name}: {stats['rows']} rows, {ready} ready, {stats['skipped_rows']} skipped "
            f"({time.time() - start:.1f}s); frames in {iovqa_args.cache_dir}"
        )
        if issues:
            write_issue_report(issues, iovqa_args.skip_report_path, sorted({i.file for i in issues}))
            print(f"{name}: skipped rows and reasons: {iovqa_args.skip_report_path}")
    if status:
        return status
    counts = check_training_data(raw)  # tokenizer, template, samples and their lengths, as training builds them
    print(f"{args.recipe}: ready to train ({', '.join(f'{n} {split} samples' for split, n in counts.items())}); "
          "every check before the model loads passed")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .score.command import score_command

    return score_command(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.command import eval_command

    return eval_command(args)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .eval.command import ensemble_command

    return ensemble_command(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo

    return run_demo(args.work_dir, args.recipe, tuple(args.overrides))


def cmd_build_tiny_model(args: argparse.Namespace) -> int:
    from .demo.tiny_model import build_tiny_model

    print(build_tiny_model(args.output_dir, seed=args.seed))
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from .demo.ladder import make_demo_dataset

    made = make_demo_dataset(args.output_dir, media_root=args.media_root, seed=args.seed,
                             sub_mos_columns=args.sub_mos)
    for split, path in made.items():
        print(f"{split}: {path}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from .config_parser import help_text

    print(help_text())
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless it has none (None, an unset flag) or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _subparser(sub, name: str, helptext: str, func) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=helptext, description=helptext, formatter_class=_HelpFormatter)
    parser.set_defaults(func=func)
    return parser


RELATIVE_PATHS = ("Relative paths in a recipe (model_name_or_path, output_dir, dataset_dir, media_dir, "
                  "iovqa_frame_cache_dir, ...) are read from the current folder, as llamafactory-cli reads them")


def _recipe_option(parser: argparse.ArgumentParser, required: bool, what: str) -> None:
    parser.add_argument("--recipe", required=required, default=None, help=f"{what}. {RELATIVE_PATHS}")


def _score_column_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--score-column", default="pred_mos",
                        help="which score of a scorer file: pred_mos (its mode's), expected_mos, greedy_mos, head_mos "
                             "(several quality dimensions: <this>_<dimension> for each)")


def _column_options(parser: argparse.ArgumentParser, *names: str) -> None:
    helps = {
        "video": "video id column of an annotation file (default: the recipe's iovqa_video_column, video_name)",
        "prompt": "text prompt column of an annotation file (default: iovqa_prompt_column, Prompt)",
        "mos": "MOS column of an annotation file (default: iovqa_mos_column, Overall_MOS)",
    }
    for name in names:
        parser.add_argument(f"--{name}-column", default=None, help=helps[name])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iovqa", description="IOVQA video quality fine-tuning for LLaMA-Factory")
    parser.add_argument("--version", action="version", version=f"iovqa-plugin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _subparser(sub, "train", "train a recipe through LLaMA-Factory (plugin applied)", cmd_train)
    p.add_argument("recipe", help="the training recipe (YAML)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as llamafactory-cli accepts")

    p = _subparser(sub, "prepare", "check a recipe's datasets and extract their frames into the cache", cmd_prepare)
    p.add_argument("recipe", help=f"the training recipe (YAML). {RELATIVE_PATHS}")
    p.add_argument("--workers", type=int, default=None, help="frame extraction processes (default: the recipe's)")

    p = _subparser(sub, "score", "score videos with a trained model", cmd_score)
    _recipe_option(p, True, "the training recipe (model, template, frames, prompt); run from the folder you trained "
                   "from, or write its paths absolute")
    p.add_argument("--data", required=True, help="a dataset name in the recipe's dataset_info.json, or an annotation file")
    p.add_argument("--out", required=True, help="prediction CSV (re-running the same command resumes it)")
    p.add_argument("--mode", choices=list(SCORING_MODES), default="expected",
                   help="decoding: expected score over 10..50 (level-word runs: over the five level words, 1..5), "
                        "greedy answer, both, or the softmax-regression head. "
                        "Several quality dimensions: a column per dimension for each decoding (per_sample: each "
                        "dimension scored with its own prompt; joint: the answer's wording is written for the model and "
                        "each score is decoded after its name and the earlier scores as decoded: greedy's text, or "
                        "in expected mode (and where greedy gave none) the rounded expected score). sampled: the mean "
                        "score of --samples answers sampled at --temperature (VisualQuality-R1's scoring), its spread "
                        "in sampled_std, the answers without a score counted in sampled_unparseable")
    p.add_argument("--samples", type=int, default=None, help="--mode sampled: answers per video (default 8)")
    p.add_argument("--temperature", type=float, default=None,
                   help="--mode sampled: the sampling temperature (default 1.0; no top-k or top-p cut)")
    p.add_argument("--seed", type=int, default=None,
                   help="--mode sampled: the run's seed (default 0); each video's answers are drawn with a seed of it "
                        "and the video's id, so a video scores the same in any batch or process")
    p.add_argument("--model", default=None,
                   help="base model or merged export (default: the recipe's); given alone, no adapter is added")
    p.add_argument("--adapter", default=None,
                   help="LoRA adapter folder (default: the recipe's output_dir, unless --model is given); '' for none")
    p.add_argument("--media-dir", default=None, help="folder video paths are relative to (default: the recipe's)")
    p.add_argument("--frame-cache-dir", default=None,
                   help="folder of the frame cache (default: the recipe's iovqa_frame_cache_dir, else $IOVQA_CACHE_DIR, "
                        "else ~/.cache/iovqa_plugin/frames); where frames are cached changes no score")
    p.add_argument("--batch-size", type=int, default=4, help="videos per forward pass")
    p.add_argument("--save-probs", action="store_true",
                   help="also write p_10..p_50 (level-word runs always write p_bad..p_excellent)")
    p.add_argument("--restart", action="store_true",
                   help="start --out over instead of resuming it (needed when it was written by another run)")
    p.add_argument("--nproc", default=None,
                   help="score data-parallel in N processes on this machine (one per GPU: 'auto'); under torchrun, "
                        "leave it out (default: 1, or NPROC_PER_NODE with FORCE_TORCHRUN=1)")
    p.add_argument("--part-only", action="store_true", help=argparse.SUPPRESS)  # a worker of --nproc
    p.add_argument("--layout", default=None, choices=["iovqa", "iovqa_pairs", "iovqa_drawn_pairs"],
                   help="how an annotation FILE given as --data is read (a dataset's is its `formatting`): iovqa "
                        "(one video per row), iovqa_pairs (a pairs file: P(A) and the choice per pair), "
                        "iovqa_drawn_pairs (pairs drawn from a pointwise file as for training)")
    _column_options(p, "video", "prompt")

    p = _subparser(sub, "eval", "SRCC/PLCC/final and more of predictions against labels (several quality "
                   "dimensions: per dimension, against each one's MOS column, and their mean)", cmd_eval)
    p.add_argument("--pred", required=True, help="prediction CSV, or LLaMA-Factory's generated_predictions.jsonl")
    p.add_argument("--labels", default=None,
                   help="a dataset name (with --recipe) or an annotation file with the MOS (optional with --pairs)")
    _recipe_option(p, False, "recipe whose dataset_info.json resolves dataset names")
    p.add_argument("--report", default=None, help="JSON report path (default: next to --pred)")
    p.add_argument("--pairwise", action="store_true",
                   help="also the pairwise accuracy ('diff': ties excluded; 'tau': Deutsch et al. 2023's accuracy "
                        "with ties) over all pairs of the labelled videos (with --by: also within each group)")
    p.add_argument("--pairs", default=None, metavar="FILE",
                   help="pairwise accuracy on the pairs of this CSV/JSON/JSONL file: video_a, video_b and a "
                        "preference ('A', 'B', 'tie') or mos_a and mos_b; optional dimension (see --pair-column)")
    p.add_argument("--pair-column", action="append", default=None, metavar="ROLE=NAME",
                   help="column name of a pairs file role (video_a, video_b, preference, mos_a, mos_b, dimension), "
                        "e.g. --pair-column preference=winner; repeatable")
    p.add_argument("--tie-calibration", action="store_true",
                   help="pairwise 'tau': tie the model's scores within the epsilon that maximises it (Deutsch et "
                        "al. 2023's tie calibration; reported); default: only equal scores tie")
    p.add_argument("--plot", default=None, help="scatter plot PNG path (default: next to --pred)")
    p.add_argument("--label-format", default="integer", choices=list(LABEL_FORMATS),
                   help="how to read text answers of generated_predictions.jsonl (level: the first level word, 1..5)")
    p.add_argument("--labelled-only", action="store_true",
                   help="evaluate the labelled videos only; predictions without a label are left out and counted")
    p.add_argument("--answered-only", action="store_true",
                   help="leave out the videos whose score column is empty (a greedy answer without a score, a video "
                        "that failed), listed with their reasons in the report; without it they are an error")
    p.add_argument("--by", default=None, metavar="COLUMN",
                   help="also SRCC/PLCC per value of this column of the labels or predictions (scene, source, "
                        "prompt, level...) and the within-group SRCC (mean over groups of >= 3 videos whose "
                        "labels differ)")
    _score_column_option(p)
    _column_options(p, "video", "mos")

    p = _subparser(sub, "ensemble", "weighted average of prediction files (several quality dimensions: one "
                   "ensemble per dimension)", cmd_ensemble)
    p.add_argument("--config", default=None, help="YAML with members: [{name, predictions, weight}]")
    p.add_argument("--pred", nargs="+", default=None, help="prediction files (instead of --config)")
    p.add_argument("--weights", nargs="+", type=float, default=None, help="weights of --pred files (default: equal)")
    p.add_argument("--out", required=True, help="ensemble prediction CSV")
    p.add_argument("--fit-labels", default=None, help="labelled split (dataset name or file) to fit the weights on")
    p.add_argument("--report", default=None, help="JSON report path (default: next to --out)")
    _recipe_option(p, False, "recipe whose dataset_info.json resolves dataset names")
    _score_column_option(p)
    _column_options(p, "video", "mos")

    p = _subparser(sub, "demo", "run the quick-start demo on CPU", cmd_demo)
    p.add_argument("--work-dir", default="work", help="where the tiny model and runs go")
    p.add_argument("--recipe", default=os.path.join("examples", "iovqa_demo_cpu.yaml"), help="the demo recipe")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")

    p = _subparser(sub, "build-tiny-model", "save the offline tiny Qwen2.5-VL", cmd_build_tiny_model)
    p.add_argument("output_dir")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")

    p = _subparser(sub, "demo-data", "write the demo quality ladder", cmd_demo_data)
    p.add_argument("output_dir")
    p.add_argument("--media-root", default=None, help="folder video_name cells are relative to (default: output_dir)")
    p.add_argument("--seed", type=int, default=0, help="degradation and rater seed")
    p.add_argument("--sub-mos", action="store_true",
                   help="also write TaobaoVD-GC's Traditional/Alignment/Aesthetic/Temporal_MOS columns, each from "
                        "what its dimension judges (the videos and Overall_MOS are unchanged)")

    _subparser(sub, "keys", "list the plugin's recipe keys", cmd_keys)
    return parser


def _user_errors() -> tuple[type, ...]:
    """Exceptions that mean bad input, not a bug: shown as one message."""
    from .errors import input_errors
    from .eval.predictions import MatchError
    from .score.output_lock import OutputLocked
    from .score.parallel import ParallelError, PartError
    from .score.prediction_file import ResumeError
    from .score.settings import SettingsError

    return (*input_errors(), MatchError, ResumeError, SettingsError, ParallelError, PartError,
            OutputLocked, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for the workers `iovqa score --nproc N` starts
    try:
        return args.func(args)
    except _user_errors() as err:
        print(f"iovqa {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

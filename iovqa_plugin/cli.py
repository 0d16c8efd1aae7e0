"""The ``iovqa`` console command.

    iovqa train RECIPE.yaml [key=value ...]        train through LLaMA-Factory (same as llamafactory-cli train)
    iovqa prepare RECIPE.yaml [--workers N]        check the recipe's datasets and fill the frame cache
    iovqa score --recipe R.yaml --data D --out preds.csv [--mode expected|greedy|both|head] [--nproc N]
    iovqa eval --pred preds.csv --labels D         metrics, JSON report and scatter plot
    iovqa ensemble (--config ens.yaml | --pred a.csv b.csv ...) --out ens.csv [--fit-labels D]
    iovqa demo | build-tiny-model DIR | demo-data DIR | keys

Data (``--data``, ``--labels``, ``--fit-labels``) is named the same way everywhere: a dataset name in the
recipe's dataset_info.json (read with its ``columns``), or an annotation file (read with the column options).
A user error (bad key, bad row, bad option) prints one message, without a Python traceback, and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional

from .data.labels import LABEL_FORMATS
from .version import __version__


class UserError(Exception):
    """A problem with the command's input: printed as one line, exit status 2."""


def _load_recipe(path: Optional[str]) -> dict:
    import yaml

    if path is None:
        return {}
    if not os.path.isfile(path):
        raise UserError(f"recipe not found: {path}")
    with open(path, encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    if not isinstance(recipe, dict):
        raise UserError(f"{path}: not a YAML mapping")
    return recipe


def _plugin_config(recipe: dict):
    from .config import IOVQAArguments
    from .recipe import split_recipe

    return split_recipe(recipe)[1] or IOVQAArguments()


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
    from .recipe import split_recipe

    raw = _load_recipe(args.recipe)
    recipe, config = split_recipe(raw)
    if config is None:
        raise UserError(f"{args.recipe}: the recipe has no iovqa_* key")
    with run_scope(None):
        training_args(raw)  # the recipe's own checks (keys, template) before any frame is extracted
    if args.workers:
        config.frame_workers = args.workers
    status = 0
    for name in dataset_names(recipe):
        source = resolve_data(name, recipe, config)
        if source.formatting not in LAYOUTS:
            print(f"{name}: formatting is {source.formatting!r}, not one of the plugin's {list(LAYOUTS)}: skipped")
            continue
        layout = LAYOUTS[source.formatting]
        start = time.time()
        try:
            if layout.comparison:
                samples, issues, stats = load_comparisons(layout.reads, source.path, config, source.media_dir,
                                                          columns=source.columns, pair_columns=source.pairs)
            else:
                samples, issues, stats = load_annotations(source.path, source.columns, config, source.media_dir)
        except AnnotationError as err:
            print(f"{name}: {err}", file=sys.stderr)
            status = 1
            continue
        ready = f"{stats['samples']} comparisons" if layout.comparison else f"{stats['used']}"
        print(
            f"{name}: {stats['rows']} rows, {ready} ready, {stats['skipped_rows']} skipped "
            f"({time.time() - start:.1f}s); frames in {config.cache_dir}"
        )
        if issues:
            write_issue_report(issues, config.skip_report_path, sorted({i.file for i in issues}))
            print(f"{name}: skipped rows and reasons: {config.skip_report_path}")
    if status:
        return status
    counts = check_training_data(raw)  # tokenizer, template, samples and their lengths, as training builds them
    print(f"{args.recipe}: ready to train ({', '.join(f'{n} {split} samples' for split, n in counts.items())}); "
          "every check before the model loads passed")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .data.datasets import resolve_data, scoring_rows
    from .data.layouts import LAYOUTS
    from .score.launch import local_process_count
    from .score.parallel import ScoringJob, World
    from .score.prediction_file import run_identity
    from .score.settings import ScorerSettings

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    began = time.time()
    world = World.from_env()
    nproc = 1 if args.part_only else local_process_count(args.nproc)
    if nproc > 1 and world.size > 1:
        raise UserError(f"--nproc {nproc} starts its own processes: not under torchrun (WORLD_SIZE={world.size})")
    if args.part_only and world.size == 1:
        raise UserError("--part-only is for the workers `iovqa score --nproc N` starts")
    if args.part_only:  # a worker of --nproc: never outlive the launcher (it would write on under a re-run)
        from .score.launch import PARENT_VARIABLE, die_with_parent

        die_with_parent(int(os.environ.get(PARENT_VARIABLE) or os.getppid()))
    settings = ScorerSettings.from_recipe(args.recipe, model=args.model, adapter=args.adapter)
    if args.frame_cache_dir:  # where frames are cached changes no score
        settings.plugin.frame_cache_dir = args.frame_cache_dir
    source = resolve_data(args.data, _load_recipe(args.recipe), settings.plugin, media_dir=args.media_dir,
                          columns={"video": args.video_column, "prompt": args.prompt_column}, layout=args.layout)
    if source.formatting in LAYOUTS and LAYOUTS[source.formatting].comparison:
        return _score_comparisons(args, settings, source, max(nproc, world.size), began)
    rows = scoring_rows(source)
    identity = run_identity(settings, args.mode, score_options())
    processes = max(nproc, world.size)
    job = ScoringJob(args.out, rows, processes, identity, args.save_probs)
    if not args.restart:  # what resuming would refuse, before the model loads and before anything is written
        job.check_resume(own_parts=processes == 1 or nproc > 1)
    if world.rank == 0 and not args.part_only:
        how = f"; {processes} processes" if processes > 1 else ""
        print(f"iovqa score: {len(rows)} videos of {source.name}; model {settings.model}; {settings.note}{how}",
              file=sys.stderr)
        for warning in settings.warnings + mode_hints(settings.plugin, args.mode):
            print(f"iovqa score: warning: {warning}", file=sys.stderr)
    if processes == 1:
        return _score_single(args, settings, rows, began)
    if nproc > 1:
        return _score_launch(args, job, began)
    return _score_rank(args, job, world, settings, began)


def _score_comparisons(args: argparse.Namespace, settings, source, processes: int, began: float) -> int:
    """Comparison data: P(A) and the greedy choice of every pair, in one process."""
    from tqdm import tqdm

    from .data.layouts import LAYOUTS
    from .data.pair_samples import load_comparisons
    from .score.comparisons import ComparisonScorer, write_comparisons
    from .score.scorer import Scorer

    if processes > 1:
        raise UserError("comparisons are scored in one process: leave out --nproc and torchrun")
    layout = LAYOUTS[source.formatting]
    samples, issues, stats = load_comparisons(layout.reads, source.path, settings.plugin, source.media_dir,
                                              columns=source.columns, pair_columns=source.pairs)
    print(f"iovqa score: {len(samples)} comparisons of {source.name} ({layout.formatting}; {stats['rows']} rows, "
          f"{stats['skipped_rows']} skipped, {stats['ties_left_out']} ties left out); model {settings.model}; "
          f"{settings.note}; --mode does not apply: P(A) and the choice are written", file=sys.stderr)
    scorer = ComparisonScorer(Scorer(settings))
    start = time.time()
    results = list(tqdm(scorer.score(samples, args.batch_size), total=len(samples), desc="iovqa score pairs",
                        disable=None))
    pairs = write_comparisons(results, samples, args.out)
    failed = sum(r.error is not None for r in results)
    print(f"iovqa score: wrote {args.out} ({len(results) - failed} comparisons scored, {failed} failed) and the "
          f"pairs with their human preference to {pairs} (iovqa eval --pred {args.out} --pairs {pairs}); "
          f"{time.time() - start:.1f} s scoring, {time.time() - began:.1f} s in all", file=sys.stderr)
    return 1 if failed else 0


def mode_hints(plugin, mode: str) -> list[str]:
    """What a person choosing ``mode`` for this run's model should know."""
    if plugin.head_on and mode != "head":
        return [f"this model was trained with iovqa_head: {plugin.head}: --mode head scores with the head it "
                f"trained; --mode {mode} reads the language model's answer instead"]
    return []


def score_options() -> dict:
    """Decoding options beyond the mode that change a prediction file's content (recorded in its meta)."""
    from .score.decoding import MAX_NEW_TOKENS

    return {"max_new_tokens": MAX_NEW_TOKENS}


def _score_single(args: argparse.Namespace, settings, rows: list, began: float) -> int:
    """One process (the default): score into --out directly, taking over rows of an earlier parallel run."""
    from .score.output_lock import OutputLock
    from .score.parallel import part_files, remove_part_files
    from .score.prediction_file import score_rows_into
    from .score.scorer import Scorer

    with OutputLock(args.out):
        if args.restart:
            remove_part_files(args.out)
        parts = [path for path, _, _ in part_files(args.out)]
        scorer = Scorer(settings)
        start = time.time()
        try:
            stats = score_rows_into(scorer, rows, args.out, mode=args.mode, batch_size=args.batch_size,
                                    save_probabilities=args.save_probs, restart=args.restart,
                                    extra_identity=score_options(), sources=parts)
        except KeyboardInterrupt:
            return _interrupted(args.out, len(rows))
        remove_part_files(args.out)  # their rows are in --out now
    return _summary(args.out, stats, began, time.time() - start)


def _score_launch(args: argparse.Namespace, job, began: float) -> int:
    """``--nproc N``: start N workers of this command, one progress bar, merge their parts."""
    from .score.launch import RankFailed, run_local
    from .score.output_lock import OutputLock

    with OutputLock(args.out) as lock:  # handed to the workers: held until the last of them ends
        if args.restart:
            job.remove_all()
        try:
            stats = run_local(job, args.argv, lock_fd=lock.fd)
        except RankFailed as err:
            print(f"iovqa score: error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return _interrupted(args.out, len(job.rows), job.progress())
    return _summary(args.out, stats, began, stats["score_s"])


def _score_rank(args: argparse.Namespace, job, world, settings, began: float) -> int:
    """One rank (under torchrun, or a worker of --nproc): score its share into its part file; rank 0 of a
    torchrun job also holds the output's lock, shows the job's progress and merges the parts."""
    import contextlib

    from .score.launch import die_with_parent, process_group, rank_device
    from .score.output_lock import OutputLock
    from .score.parallel import JobProgress
    from .score.scorer import Scorer

    settings.device = rank_device(world)
    merger = world.rank == 0 and not args.part_only
    print(f"iovqa score: rank {world.rank} of {world.size} on {settings.device}: "
          f"{len(job.share(world.rank))} of {len(job.rows)} videos into {job.part(world.rank)}", file=sys.stderr)
    torchrun = not args.part_only
    if torchrun:
        die_with_parent(os.getppid(), death_signal=False)  # torchrun's agent: see die_with_parent
    # rank 0 refused (another run holds the lock) ends the job: torchrun stops the ranks waiting to meet it
    with OutputLock(args.out) if merger else contextlib.nullcontext():
        with JobProgress(job, merger, f"iovqa score ({job.size} processes)"):
            with process_group(world) if torchrun else contextlib.nullcontext() as barrier:
                if barrier is not None:
                    barrier()  # no rank touches a file before rank 0 holds the lock
                stats = job.run_rank(world.rank, lambda: Scorer(settings), args.mode, args.batch_size,
                                     restart=args.restart, claimed=barrier)
            if not merger:
                print(f"{job.part(world.rank)}: {stats['scored']} scored, {stats['errors']} failed, "
                      f"{stats['skipped_done']} already done", file=sys.stderr)
                return 0  # failed videos are counted (and the exit status set) by the merging process
            job.wait()
        stats = job.merge()
    return _summary(args.out, stats, began, stats["score_s"])


def _summary(out: str, stats: dict, began: float, score_s: float) -> int:
    processes = stats.get("processes", 1)
    how = f"; {processes} processes" if processes > 1 else ""
    print(
        f"{out}: {stats['scored']} scored, {stats['errors']} failed, {stats['skipped_done']} already done "
        f"({time.time() - began:.1f}s, scoring {score_s:.1f}s{how})"
    )
    if stats.get("changed"):
        print(f"iovqa score: {stats['changed']} row(s) of {out} had been scored from another input (the video file "
              "or the text prompt changed since): scored again", file=sys.stderr)
    for warning in _prediction_warnings(out):
        print(f"iovqa score: warning: {warning}", file=sys.stderr)
    return 0 if stats["errors"] == 0 else 1


def _interrupted(out: str, rows: int, done: Optional[int] = None) -> int:
    done = _count_scored(out) if done is None else done
    print(f"\ninterrupted: {done} of {rows} videos done for {out}; re-run the same command to resume",
          file=sys.stderr)
    return 130


LOW_INTEGER_MASS = 0.5  # trained models hold > 0.9 on their kind of video (README): below, the expectation says little


def _prediction_warnings(path: str) -> list[str]:
    """What a prediction file holds that a person should know before trusting it."""
    import pandas as pd

    from .data.labels import NO_SCORE_REASONS

    table = pd.read_csv(path)
    warnings = []
    if "greedy_error" in table and table["greedy_error"].notna().any():
        kinds = table["greedy_error"].dropna().map(
            lambda r: next((kind for kind in NO_SCORE_REASONS if r.startswith(kind)), r))
        reasons = kinds.value_counts()
        counts = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
        warnings.append(f"{table['greedy_error'].notna().sum()} of {len(table)} greedy answers gave no MOS ({counts})")
    if "integer_mass" in table and (table["integer_mass"] < LOW_INTEGER_MASS).any():
        low = int((table["integer_mass"] < LOW_INTEGER_MASS).sum())
        warnings.append(f"{low} of {len(table)} videos: the model put under {LOW_INTEGER_MASS:.0%} of its probability "
                        "on valid scores (integer_mass); their expected score says little")
    return warnings


def _count_scored(path: str) -> int:
    import pandas as pd

    return int(pd.read_csv(path)["pred_mos"].notna().sum()) if os.path.isfile(path) else 0


def _labels(args: argparse.Namespace, data: str) -> tuple[str, str, str]:
    """(annotation path, video column, MOS column) of a labels argument: a dataset name or a file."""
    from .data.datasets import resolve_data

    recipe = _load_recipe(args.recipe)
    source = resolve_data(data, recipe, _plugin_config(recipe),
                          columns={"video": args.video_column, "mos": args.mos_column})
    return source.path, source.columns.video, source.columns.mos


def _dimension_columns(args: argparse.Namespace, pred_paths: list[str], mos_column: str) -> dict[str, str]:
    """{dimension: MOS column} of multi-dimension predictions, or {} for single-score predictions.

    The dimensions are those the file's ``.meta.json`` records (the scorer's and ``iovqa ensemble``'s), with
    the MOS columns their run named (a recipe's ``iovqa_dimension_columns`` renames them for other labels);
    a file without meta (another tool's) takes them from ``--recipe``.
    """
    from .data.dimensions import mos_columns
    from .score.prediction_file import recorded_dimensions

    config = _plugin_config(_load_recipe(args.recipe))
    recorded = {path: recorded_dimensions(path) or _unrecorded_dimensions(path, config) for path in pred_paths}
    if len({names for names, _ in recorded.values()}) > 1:
        shown = "; ".join(f"{path}: {list(names) or 'one score'}" for path, (names, _) in recorded.items())
        raise UserError(f"the prediction files score different quality dimensions ({shown})")
    names, columns = next(iter(recorded.values()))
    if not names:
        return {}
    found = mos_columns(names, {**columns, **(config.dimension_columns or {})}, mos_column)
    unknown = [name for name, column in found.items() if column is None]
    if unknown:
        raise UserError(f"no MOS column known for dimension(s) {unknown} of {pred_paths[0]}: give --recipe with "
                        "their iovqa_dimension_columns")
    return found


def _unrecorded_dimensions(path: str, config) -> tuple[tuple[str, ...], dict]:
    """The dimensions of a prediction file without ``.meta.json``: the recipe's; per-dimension columns without
    a recipe naming their dimensions are refused (their mean is no overall score)."""
    from .eval.predictions import dimension_columns_of

    if config.multi_dimension:
        return config.dimension_names, dict(config.dimension_columns or {})
    found = dimension_columns_of(path)
    if found:
        raise UserError(f"{path} has per-dimension columns ({', '.join(found)}) but no .meta.json saying which "
                        "quality dimensions they are: give --recipe of the run that scored it")
    return (), {}


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval.evaluation import evaluate, evaluate_dimensions

    if args.labels is None:
        if args.pairs is None:
            raise UserError("give --labels (an annotation file or dataset with the MOS), --pairs (a pairs file), "
                            "or both")
        if args.pairwise:
            raise UserError("--pairwise pairs the labelled videos: give --labels too (--pairs alone evaluates the "
                            "pairs file)")
        return _eval_pairs_only(args)
    from .eval.pairwise import is_comparison_predictions

    if is_comparison_predictions(args.pred):
        raise UserError(f"{args.pred} holds comparisons (P(A) per pair), not scores: evaluate it with --pairs only")
    labels, video_column, mos_column = _labels(args, args.labels)
    dimensions = _dimension_columns(args, [args.pred], mos_column)
    options = dict(label_format=args.label_format, labelled_only=args.labelled_only, score_column=args.score_column,
                   answered_only=args.answered_only, by=args.by, pairwise=args.pairwise,
                   tie_calibration=args.tie_calibration)
    if args.pairs is not None:  # checked before the metrics are written
        pairs = _pairs_report(args, list(dimensions))
    if dimensions:
        report = evaluate_dimensions(args.pred, labels, dimensions, video_column, report=args.report, **options)
        parts = list(report["dimensions"].items())
    else:
        report = evaluate(args.pred, labels, video_column, mos_column, report=args.report, plot=args.plot, **options)
        parts = [("", report)]
    if args.pairs is not None:
        report["pairs_file"] = pairs
        with open(report["report"], "w", encoding="utf-8") as handle:
            json.dump({k: v for k, v in report.items() if k not in ("report", "plot")}, handle, indent=2)
    print(json.dumps(report, indent=2))
    for name, part in parts:
        _eval_notes(f"{name}: " if name else "", part)
    if args.pairs is not None:
        _pairs_notes(pairs)
    return 0


def _pairs_report(args: argparse.Namespace, dimensions: list[str]) -> dict:
    """Pairwise accuracy of --pred on the --pairs file (per dimension for multi-dimension predictions)."""
    from dataclasses import fields

    from .eval.pairwise import PairColumns, comparison_report, is_comparison_predictions, pairs_report

    renamed = {}
    for item in args.pair_column or ():
        role, _, name = item.partition("=")
        if role not in {f.name for f in fields(PairColumns)} or not name.strip():
            raise UserError(f"--pair-column {item!r}: expected ROLE=NAME with ROLE one of "
                            f"{[f.name for f in fields(PairColumns)]}")
        renamed[role] = name.strip()
    if is_comparison_predictions(args.pred):  # P(A) per pair, from `iovqa score` on comparisons
        return {"pairs": args.pairs, **comparison_report(args.pred, args.pairs, PairColumns(**renamed),
                                                         args.tie_calibration)}
    score_columns = ({d: f"{args.score_column}_{d}" for d in dimensions} if dimensions
                     else {None: args.score_column})
    result = pairs_report(args.pred, args.pairs, score_columns, PairColumns(**renamed), args.label_format,
                          args.tie_calibration)
    return {"pairs": args.pairs, **result}


def _eval_pairs_only(args: argparse.Namespace) -> int:
    """``iovqa eval --pred P --pairs F`` without labels: the pairwise report only."""
    from .config import TAOBAO_MOS_COLUMN

    dimensions = _dimension_columns(args, [args.pred], args.mos_column or TAOBAO_MOS_COLUMN)
    report = {"predictions": args.pred, "score_column": args.score_column,
              "pairs_file": _pairs_report(args, list(dimensions))}
    stem = os.path.splitext(args.pred)[0] + ("" if args.score_column == "pred_mos" else f"_{args.score_column}")
    report["report"] = args.report or f"{stem}_pairwise.json"
    with open(report["report"], "w", encoding="utf-8") as handle:
        json.dump({k: v for k, v in report.items() if k != "report"}, handle, indent=2)
    print(json.dumps(report, indent=2))
    _pairs_notes(report["pairs_file"])
    return 0


def _pairs_notes(result: dict) -> None:
    from .eval.pairwise import summary

    if "dimensions" in result:
        for name, part in result["dimensions"].items():
            print(summary(f"{name}: {result['pairs']}: ", part), file=sys.stderr)
    else:
        print(summary(f"{result['pairs']}: ", result), file=sys.stderr)


def _eval_notes(prefix: str, result: dict) -> None:
    """What a person reading the metrics should see beside them (on stderr; stdout is the JSON report)."""
    from .eval.grouping import group_table

    for warning in result.get("warnings", ()):
        print(f"iovqa eval: warning: {prefix}{warning}", file=sys.stderr)
    unanswered = result.get("unanswered")
    if unanswered and unanswered["count"]:
        shown = "; ".join(f"{v}: {r}" for v, r in list(unanswered["videos"].items())[:5])
        print(f"iovqa eval: {prefix}{unanswered['count']} video(s) without {result['score_column']} left out "
              f"(reasons from {unanswered['column']}; all in the report): {shown}", file=sys.stderr)
    if "by" in result:
        print(f"{prefix}{result['score_column']} by {result['by']['column']}:\n{group_table(result['by'])}",
              file=sys.stderr)
    if "pairwise" in result:
        from .eval.pairwise import summary

        for kind, part in result["pairwise"].items():
            print(summary(f"{prefix}{kind.replace('_', ' ')}: ", part), file=sys.stderr)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .config import TAOBAO_MOS_COLUMN, TAOBAO_VIDEO_COLUMN
    from .eval.ensemble import load_config, members_from_files, run_ensemble, run_ensemble_dimensions

    if bool(args.config) == bool(args.pred):
        raise UserError("give either --config (a YAML of members) or --pred (prediction files)")
    members = args.config or members_from_files(args.pred, args.weights)
    fit_labels, video_column, mos_column = None, TAOBAO_VIDEO_COLUMN, TAOBAO_MOS_COLUMN
    if args.fit_labels:
        fit_labels, video_column, mos_column = _labels(args, args.fit_labels)
    paths = [m.predictions for m in (load_config(members) if isinstance(members, str) else members)]
    dimensions = _dimension_columns(args, paths, mos_column)
    if dimensions:  # one ensemble per quality dimension
        summary = run_ensemble_dimensions(members, args.out, dimensions, fit_labels=fit_labels,
                                          video_column=video_column, score_column=args.score_column)
        if fit_labels:
            from .eval.evaluation import evaluate_dimensions

            summary["metrics"] = evaluate_dimensions(args.out, fit_labels, dimensions, video_column,
                                                     labelled_only=True)["mean"]
        return _ensemble_report(args, summary)
    summary = run_ensemble(members, args.out, fit_labels=fit_labels, video_column=video_column,
                           mos_column=mos_column, score_column=args.score_column)
    if fit_labels:  # the ensemble's own metrics and scatter plot, as `iovqa eval` makes them
        from .eval.evaluation import evaluate

        summary["plot"] = evaluate(args.out, fit_labels, video_column, mos_column, labelled_only=True)["plot"]
    return _ensemble_report(args, summary)


def _ensemble_report(args: argparse.Namespace, summary: dict) -> int:
    report = args.report or f"{os.path.splitext(args.out)[0]}_report.json"
    with open(report, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    summary["report"] = report
    print(json.dumps(summary, indent=2))
    return 0


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
    from .config import help_text

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
    p.add_argument("--mode", choices=["expected", "greedy", "both", "head"], default="expected",
                   help="decoding: expected score over 10..50 (level-word runs: over the five level words, 1..5), "
                        "greedy answer, both, or the softmax-regression head. "
                        "Several quality dimensions: a column per dimension for each decoding (per_sample: each "
                        "dimension scored with its own prompt; joint: the answer's wording is written for the model and "
                        "each score is decoded after its name and the earlier scores as decoded: greedy's text, or "
                        "in expected mode (and where greedy gave none) the rounded expected score)")
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

    return (UserError, *input_errors(), MatchError, ResumeError, SettingsError, ParallelError, PartError,
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

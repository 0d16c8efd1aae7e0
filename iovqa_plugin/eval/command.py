"""The ``iovqa eval`` and ``iovqa ensemble`` commands: labels and prediction files resolved from the options, the
metrics and ensembles run, their reports written and the notes a person should see printed."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import UserError
from ..recipe import load_recipe_file, recipe_settings


def _labels(args: argparse.Namespace, data: str) -> tuple[str, str, str]:
    """(annotation path, video column, MOS column) of a labels argument: a dataset name or a file."""
    from ..data.datasets import resolve_data

    recipe = load_recipe_file(args.recipe)
    source = resolve_data(data, recipe, recipe_settings(recipe),
                          columns={"video": args.video_column, "mos": args.mos_column})
    return source.path, source.columns.video, source.columns.mos


def _dimension_columns(args: argparse.Namespace, pred_paths: list[str], mos_column: str) -> dict[str, str]:
    """{dimension: MOS column} of multi-dimension predictions, or {} for single-score predictions.

    The dimensions are those the file's ``.meta.json`` records (the scorer's and ``iovqa ensemble``'s), with
    the MOS columns their run named (a recipe's ``iovqa_dimension_columns`` renames them for other labels);
    a file without meta (another tool's) takes them from ``--recipe``.
    """
    from ..data.dimensions import mos_columns
    from ..score.prediction_file import recorded_dimensions

    iovqa_args = recipe_settings(load_recipe_file(args.recipe))
    recorded = {path: recorded_dimensions(path) or _unrecorded_dimensions(path, iovqa_args) for path in pred_paths}
    if len({names for names, _ in recorded.values()}) > 1:
        shown = "; ".join(f"{path}: {list(names) or 'one score'}" for path, (names, _) in recorded.items())
        raise UserError(f"the prediction files score different quality dimensions ({shown})")
    names, columns = next(iter(recorded.values()))
    if not names:
        return {}
    found = mos_columns(names, {**columns, **(iovqa_args.dimension_columns or {})}, mos_column)
    unknown = [name for name, column in found.items() if column is None]
    if unknown:
        raise UserError(f"no MOS column known for dimension(s) {unknown} of {pred_paths[0]}: give --recipe with "
                        "their iovqa_dimension_columns")
    return found


def _unrecorded_dimensions(path: str, iovqa_args) -> tuple[tuple[str, ...], dict]:
    """The dimensions of a prediction file without ``.meta.json``: the recipe's; per-dimension columns without
    a recipe naming their dimensions are refused (their mean is no overall score)."""
    from .predictions import dimension_columns_of

    if iovqa_args.multi_dimension:
        return iovqa_args.dimension_names, dict(iovqa_args.dimension_columns or {})
    found = dimension_columns_of(path)
    if found:
        raise UserError(f"{path} has per-dimension columns ({', '.join(found)}) but no .meta.json saying which "
                        "quality dimensions they are: give --recipe of the run that scored it")
    return (), {}


def eval_command(args: argparse.Namespace) -> int:
    """``iovqa eval``: metrics of predictions against labels and/or a pairs file."""
    from .evaluation import evaluate, evaluate_dimensions

    if args.labels is None:
        if args.pairs is None:
            raise UserError("give --labels (an annotation file or dataset with the MOS), --pairs (a pairs file), "
                            "or both")
        if args.pairwise:
            raise UserError("--pairwise pairs the labelled videos: give --labels too (--pairs alone evaluates the "
                            "pairs file)")
        return _eval_pairs_only(args)
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

    from .pairwise import PairColumns, pairs_report

    renamed = {}
    for item in args.pair_column or ():
        role, _, name = item.partition("=")
        if role not in {f.name for f in fields(PairColumns)} or not name.strip():
            raise UserError(f"--pair-column {item!r}: expected ROLE=NAME with ROLE one of "
                            f"{[f.name for f in fields(PairColumns)]}")
        renamed[role] = name.strip()
    score_columns = ({d: f"{args.score_column}_{d}" for d in dimensions} if dimensions
                     else {None: args.score_column})
    result = pairs_report(args.pred, args.pairs, score_columns, PairColumns(**renamed), args.label_format,
                          args.tie_calibration)
    return {"pairs": args.pairs, **result}


def _eval_pairs_only(args: argparse.Namespace) -> int:
    """``iovqa eval --pred P --pairs F`` without labels: the pairwise report only."""
    from ..config import TAOBAO_MOS_COLUMN

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
    from .pairwise import summary

    if "dimensions" in result:
        for name, part in result["dimensions"].items():
            print(summary(f"{name}: {result['pairs']}: ", part), file=sys.stderr)
    else:
        print(summary(f"{result['pairs']}: ", result), file=sys.stderr)


def _eval_notes(prefix: str, result: dict) -> None:
    """What a person reading the metrics should see beside them (on stderr; stdout is the JSON report)."""
    from .grouping import group_table

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
        from .pairwise import summary

        for kind, part in result["pairwise"].items():
            print(summary(f"{prefix}{kind.replace('_', ' ')}: ", part), file=sys.stderr)


def ensemble_command(args: argparse.Namespace) -> int:
    """``iovqa ensemble``: the weighted average of prediction files (one per quality dimension)."""
    from ..config import TAOBAO_MOS_COLUMN, TAOBAO_VIDEO_COLUMN
    from .ensemble import load_config, members_from_files, run_ensemble, run_ensemble_dimensions

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
            from .evaluation import evaluate_dimensions

            summary["metrics"] = evaluate_dimensions(args.out, fit_labels, dimensions, video_column,
                                                     labelled_only=True)["mean"]
        return _ensemble_report(args, summary)
    summary = run_ensemble(members, args.out, fit_labels=fit_labels, video_column=video_column,
                           mos_column=mos_column, score_column=args.score_column)
    if fit_labels:  # the ensemble's own metrics and scatter plot, as `iovqa eval` makes them
        from .evaluation import evaluate

        summary["plot"] = evaluate(args.out, fit_labels, video_column, mos_column, labelled_only=True)["plot"]
    return _ensemble_report(args, summary)


def _ensemble_report(args: argparse.Namespace, summary: dict) -> int:
    report = args.report or f"{os.path.splitext(args.out)[0]}_report.json"
    with open(report, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
    summary["report"] = report
    print(json.dumps(summary, indent=2))
    return 0

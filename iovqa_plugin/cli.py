"""The ``iovqa`` console command.

    iovqa train RECIPE.yaml [key=value ...]   train through LLaMA-Factory (same as llamafactory-cli train)
    iovqa prepare RECIPE.yaml [--workers N]   check the recipe's datasets and fill the frame cache
    iovqa demo [--work-dir work]              tiny model + demo data + `llamafactory-cli train` on the demo recipe
    iovqa build-tiny-model DIR                save the offline tiny Qwen2.5-VL
    iovqa demo-data DIR [--media-root DIR]    write the demo ladder (videos + CSV annotations)
    iovqa keys                                list the plugin's recipe keys
    iovqa score --recipe R.yaml --data D --out preds.csv [--mode expected|greedy|both]
    iovqa eval --pred preds.csv --labels annotations.csv [--report r.json] [--plot p.png]
    iovqa ensemble --config examples/ensemble_paper.yaml --out ens.csv [--fit-labels val.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

DEMO_RECIPE = os.path.join("examples", "iovqa_demo_cpu.yaml")


def cmd_train(args: argparse.Namespace) -> int:
    import iovqa_plugin

    iovqa_plugin.apply()
    from llamafactory.cli import main as llamafactory_main

    sys.argv = ["llamafactory-cli", "train", args.recipe, *args.overrides]
    llamafactory_main()
    return 0


def _load_recipe(path: str) -> dict:
    import yaml

    with open(path, encoding="utf-8") as handle:
        recipe = yaml.safe_load(handle)
    if not isinstance(recipe, dict):
        raise SystemExit(f"{path}: not a YAML mapping")
    return recipe


def _datasets(recipe: dict) -> list[str]:
    names = []
    for key in ("dataset", "eval_dataset"):
        value = recipe.get(key)
        if isinstance(value, str):
            names += [n.strip() for n in value.split(",") if n.strip()]
        elif isinstance(value, list):
            names += [str(n).strip() for n in value]
    return names


def _data_dirs(recipe: dict) -> tuple[str, str]:
    """The recipe's dataset_dir and media_dir (LLaMA-Factory's defaults)."""
    dataset_dir = recipe.get("dataset_dir", "data")
    return dataset_dir, recipe.get("media_dir") or dataset_dir


def _dataset_info(dataset_dir: str) -> dict:
    path = os.path.join(dataset_dir, "dataset_info.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _entry_columns(entry: dict, config):
    """The annotation columns of a dataset_info entry, as the formatter resolves them."""
    from .annotations import resolve_columns

    columns = entry.get("columns", {})
    given = "columns" in entry  # without `columns`, LLaMA-Factory's own defaults apply
    attr = SimpleNamespace(
        videos=columns.get("videos"),
        prompt=columns.get("prompt", None if given else "instruction"),
        response=columns.get("response", None if given else "output"),
    )
    return resolve_columns(attr, config)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Run the formatter's checks and frame extraction ahead of training."""
    from .annotations import AnnotationError, load_annotations, write_issue_report
    from .config import split_recipe

    recipe, config = split_recipe(_load_recipe(args.recipe))
    if config is None:
        raise SystemExit(f"{args.recipe}: the recipe has no iovqa_* key")
    if args.workers:
        config.frame_workers = args.workers
    dataset_dir, media_dir = _data_dirs(recipe)
    info = _dataset_info(dataset_dir)
    status = 0
    for name in _datasets(recipe):
        entry = info.get(name)
        if entry is None:
            raise SystemExit(f"dataset {name!r} is not in {dataset_dir}/dataset_info.json")
        if entry.get("formatting") != "iovqa":
            print(f"{name}: formatting is {entry.get('formatting', 'alpaca')!r}, not iovqa: skipped")
            continue
        path = os.path.join(dataset_dir, entry["file_name"])
        start = time.time()
        try:
            samples, issues, stats = load_annotations(path, _entry_columns(entry, config), config, media_dir)
        except AnnotationError as err:
            print(f"{name}: {err}", file=sys.stderr)
            status = 1
            continue
        print(
            f"{name}: {stats['rows']} rows, {stats['used']} ready, {stats['skipped_rows']} skipped "
            f"({time.time() - start:.1f}s); frames in {config.cache_dir}"
        )
        if issues:
            write_issue_report(issues, config.skip_report_path, sorted({i.file for i in issues}))
            print(f"{name}: skipped rows and reasons: {config.skip_report_path}")
    return status


def cmd_build_tiny_model(args: argparse.Namespace) -> int:
    from .tiny_model import build_tiny_model

    print(build_tiny_model(args.output_dir, seed=args.seed))
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from .demo import make_demo_dataset

    for split, path in make_demo_dataset(args.output_dir, media_root=args.media_root, seed=args.seed).items():
        print(f"{split}: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The quick start: tiny model, demo data, and the stock CLI on the demo recipe."""
    from .demo import make_demo_dataset
    from .tiny_model import build_tiny_model

    start = time.time()
    model_dir = os.path.join(args.work_dir, "tiny-qwen2.5-vl")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        print(f"building the tiny model in {model_dir}")
        build_tiny_model(model_dir)
    demo_dir = os.path.join("data_info", "demo")
    if not os.path.isfile(os.path.join(demo_dir, "test.csv")):
        print(f"writing the demo dataset in {demo_dir}")
        make_demo_dataset(demo_dir, media_root="data_info")
    cli = shutil.which("llamafactory-cli") or os.path.join(os.path.dirname(sys.executable), "llamafactory-cli")
    command = [cli, "train", args.recipe, *args.overrides]
    print("running:", " ".join(command), flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        return result.returncode
    recipe = _load_recipe(args.recipe)
    output_dir = recipe["output_dir"]
    for override in args.overrides:
        if override.startswith("output_dir="):
            output_dir = override.split("=", 1)[1]
    adapter = os.path.join(output_dir, "adapter_model.safetensors")
    results = os.path.join(output_dir, "all_results.json")
    print(f"\ntraining finished in {time.time() - start:.0f}s; adapter: {adapter} ({'ok' if os.path.isfile(adapter) else 'MISSING'})")
    if not os.path.isfile(adapter):
        return 1
    if os.path.isfile(results):
        with open(results, encoding="utf-8") as handle:
            print("training metrics:", json.dumps(json.load(handle), indent=None))
    score_start = time.time()
    summary = score_demo_test_split(args.recipe, output_dir, os.path.join(demo_dir, "test.csv"))
    print(f"\nheld-out test split scored in {time.time() - score_start:.0f}s (predictions: {summary['predictions']})")
    for mode, line in summary["modes"].items():
        print(f"  {mode:8s} {line}")
    print(f"  scatter plot: {summary['plot']}")
    print(f"demo finished in {time.time() - start:.0f}s")
    return 0


def score_demo_test_split(recipe: str, output_dir: str, test_csv: str) -> dict:
    """Score the demo's held-out split with both decoding modes; SRCC/PLCC of each."""
    import pandas as pd

    from .evaluation import evaluate
    from .scoring import Scorer, ScorerSettings, score_file

    predictions = os.path.join(output_dir, "test_predictions.csv")
    if os.path.exists(predictions):
        os.remove(predictions)  # a fresh adapter: do not resume an old run's rows
    scorer = Scorer(ScorerSettings.from_recipe(recipe))
    score_file(scorer, test_csv, predictions, "data_info", mode="both", progress=False)
    table = pd.read_csv(predictions)
    modes, plot = {}, None
    for mode, column in (("expected", "expected_mos"), ("greedy", "greedy_mos")):
        scored = table[column].notna().sum()
        if scored < len(table):
            modes[mode] = f"{len(table) - scored} of {len(table)} answers hold no number: not evaluated"
            continue
        path = os.path.join(output_dir, f"test_predictions_{mode}.csv")
        table.assign(pred_mos=table[column]).to_csv(path, index=False)
        report = evaluate(path, test_csv)
        modes[mode] = f"SRCC {report['srcc']:.3f}  PLCC {report['plcc']:.3f}  final {report['final']:.3f}  (n={report['n']})"
        plot = plot or report["plot"]
    return {"predictions": predictions, "modes": modes, "plot": plot}


def cmd_keys(args: argparse.Namespace) -> int:
    from .config import help_text

    print(help_text())
    return 0


def _resolve_data(data: str, recipe: dict, config) -> tuple[str, str, tuple[str, str]]:
    """(annotation file, media dir, (video column, prompt column)) for a path or a dataset_info name."""
    dataset_dir, media_dir = _data_dirs(recipe)
    entry = {} if os.path.isfile(data) else _dataset_info(dataset_dir).get(data)
    if entry is None:
        raise SystemExit(f"--data {data!r}: neither a file nor a dataset in {dataset_dir}/dataset_info.json")
    columns = _entry_columns(entry, config)
    path = os.path.join(dataset_dir, entry["file_name"]) if entry else data
    return path, media_dir, (columns.video, columns.prompt)


def cmd_score(args: argparse.Namespace) -> int:
    from .scoring import Scorer, ScorerSettings, score_file

    settings = ScorerSettings.from_recipe(args.recipe, model=args.model, adapter=args.adapter)
    annotations, media_dir, columns = _resolve_data(args.data, _load_recipe(args.recipe), settings.plugin)
    scorer = Scorer(settings)
    start = time.time()
    stats = score_file(scorer, annotations, args.out, args.media_dir or media_dir, mode=args.mode,
                       batch_size=args.batch_size, save_probabilities=args.save_probs, columns=columns)
    print(
        f"{args.out}: {stats['scored']} scored, {stats['errors']} failed, {stats['skipped_done']} already done "
        f"({time.time() - start:.1f}s)"
    )
    return 0 if stats["errors"] == 0 else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    report = evaluate(args.pred, args.labels, args.video_column, args.mos_column, report=args.report,
                      plot=args.plot, label_format=args.label_format, labelled_only=args.labelled_only)
    print(json.dumps(report, indent=2))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from .ensemble import run_ensemble

    summary = run_ensemble(args.config, args.out, fit_labels=args.fit_labels, video_column=args.video_column,
                           mos_column=args.mos_column)
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iovqa", description="IOVQA video quality fine-tuning for LLaMA-Factory")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a recipe through LLaMA-Factory (plugin applied)")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as llamafactory-cli accepts")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prepare", help="check a recipe's datasets and extract their frames into the cache")
    p.add_argument("recipe")
    p.add_argument("--workers", type=int, default=None, help="frame extraction processes (default: the recipe's)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("demo", help="run the quick-start demo on CPU")
    p.add_argument("--work-dir", default="work")
    p.add_argument("--recipe", default=DEMO_RECIPE)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("build-tiny-model", help="save the offline tiny Qwen2.5-VL")
    p.add_argument("output_dir")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_build_tiny_model)

    p = sub.add_parser("demo-data", help="write the demo quality ladder")
    p.add_argument("output_dir")
    p.add_argument("--media-root", default=None, help="folder video_name cells are relative to (default: output_dir)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("keys", help="list the plugin's recipe keys")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("score", help="score videos with a trained model")
    p.add_argument("--recipe", required=True, help="the training recipe (model, template, frames, prompt)")
    p.add_argument("--model", default=None, help="base model or merged export (default: the recipe's)")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (default: the recipe's output_dir); '' for none")
    p.add_argument("--data", required=True, help="annotation file, or a dataset name in the recipe's dataset_info.json")
    p.add_argument("--media-dir", default=None, help="folder video paths are relative to (default: the recipe's)")
    p.add_argument("--out", required=True, help="prediction CSV (re-running resumes it)")
    p.add_argument("--mode", choices=["expected", "greedy", "both", "head"], default="expected",
                   help="head: for models trained with iovqa_head: softmax_regression")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--save-probs", action="store_true", help="also write p_10..p_50")
    p.set_defaults(func=cmd_score)

    for name, helptext in (("eval", "SRCC/PLCC/final and more of predictions against labels"),
                           ("ensemble", "weighted average of prediction files")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--video-column", default="video_name")
        p.add_argument("--mos-column", default="Overall_MOS")
        if name == "eval":
            p.add_argument("--pred", required=True, help="prediction CSV, or LLaMA-Factory's generated_predictions.jsonl")
            p.add_argument("--labels", required=True, help="annotation file with the MOS")
            p.add_argument("--report", default=None, help="JSON report path (default: next to --pred)")
            p.add_argument("--plot", default=None, help="scatter plot PNG path (default: next to --pred)")
            p.add_argument("--label-format", default="integer", choices=["integer", "decimal"],
                           help="how to read text answers of generated_predictions.jsonl")
            p.add_argument("--labelled-only", action="store_true", help="leave out predictions without a label (reported)")
            p.set_defaults(func=cmd_eval)
        else:
            p.add_argument("--config", required=True, help="YAML with members: [{name, predictions, weight}]")
            p.add_argument("--out", required=True, help="ensemble prediction CSV")
            p.add_argument("--fit-labels", default=None, help="labelled split to fit the weights on")
            p.set_defaults(func=cmd_ensemble)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

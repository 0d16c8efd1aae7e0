"""The ``iovqa`` console command.

    iovqa train RECIPE.yaml [key=value ...]   train through LLaMA-Factory (same as llamafactory-cli train)
    iovqa prepare RECIPE.yaml [--workers N]   check the recipe's datasets and fill the frame cache
    iovqa demo [--work-dir work]              tiny model + demo data + `llamafactory-cli train` on the demo recipe
    iovqa build-tiny-model DIR                save the offline tiny Qwen2.5-VL
    iovqa demo-data DIR [--media-root DIR]    write the demo ladder (videos + CSV annotations)
    iovqa keys                                list the plugin's recipe keys
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


def cmd_prepare(args: argparse.Namespace) -> int:
    """Run the formatter's checks and frame extraction ahead of training."""
    from .annotations import AnnotationError, load_annotations, resolve_columns, write_issue_report
    from .config import split_recipe

    recipe, config = split_recipe(_load_recipe(args.recipe))
    if config is None:
        raise SystemExit(f"{args.recipe}: the recipe has no iovqa_* key")
    if args.workers:
        config.frame_workers = args.workers
    dataset_dir = recipe.get("dataset_dir", "data")
    media_dir = recipe.get("media_dir") or dataset_dir
    with open(os.path.join(dataset_dir, "dataset_info.json"), encoding="utf-8") as handle:
        info = json.load(handle)
    status = 0
    for name in _datasets(recipe):
        entry = info.get(name)
        if entry is None:
            raise SystemExit(f"dataset {name!r} is not in {dataset_dir}/dataset_info.json")
        if entry.get("formatting") != "iovqa":
            print(f"{name}: formatting is {entry.get('formatting', 'alpaca')!r}, not iovqa: skipped")
            continue
        columns = entry.get("columns", {})
        attr = SimpleNamespace(
            videos=columns.get("videos"),
            prompt=columns.get("prompt", "instruction" if "columns" not in entry else None),
            response=columns.get("response", "output" if "columns" not in entry else None),
        )
        path = os.path.join(dataset_dir, entry["file_name"])
        start = time.time()
        try:
            samples, issues, stats = load_annotations(path, resolve_columns(attr, config), config, media_dir)
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
    print(f"\ndemo finished in {time.time() - start:.0f}s; adapter: {adapter} ({'ok' if os.path.isfile(adapter) else 'MISSING'})")
    if os.path.isfile(results):
        with open(results, encoding="utf-8") as handle:
            print("metrics:", json.dumps(json.load(handle), indent=None))
    return 0 if os.path.isfile(adapter) else 1


def cmd_keys(args: argparse.Namespace) -> int:
    from .config import help_text

    print(help_text())
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""Run the benchmarks and write their numbers, commands and machine facts to a results file.

    python bench/run_all.py            # make bench:       bench/RESULTS.md (over an hour on 2 cores)
    python bench/run_all.py --quick    # make bench-quick: bench/RESULTS_quick.md (reduced versions, minutes)
    python bench/run_all.py learning   # re-run some sections; the file's other sections are kept

Each section is one script's printed output under the exact command that produced it, its wall
time and the date it ran. The machine facts head the file.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (title, full arguments, quick arguments)
SECTIONS = {
    "learning": ("Learning: the label ablation on the held-out ladder", ["bench/learning.py"],
                 ["bench/learning.py", "--steps", "6", "--seeds", "0", "--work", "work/bench_learning_quick"]),
    "learning_kinds": ("Learning: what the IOVQA arm sees of each degradation kind, 3 passes (450 steps), with its 2 "
                       "frames far apart and as one adjacent pair", ["bench/learning.py", "--arms", "iovqa",
                                                                     "iovqa_pairs", "--steps", "450", "--work",
                                                                     "work/bench_kinds"],
                       ["bench/learning.py", "--steps", "6", "--seeds", "0", "--arms", "iovqa", "iovqa_pairs",
                        "--work", "work/bench_learning_quick"]),
    "ladder_probes": ("Probe: what the tiny model can see of each degradation kind before training, and the "
                      "ceilings and loss floors that follow", ["bench/ladder_probes.py", "--work", "work/bench_kinds"],
                      ["bench/ladder_probes.py", "--work", "work/bench_learning_quick"]),
    "learning_pairs": ("Learning: comparison-only training and the fidelity loss next to the IOVQA arm, with "
                       "pairwise accuracy on held-out pairs", ["bench/learning.py", "--arms", "iovqa", "fidelity",
                                                              "comparison"],
                       ["bench/learning.py", "--steps", "6", "--seeds", "0", "--arms", "iovqa", "comparison",
                        "--work", "work/bench_learning_quick"]),
    "learning_images": ("Learning: the IOVQA arm after an image warm-up on the training videos' stills",
                        ["bench/learning.py", "--arms", "iovqa", "image_warmup"],
                        ["bench/learning.py", "--steps", "6", "--warmup-steps", "2", "--seeds", "0", "--arms", "iovqa",
                         "image_warmup", "--work", "work/bench_learning_quick"]),
    "learning_grpo": ("Learning: answer-only GRPO after the IOVQA arm and from the untrained model",
                      ["bench/learning.py", "--arms", "iovqa", "grpo", "grpo_fidelity", "grpo_scratch"],
                      ["bench/learning.py", "--steps", "6", "--rl-steps", "2", "--seeds", "0", "--arms", "iovqa", "grpo",
                       "grpo_fidelity", "grpo_scratch", "--work", "work/bench_learning_quick"]),
    "pair_probe": ("Probe: what the tiny model gets of a comparison sample (why the comparison arm learns nothing)",
                   ["bench/pair_probe.py", "--pairs", "200"],
                   ["bench/pair_probe.py", "--pairs", "16", "--work", "work/bench_learning_quick"]),
    "overhead": ("Speed and memory: labelled-position logits vs all-position logits vs stock LLaMA-Factory; "
                 "cached frames vs mp4 decoding at 720x1280", ["bench/overhead.py"],
                 ["bench/overhead.py", "--steps", "5", "--repeats", "1", "--hd-clips", "4"]),
    "labelled_logits": ("Speed: one training step, all-position vs labelled-position logits",
                        ["bench/labelled_logits.py", "--repeats", "5"], ["bench/labelled_logits.py", "--repeats", "1"]),
    "scoring": ("Speed: expected vs greedy scoring", ["bench/scoring.py"], ["bench/scoring.py", "--repeats", "1"]),
    "predict": ("Speed: the scorer vs LLaMA-Factory's do_predict", ["bench/predict.py"],
                ["bench/predict.py", "--repeats", "1"]),
    "score_parallel": ("Speed: data-parallel scoring, 1 vs 2 processes",
                       ["bench/score_parallel.py", "--videos", "80", "--repeats", "3"],
                       ["bench/score_parallel.py", "--videos", "16", "--repeats", "1",
                        "--work", "work/bench_score_parallel_quick"]),
    "startup": ("Speed: Python start-up with the plugin installed", ["bench/startup.py"],
                ["bench/startup.py", "--runs", "5"]),
    "head_params": ("Size: trainable parameters of the head variant", ["bench/head_params.py"], ["bench/head_params.py"]),
    "grpo_rollouts": ("Speed: GRPO answer-only rollouts, exact distribution vs generate",
                      ["bench/grpo_rollouts.py", "--repeats", "5"], ["bench/grpo_rollouts.py", "--repeats", "1"]),
}
MARK = "<!-- section: {} -->"


def machine_facts() -> str:
    import torch
    import transformers
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        names = re.findall(r"model name\s*:\s*(.*)", open("/proc/cpuinfo", encoding="utf-8").read())
        cpu = names[0] if names else cpu
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    return (f"Machine: {cpu}, {len(os.sched_getaffinity(0))} usable cores{memory}, no GPU used; "
            f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"llamafactory {version('llamafactory')}; commit {commit.strip() or 'unknown'} (plus uncommitted changes, if any).")


def run_section(name: str, quick: bool, override: list[str] | None = None) -> str:
    title, full, reduced = SECTIONS[name]
    arguments = override or (reduced if quick else full)
    command = ["python", *arguments]
    print(f"[bench] {' '.join(command)}", flush=True)
    start = time.time()
    env = dict(os.environ, LLAMAFACTORY_VERBOSITY="WARN")  # keep LLaMA-Factory's info lines out of the tables
    result = subprocess.run([sys.executable, *arguments], cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.time() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    print(result.stdout, flush=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    output = result.stdout.strip()
    if "|---" not in output:  # plain columns of text: keep their layout
        output = f"```\n{output}\n```"
    return f"{MARK.format(name)}\n## {title}\n\n`{' '.join(command)}` ({stamp}, {seconds:.0f} s)\n\n{output}\n"


def read_sections(path: str) -> dict[str, str]:
    if not os.path.isfile(path):
        return {}
    text = open(path, encoding="utf-8").read()
    parts = re.split(r"(?=<!-- section: \w+ -->)", text)
    return {re.match(r"<!-- section: (\w+) -->", p).group(1): p.rstrip() + "\n" for p in parts if p.startswith("<!--")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sections", nargs="*", choices=[[], *SECTIONS], default=[])
    parser.add_argument("--quick", action="store_true", help="reduced versions (make bench-quick)")
    parser.add_argument("--args", default=None,
                        help="the command to run instead of the section's default, e.g. \"bench/learning.py --seeds 0\" "
                        "(one section only); the section records it")
    args = parser.parse_args()
    if args.args and len(args.sections) != 1:
        parser.error("--args needs exactly one section")
    path = os.path.join(REPO, "bench", "RESULTS_quick.md" if args.quick else "RESULTS.md")
    sections = read_sections(path)
    for name in args.sections or list(SECTIONS):
        sections[name] = run_section(name, args.quick, args.args.split() if args.args else None)
        write(path, sections, args.quick)  # after every section: a long run keeps what it finished
    print(f"[bench] wrote {path}")


def write(path: str, sections: dict[str, str], quick: bool) -> None:
    target = "make bench-quick" if quick else "make bench"
    header = (f"# Benchmark results{' (quick, reduced versions)' if quick else ''}\n\n"
              f"Written by `{target}` (`python bench/run_all.py{' --quick' if quick else ''}`); "
              f"each section names the command that printed it.\n\n{machine_facts()}\n")
    body = "\n".join(sections[name] for name in SECTIONS if name in sections)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header + "\n" + body)


if __name__ == "__main__":
    main()

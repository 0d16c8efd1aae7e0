"""The ``iovqa score`` command: one process, the ``--nproc`` launcher, or one rank of a data-parallel job, and the
summary each prints.

The launcher path (``--nproc N``) imports no torch: the workers it starts load the model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional

from ..errors import UserError
from ..recipe import load_recipe_file
from .modes import get_scoring_mode


def score_command(args: argparse.Namespace) -> int:
    """``iovqa score``: one process, the ``--nproc`` launcher, or one rank of a data-parallel job."""
    from ..data.datasets import resolve_data, scoring_rows
    from ..data.layouts import LAYOUTS
    from .launch import local_process_count
    from .parallel import ScoringJob, World
    from .scoring_loop import run_identity
    from .settings import ScorerSettings

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
        from .launch import PARENT_VARIABLE, die_with_parent, keep_lock_to_self

        die_with_parent(int(os.environ.get(PARENT_VARIABLE) or os.getppid()))
        keep_lock_to_self()
    settings = ScorerSettings.from_recipe(args.recipe, model=args.model, adapter=args.adapter)
    settings.sampling = sampling_options(args, settings.iovqa_args)
    if args.frame_cache_dir:  # where frames are cached changes no score
        settings.iovqa_args.frame_cache_dir = args.frame_cache_dir
    source = resolve_data(args.data, load_recipe_file(args.recipe), settings.iovqa_args, media_dir=args.media_dir,
                          columns={"video": args.video_column, "prompt": args.prompt_column}, layout=args.layout)
    if source.formatting in LAYOUTS and LAYOUTS[source.formatting].comparison:
        return _score_comparisons(args, settings, source, max(nproc, world.size), began)
    rows = scoring_rows(source)
    identity = run_identity(settings, args.mode, score_options(args.mode, settings.sampling))
    processes = max(nproc, world.size)
    job = ScoringJob(args.out, rows, processes, identity, args.save_probs)
    if not args.restart:  # what resuming would refuse, before the model loads and before anything is written
        job.check_resume(own_parts=processes == 1 or nproc > 1)
    if world.rank == 0 and not args.part_only:
        how = f"; {processes} processes" if processes > 1 else ""
        print(f"iovqa score: {len(rows)} videos of {source.name}; model {settings.model}; {settings.note}{how}",
              file=sys.stderr)
        for warning in settings.warnings + mode_hints(settings.iovqa_args, args.mode):
            print(f"iovqa score: warning: {warning}", file=sys.stderr)
    if processes == 1:
        return _score_single(args, settings, rows, began)
    if nproc > 1:
        return _score_launch(args, job, began)
    return _score_rank(args, job, world, settings, began)


def _score_comparisons(args: argparse.Namespace, settings, source, processes: int, began: float) -> int:
    """Comparison data: P(A) and the greedy choice of every pair, in one process."""
    from tqdm import tqdm

    from ..data.layouts import LAYOUTS
    from ..data.pair_samples import load_comparisons
    from .comparisons import ComparisonScorer, write_comparisons
    from .scorer import Scorer

    if processes > 1:
        raise UserError("comparisons are scored in one process: leave out --nproc and torchrun")
    layout = LAYOUTS[source.formatting]
    samples, issues, stats = load_comparisons(layout.reads, source.path, settings.iovqa_args, source.media_dir,
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


def mode_hints(iovqa_args, mode: str) -> list[str]:
    """What a person choosing ``mode`` for this run's model should know."""
    if iovqa_args.head_on and not get_scoring_mode(mode).head:
        return [f"this model was trained with iovqa_head: {iovqa_args.head}: --mode head scores with the head it "
                f"trained; --mode {mode} reads the language model's answer instead"]
    return []


def score_options(mode: str = "expected", sampling=None) -> dict:
    """Decoding options beyond the mode that change a prediction file's content (recorded in its meta);
    ``sampling``: the sampled mode's (a :class:`~.modes.Sampling`), recorded in that mode."""
    from dataclasses import asdict

    from .modes import MAX_NEW_TOKENS

    options = {"max_new_tokens": MAX_NEW_TOKENS}
    if get_scoring_mode(mode).sampled:
        options["sampling"] = asdict(sampling)
    return options


SAMPLING_FLAGS = ("samples", "temperature", "seed")


def sampling_options(args: argparse.Namespace, iovqa_args):
    """The sampled mode's options from the command line (refused with another mode), checked before loading."""
    from .modes import Sampling, check_mode

    given = {name: getattr(args, name, None) for name in SAMPLING_FLAGS}
    given = {name: value for name, value in given.items() if value is not None}
    if not get_scoring_mode(args.mode).sampled:
        if given:
            raise UserError(f"{', '.join('--' + n for n in given)}: options of --mode sampled (this run: --mode "
                            f"{args.mode})")
        return Sampling()
    try:
        check_mode(args.mode, iovqa_args)
        return Sampling(**given)
    except ValueError as err:
        raise UserError(str(err)) from None


def _score_single(args: argparse.Namespace, settings, rows: list, began: float) -> int:
    """One process (the default): score into --out directly, taking over rows of an earlier parallel run."""
    from .output_lock import OutputLock
    from .parallel import part_files, remove_part_files
    from .scoring_loop import score_rows_into
    from .scorer import Scorer

    with OutputLock(args.out):
        if args.restart:
            remove_part_files(args.out)
        parts = [path for path, _, _ in part_files(args.out)]
        scorer = Scorer(settings)
        start = time.time()
        try:
            stats = score_rows_into(scorer, rows, args.out, mode=args.mode, batch_size=args.batch_size,
                                    save_probabilities=args.save_probs, restart=args.restart,
                                    extra_identity=score_options(args.mode, settings.sampling),
                                    sources=parts)
        except KeyboardInterrupt:
            return _interrupted(args.out, len(rows))
        remove_part_files(args.out)  # their rows are in --out now
    return _summary(args.out, stats, began, time.time() - start)


def _score_launch(args: argparse.Namespace, job, began: float) -> int:
    """``--nproc N``: start N workers of this command, one progress bar, merge their parts."""
    from .launch import RankFailed, run_local
    from .output_lock import OutputLock

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

    from .launch import die_with_parent, process_group, rank_device
    from .output_lock import OutputLock
    from .parallel import JobProgress
    from .scorer import Scorer

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

    from ..data.labels import NO_SCORE_REASONS

    table = pd.read_csv(path)
    warnings = []
    if "greedy_error" in table and table["greedy_error"].notna().any():
        kinds = table["greedy_error"].dropna().map(
            lambda r: next((kind for kind in NO_SCORE_REASONS if r.startswith(kind)), r))
        reasons = kinds.value_counts()
        counts = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
        warnings.append(f"{table['greedy_error'].notna().sum()} of {len(table)} greedy answers gave no MOS ({counts})")
    if "sampled_unparseable" in table and table["sampled_unparseable"].fillna(0).gt(0).any():
        unread, drawn = table["sampled_unparseable"].sum(), (table["sampled_unparseable"] + table["sampled_parsed"]).sum()
        warnings.append(f"{int(unread)} of {int(drawn)} sampled answers gave no MOS (left out of each video's mean; "
                        "sampled_unparseable per video)")
    if "integer_mass" in table and (table["integer_mass"] < LOW_INTEGER_MASS).any():
        low = int((table["integer_mass"] < LOW_INTEGER_MASS).sum())
        warnings.append(f"{low} of {len(table)} videos: the model put under {LOW_INTEGER_MASS:.0%} of its probability "
                        "on valid scores (integer_mass); their expected score says little")
    return warnings


def _count_scored(path: str) -> int:
    import pandas as pd

    return int(pd.read_csv(path)["pred_mos"].notna().sum()) if os.path.isfile(path) else 0

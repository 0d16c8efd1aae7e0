"""Data-parallel scoring: shares, part files, resuming across kills and process counts, the merged file."""

import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from conftest import BIN, REPO, base_recipe, write_recipe

NUMERIC = ["pred_mos", "greedy_mos", "expected_mos", "expected_std", "integer_mass"]


# ---------------------------------------------------------------- pure functions
def test_shares_are_disjoint_balanced_and_cover_every_row():
    from iovqa_plugin.score.parallel import share

    rows = [(f"v{i}", f"p{i}", "x") for i in range(7)]
    for size in range(1, 10):
        shares = [share(rows, rank, size) for rank in range(size)]
        assert sorted(r for s in shares for r in s) == sorted(rows)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert share(rows, 1, 3) == [rows[1], rows[4]] and share(rows, 8, 9) == []


def test_world_from_the_launcher_environment():
    from iovqa_plugin.score.parallel import ParallelError, World

    assert World.from_env({}) == World(0, 1, 0, 1)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert World.from_env(env) == World(3, 4, 1, 2)
    with pytest.raises(ParallelError, match="RANK=4 WORLD_SIZE=4"):
        World.from_env(dict(env, RANK="4"))


def test_a_row_cut_short_by_a_kill_is_dropped_and_a_damaged_file_refused(tmp_path):
    from iovqa_plugin.score.prediction_file import DamagedFile, read_records

    path = tmp_path / "p.csv"
    path.write_text('video,pred_mos,error\na.mp4,3.25,\n"b,1.mp4",2.5,"x\ny"\nc.mp4,3.1')
    header, body = read_records(str(path))
    assert header == ["video", "pred_mos", "error"] and body == [["a.mp4", "3.25", ""], ["b,1.mp4", "2.5", "x\ny"]]
    path.write_text("video,pred_mos,error\na.mp4,3.25\nb.mp4,2.5,\n")
    with pytest.raises(DamagedFile, match="row 1 has 2 fields, the header 3"):
        read_records(str(path))


# ---------------------------------------------------------------- ranks in this process
@pytest.fixture(scope="module")
def rows(demo_dir):
    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv"))
    return [(v, os.path.join(demo_dir, v), p) for v, p in zip(table["video_name"], table["Prompt"])]


@pytest.fixture(scope="module")
def reference(scorer, rows, tmp_path_factory):
    """The single-process prediction file of the demo test split."""
    from iovqa_plugin.score.scoring_loop import score_rows_into

    out = str(tmp_path_factory.mktemp("reference") / "preds.csv")
    stats = score_rows_into(scorer, rows, out, "expected", 3, save_probabilities=False, progress=False)
    assert stats["scored"] == 10
    return out


def assert_same_predictions(path, reference):
    """Same rows, order and text columns; numbers within 1e-6 (batches differ, so float rounding may)."""
    got, want = pd.read_csv(path), pd.read_csv(reference)
    assert got["video"].tolist() == want["video"].tolist() and list(got.columns) == list(want.columns)
    for column in got.columns:
        if column in NUMERIC or column.startswith("p_"):
            assert ((got[column] - want[column]).abs().fillna(0) <= 1e-6).all(), column
            assert (got[column].isna() == want[column].isna()).all(), column
        else:
            assert got[column].fillna("").tolist() == want[column].fillna("").tolist(), column


def job_for(scorer, rows, out, size, mode="expected"):
    from iovqa_plugin.score.parallel import ScoringJob
    from iovqa_plugin.score.scoring_loop import run_identity

    return ScoringJob(str(out), rows, size, run_identity(scorer.settings, mode), save_probabilities=False)


def run_ranks(job, scorer, ranks=None, mode="expected"):
    return [job.run_rank(rank, lambda: scorer, mode, batch_size=2) for rank in (ranks or range(job.size))]


@pytest.mark.parametrize("size", [3, pytest.param(4, marks=pytest.mark.slow), pytest.param(12, marks=pytest.mark.slow)])
def test_uneven_shares_and_more_processes_than_rows_merge_to_the_single_process_file(scorer, rows, reference,
                                                                                      tmp_path, size):
    from iovqa_plugin.score.prediction_file import meta_path

    job = job_for(scorer, rows, tmp_path / "preds.csv", size)
    stats = run_ranks(job, scorer)
    assert [s["rows"] for s in stats] == [len(job.share(r)) for r in range(size)]
    assert sum(s["scored"] for s in stats) == 10 and job.progress() == 10
    merged = job.merge()
    assert merged["scored"] == 10 and merged["processes"] == size
    assert_same_predictions(job.out, reference)
    assert open(meta_path(job.out)).read() == open(meta_path(reference)).read()
    assert sorted(os.listdir(tmp_path)) == ["preds.csv", "preds.csv.meta.json"]  # parts removed


@pytest.mark.slow
def test_another_process_count_resumes_from_the_parts_left_behind(scorer, rows, reference, tmp_path):
    out = tmp_path / "preds.csv"
    three = job_for(scorer, rows, out, 3)
    run_ranks(three, scorer, ranks=[1])  # a 3-process run of which only rank 1 finished: rows 1, 4, 7
    two = job_for(scorer, rows, out, 2)
    stats = run_ranks(two, scorer)
    assert [(s["skipped_done"], s["scored"]) for s in stats] == [(1, 4), (2, 3)]  # 4 of rank 0, 1 and 7 of rank 1
    two.merge()
    assert_same_predictions(str(out), reference)
    assert not [f for f in os.listdir(tmp_path) if ".part-" in f]  # the 3-process part is gone too

    again = job_for(scorer, rows, out, 4)  # a finished file: nothing left to score, no model needed
    stats = [again.run_rank(r, lambda: pytest.fail("model loaded"), "expected", 2) for r in range(4)]
    assert sum(s["skipped_done"] for s in stats) == 10 and again.merge()["scored"] == 0
    assert_same_predictions(str(out), reference)


@pytest.mark.slow
def test_a_damaged_or_changed_part_is_scored_again_never_merged(scorer, rows, reference, tmp_path):
    from iovqa_plugin.score.parallel import PartError

    job = job_for(scorer, rows, tmp_path / "preds.csv", 2)
    run_ranks(job, scorer)
    part = job.part(1)
    lines = open(part).read().splitlines(keepends=True)
    lines[1] = lines[1].replace(",", ",9", 1)  # a finished part changed afterwards (a score 2.9... -> 92.9...)
    open(part, "w").write("".join(lines))
    with pytest.raises(PartError, match="changed after its rank finished it"):
        job.merge()
    assert not os.path.exists(part) and not os.path.exists(job.out)
    assert run_ranks(job, scorer, ranks=[1])[0]["scored"] == 5  # re-run: its whole share again
    lines = open(job.part(0)).read().splitlines(keepends=True)
    open(job.part(0), "w").write("".join(lines[:3]) + lines[3][:20])  # rank 0 killed mid-row: 2 rows + a torn one
    os.remove(job.marker(0))
    stats = run_ranks(job, scorer, ranks=[0])[0]
    assert (stats["skipped_done"], stats["scored"]) == (2, 3)
    job.merge()
    assert_same_predictions(job.out, reference)

    assert run_ranks(job, scorer, ranks=[0])[0]["skipped_done"] == 5  # a new part, taken over from the file
    open(job.part(0) + ".meta.json", "w").write("{")  # unreadable meta: no way to trust the part
    stats = run_ranks(job, scorer, ranks=[0])[0]
    assert (stats["skipped_done"], stats["scored"]) == (5, 0)  # redone from the merged file, nothing rescored


def test_a_failing_video_is_an_error_row_and_is_tried_again(scorer, rows, tmp_path):
    broken = rows[:3] + [("missing.mp4", str(tmp_path / "missing.mp4"), "x")]
    job = job_for(scorer, broken, tmp_path / "preds.csv", 2)
    run_ranks(job, scorer)
    merged = job.merge()
    assert (merged["scored"], merged["errors"], merged["skipped_done"]) == (3, 1, 0)
    table = pd.read_csv(job.out)
    assert table["video"].tolist() == [row[0] for row in broken]
    assert table["pred_mos"].isna().tolist() == [False, False, False, True] and "missing.mp4" in table["error"][3]
    run_ranks(job, scorer)
    merged = job.merge()
    assert (merged["scored"], merged["errors"], merged["skipped_done"]) == (0, 1, 3)  # only the failed one again


@pytest.mark.slow
def test_parts_scored_from_another_input_are_scored_again(scorer, rows, tmp_path):
    """Rewritten prompts: neither a part of the same share, nor one of another process count, gives its rows;
    a merged file holding videos outside the input is refused before any part is written."""
    from iovqa_plugin.score.prediction_file import ResumeError
    from iovqa_plugin.score.scoring_loop import score_rows_into

    out = tmp_path / "preds.csv"
    run_ranks(job_for(scorer, rows[:4], out, 3), scorer, ranks=[1])  # row 1, old prompt
    run_ranks(job_for(scorer, rows[:4], out, 2), scorer, ranks=[0])  # rows 0 and 2, old prompts
    changed = [(video, path, "a blurry " + prompt) for video, path, prompt in rows[:4]]
    job = job_for(scorer, changed, out, 2)
    stats = run_ranks(job, scorer)
    assert [(s["skipped_done"], s["scored"], s["changed"]) for s in stats] == [(0, 2, 2), (0, 2, 0)]
    assert job.merge()["changed"] == 2
    fresh = str(tmp_path / "fresh.csv")
    score_rows_into(scorer, changed, fresh, "expected", 2, save_probabilities=False, progress=False)
    assert_same_predictions(str(out), fresh)
    with pytest.raises(ResumeError, match=r"holds 2 scored video\(s\) that are not in this input"):
        run_ranks(job_for(scorer, changed[:2], out, 2), scorer)
    assert sorted(os.listdir(tmp_path)) == ["fresh.csv", "fresh.csv.meta.json", "preds.csv", "preds.csv.meta.json"]


def test_parts_of_a_different_run_are_refused(scorer, rows, tmp_path):
    from iovqa_plugin.score.prediction_file import ResumeError

    out = tmp_path / "preds.csv"
    run_ranks(job_for(scorer, rows[:4], out, 2, mode="expected"), scorer, ranks=[0])
    marker = job_for(scorer, rows[:4], out, 2).marker(0)
    with pytest.raises(ResumeError, match="mode: file has 'expected', this run has 'greedy'"):
        run_ranks(job_for(scorer, rows[:4], out, 2, mode="greedy"), scorer, ranks=[0], mode="greedy")
    assert os.path.exists(marker)  # a refused run leaves the other run's files as they were
    with pytest.raises(ResumeError, match="mode"):  # another process count reads it too
        run_ranks(job_for(scorer, rows[:4], out, 3, mode="greedy"), scorer, ranks=[0], mode="greedy")


# ---------------------------------------------------------------- the command, in several processes
@pytest.fixture(scope="module")
def recipe(tiny_model, demo_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel_cli")
    return write_recipe(tmp / "r.yaml", base_recipe(tiny_model, demo_dir, str(tmp / "none")))


def environment(**extra):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               LLAMAFACTORY_VERBOSITY="WARN")
    for key in ("FORCE_TORCHRUN", "NPROC_PER_NODE", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    env.update(extra)
    return env


def score_command(recipe, out, *options, data="demo_test"):
    return ["score", "--recipe", recipe, "--adapter", "", "--data", data, "--out", str(out), *options]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(recipe, tmp_path, capsys):
    from iovqa_plugin.cli import main

    single = tmp_path / "single.csv"
    assert main(score_command(recipe, single, "--mode", "both", "--batch-size", "3")) == 0
    capsys.readouterr()
    out = tmp_path / "preds.csv"
    result = subprocess.run(
        [os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
         os.path.join(BIN, "iovqa"), *score_command(recipe, out, "--mode", "both", "--batch-size", "3")],
        cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "10 scored, 0 failed, 0 already done" in result.stdout and "2 processes" in result.stdout
    assert_same_predictions(str(out), str(single))
    assert open(f"{out}.meta.json").read() == open(f"{single}.meta.json").read()
    assert sorted(os.listdir(tmp_path)) == ["preds.csv", "preds.csv.meta.json", "single.csv", "single.csv.meta.json"]


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def rank_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as handle:
        env = dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item)
    return int(env[b"RANK"])


def data_rows(path):
    from iovqa_plugin.score.prediction_file import read_records

    return len(read_records(path)[1]) if os.path.exists(path) else 0


@pytest.mark.slow
def test_a_killed_rank_fails_the_command_and_the_same_command_completes(tiny_model, demo_dir, reference,
                                                                      tmp_path):
    # a frame cache of its own: frames are extracted as videos are scored, so the kill lands mid-share
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, str(tmp_path / "none"),
                                                           iovqa_frame_cache_dir=str(tmp_path / "frames")))
    out = tmp_path / "preds.csv"
    command = [os.path.join(BIN, "iovqa"), *score_command(recipe, out, "--nproc", "2", "--batch-size", "1")]
    parent = subprocess.Popen(command, cwd=REPO, env=environment(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    part = f"{out}.part-1-of-2.csv"
    deadline = time.time() + 300
    while data_rows(part) < 1 and parent.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim = [pid for pid in children(parent.pid) if rank_of(pid) == 1]
    os.kill(victim[0], signal.SIGKILL)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 1
    assert f"rank 1 of 2 was killed by SIGKILL before finishing its share; its log: {out}.part-1-of-2.log" in stderr
    assert not os.path.exists(out) and not os.path.exists(f"{part}.done.json")
    done = data_rows(f"{out}.part-0-of-2.csv") + data_rows(part)
    assert 1 <= done < 10

    result = subprocess.run(command, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{10 - done} scored, 0 failed, {done} already done" in result.stdout  # each video scored once
    assert_same_predictions(str(out), reference)
    assert sorted(os.listdir(tmp_path)) == ["frames", "preds.csv", "preds.csv.meta.json", "r.yaml"]


@pytest.mark.slow
def test_more_processes_than_rows_from_the_command(recipe, demo_dir, reference, tmp_path):
    from iovqa_plugin.cli import main

    table = pd.read_csv(os.path.join(demo_dir, "demo", "test.csv")).iloc[[2, 7]]
    table["video_name"] = [os.path.join(demo_dir, v) for v in table["video_name"]]
    annotations = tmp_path / "two.csv"
    table.to_csv(annotations, index=False)
    out = tmp_path / "preds.csv"
    assert main(score_command(recipe, out, "--nproc", "3", "--batch-size", "2", data=str(annotations))) == 0
    got = pd.read_csv(out)
    want = pd.read_csv(reference).iloc[[2, 7]]
    assert got["video"].tolist() == table["video_name"].tolist()
    assert (got["pred_mos"].to_numpy() - want["pred_mos"].to_numpy()).__abs__().max() <= 1e-6
    assert not [f for f in os.listdir(tmp_path) if ".part-" in f]


# ---------------------------------------------------------------- one run per output, workers die with the launcher
@pytest.mark.slow
def test_a_part_holding_a_video_twice_merges_to_its_newest_row(scorer, rows, reference, tmp_path):
    job = job_for(scorer, rows, tmp_path / "preds.csv", 2)
    stats = run_ranks(job, scorer)
    part = job.part(0)
    lines = open(part).read().splitlines(keepends=True)
    video = lines[1].split(",", 1)[0]
    newer = f"{video},4.999" + lines[1][len(video) + len(lines[1].split(",")[1]) + 1:]
    open(part, "a").write(newer)  # a row written again later (e.g. by a worker of an earlier run)
    job._mark_finished(0, stats[0])
    job.merge()
    table = pd.read_csv(job.out)
    assert table["video"].tolist() == [row[0] for row in rows]  # each video once, in input order
    assert table.loc[table["video"] == video, "pred_mos"].tolist() == [4.999]  # the newest row kept


def process_gone(pid):
    """Every thread of ``pid`` has ended. A killed process's main thread shows as a zombie while its other
    threads (torch's) may still be exiting, and those still hold its descriptors, the output lock among them."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return True
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    return False
        except FileNotFoundError:  # this thread is gone
            pass
    return True


@pytest.mark.slow
def test_killing_the_launcher_ends_its_workers_and_the_rerun_scores_each_video_once(tiny_model, demo_dir,
                                                                                    reference, tmp_path, capsys):
    from iovqa_plugin.cli import main

    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, str(tmp_path / "none"),
                                                           iovqa_frame_cache_dir=str(tmp_path / "frames")))
    out = tmp_path / "preds.csv"
    parent = subprocess.Popen([os.path.join(BIN, "iovqa"), *score_command(recipe, out, "--nproc", "2",
                                                                          "--batch-size", "1")],
                              cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = [f"{out}.part-{rank}-of-2.csv" for rank in (0, 1)]
    deadline = time.time() + 300
    while sum(map(data_rows, parts)) < 1 and parent.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = children(parent.pid)
    assert len(workers) == 2
    os.kill(parent.pid, signal.SIGKILL)  # mid-share: the workers are scoring
    parent.wait()
    deadline = time.time() + 30
    while not all(map(process_gone, workers)) and time.time() < deadline:
        time.sleep(0.1)
    assert all(map(process_gone, workers))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".done.json")]  # no worker went on to finish
    done = sum(map(data_rows, parts))
    assert 1 <= done < 10

    assert main(score_command(recipe, out)) == 0  # resumes what the workers wrote
    assert f"{10 - done} scored, 0 failed, {done} already done" in capsys.readouterr().out
    assert_same_predictions(str(out), reference)
    assert sorted(os.listdir(tmp_path)) == ["frames", "preds.csv", "preds.csv.meta.json", "r.yaml"]


def test_a_second_run_on_the_same_output_is_refused_naming_the_holder(recipe, tmp_path, capsys):
    import sys

    from iovqa_plugin.cli import main
    from iovqa_plugin.score.output_lock import OutputLock

    out = tmp_path / "preds.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom iovqa_plugin.score.output_lock import OutputLock\n"
         f"OutputLock({str(out)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(600)"],
        cwd=REPO, env=environment(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for options in ((), ("--nproc", "2")):
            assert main(score_command(recipe, out, *options)) == 2
            err = capsys.readouterr().err
            assert f"{out} is being written by another `iovqa score`: pid {holder.pid} on " in err
            assert "wait for it to finish, or stop it" in err
        assert sorted(os.listdir(tmp_path)) == ["preds.csv.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(str(out)):  # the kernel released the killed holder's lock
        pass
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("death_signal", [True, False])
def test_a_rank_ends_with_the_process_that_started_it(tmp_path, death_signal):
    """The worker of a killed launcher (death signal + watchdog) or of a killed torchrun agent (watchdog only)."""
    import sys

    child = ("import os, sys, time\nfrom iovqa_plugin.score.launch import die_with_parent\n"
             f"die_with_parent(os.getppid(), death_signal={death_signal}, poll_s=0.1)\n"
             "print(os.getpid(), flush=True)\ntime.sleep(600)")
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"subprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(600)"],
        cwd=REPO, env=environment(), stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert not process_gone(worker)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while not process_gone(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert process_gone(worker)


@pytest.mark.slow
def test_torchrun_refuses_an_output_another_run_is_writing_before_any_rank_touches_it(recipe, tmp_path):
    from iovqa_plugin.score.output_lock import OutputLock

    out = tmp_path / "preds.csv"
    with OutputLock(str(out)):
        result = subprocess.run(
            [os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
             os.path.join(BIN, "iovqa"), *score_command(recipe, out)],
            cwd=REPO, env=environment(), capture_output=True, text=True, timeout=600)
        assert result.returncode != 0
        assert f"{out} is being written by another `iovqa score`: pid {os.getpid()}" in result.stderr
        assert sorted(os.listdir(tmp_path)) == ["preds.csv.lock"]  # rank 1 waited for rank 0 and wrote nothing


def test_a_worker_keeps_the_inherited_lock_out_of_the_processes_it_starts(tmp_path, monkeypatch):
    """A helper a worker's libraries start (ldconfig and the like) must not hold the lock once the workers end."""
    from iovqa_plugin.score.launch import LOCK_FD_VARIABLE, keep_lock_to_self
    from iovqa_plugin.score.output_lock import OutputLock

    lock = OutputLock(str(tmp_path / "preds.csv")).acquire()
    try:
        os.set_inheritable(lock.fd, True)  # as a worker receives it (pass_fds)
        monkeypatch.setenv(LOCK_FD_VARIABLE, str(lock.fd))
        keep_lock_to_self()
        child = subprocess.run(["ls", "/proc/self/fd"], capture_output=True, text=True, close_fds=False)
        assert str(lock.fd) not in child.stdout.split()
        assert not os.get_inheritable(lock.fd)
    finally:
        lock.release()


def test_a_rerun_waits_for_the_lock_of_a_gone_launcher_its_ending_workers_still_hold(tmp_path):
    """The launcher is gone (its pid recorded in the lock file) and a worker holds the lock a moment longer
    while its threads end: the re-run waits for it instead of refusing; a live holder is refused at once."""
    import sys

    from iovqa_plugin.score.output_lock import OutputLock, OutputLocked

    out = tmp_path / "preds.csv"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that has ended, as the killed launcher's
    holder = subprocess.Popen(
        [sys.executable, "-c", "import json, os, socket, sys, time\n"
         "from iovqa_plugin.score.output_lock import OutputLock\n"
         f"lock = OutputLock({str(out)!r}).acquire()\n"
         "os.ftruncate(lock.fd, 0); os.lseek(lock.fd, 0, 0)\n"
         f"os.write(lock.fd, json.dumps({{'pid': {gone.pid}, 'host': socket.gethostname(), 'since': 0}}).encode())\n"
         "print('held', flush=True)\ntime.sleep(float(sys.stdin.readline()))"],
        cwd=REPO, env=environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=r"\(gone; a worker it started still runs and holds the lock\)"):
            OutputLock(str(out), ending_wait_s=0).acquire()
        holder.stdin.write("0.5\n")
        holder.stdin.flush()
        began = time.monotonic()
        with OutputLock(str(out), ending_wait_s=15):
            assert 0.5 <= time.monotonic() - began < 15  # taken once the holder had let go, not before
    finally:
        holder.kill()
        holder.wait()

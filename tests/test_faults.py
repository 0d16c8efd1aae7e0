"""Fault tests: a training run killed with SIGKILL mid-epoch resumes and ends where an uninterrupted run ends."""

import os
import signal
import subprocess
import time

import torch
from safetensors.torch import load_file

from conftest import BIN, REPO, base_recipe, run_cli, write_recipe


def adapter(path):
    return load_file(os.path.join(path, "adapter_model.safetensors"))


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_model, demo_dir, tmp_path):
    common = dict(max_steps=6, save_steps=2, learning_rate=5e-3, seed=11)
    full = tmp_path / "full"
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "full.yaml", base_recipe(tiny_model, demo_dir, str(full), **common))])
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    killed = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "killed.yaml", base_recipe(tiny_model, demo_dir, str(killed), **common))
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    process = subprocess.Popen([os.path.join(BIN, "llamafactory-cli"), "train", recipe], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = killed / "checkpoint-2"
    deadline = time.time() + 300
    while not (checkpoint / "trainer_state.json").is_file():  # written last: the checkpoint is complete
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # mid-epoch: 6 steps of 4 samples are 0.8 epoch
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "adapter_model.safetensors").exists()  # it really stopped before the end

    resumed = base_recipe(tiny_model, demo_dir, str(killed), resume_from_checkpoint=str(checkpoint),
                          overwrite_output_dir=False, **common)
    result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / "resume.yaml", resumed)])
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    final, expected = adapter(killed), adapter(full)
    assert set(final) == set(expected)
    for key in expected:
        assert torch.allclose(final[key], expected[key], atol=1e-5), key

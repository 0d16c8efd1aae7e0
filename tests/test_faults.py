import pytest
"""Fault tests: a training run killed with SIGKILL mid-epoch resumes and ends where an uninterrupted run ends;
a 2-rank torchrun run trains the same loss curve as a single process.

The killed run and the torchrun run are `llamafactory-cli train` processes; the runs they are compared with (and
the resumed run) are the same training in this process."""

import json
import os
import signal
import subprocess
import time

import torch
from safetensors.torch import load_file

from conftest import BIN, REPO, base_recipe, run_cli, train_in_process, write_recipe
from test_e2e_train import assert_adapter_saved, first_batches, train_labels


def adapter(path):
    return load_file(os.path.join(path, "adapter_model.safetensors"))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tiny_model, demo_dir, tmp_path):
    common = dict(max_steps=6, save_steps=2, learning_rate=5e-3, seed=11)
    full = tmp_path / "full"
    train_in_process(base_recipe(tiny_model, demo_dir, str(full), **common))

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
    train_in_process(resumed)
    final, expected = adapter(killed), adapter(full)
    assert set(final) == set(expected)
    for key in expected:
        assert torch.allclose(final[key], expected[key], atol=1e-5), key


def _log_history(output_dir):
    """Per-step training logs (loss, grad_norm, ...) of a finished run: the trainer_state.json rank 0 saves."""
    with open(os.path.join(output_dir, "trainer_state.json"), encoding="utf-8") as handle:
        return [entry for entry in json.load(handle)["log_history"] if "loss" in entry]


@pytest.mark.slow
def test_torchrun_two_ranks_match_single_process_loss_curve(tiny_model, demo_dir, tmp_path):
    """2 CPU ranks (gloo) x batch 2 train on the same global batches of 4 as 1 process x batch 4: same curve."""
    steps, rtol = 3, 1e-4
    # disable_shuffling: LLaMA-Factory's SFT trainer then uses a SequentialSampler and accelerate hands each
    # rank its contiguous part of the global batch, so step k trains rows 4k..4k+3 in both runs. lora_dropout 0
    # leaves nothing random; no warmup and lr 5e-3 make every step move the adapter, so later losses and the
    # final weights check the earlier gradients and optimizer steps.
    common = dict(max_steps=steps, save_strategy="no", save_steps=None, learning_rate=5e-3, warmup_steps=0,
                  lora_dropout=0.0, seed=13, disable_shuffling=True)
    runs = {}
    for name, batch, env in (("single", 4, {}), ("ddp", 2, {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"})):
        out = tmp_path / name
        recipe = base_recipe(tiny_model, demo_dir, str(out), per_device_train_batch_size=batch, **common)
        if env:
            result = run_cli(["llamafactory-cli", "train", write_recipe(tmp_path / f"{name}.yaml", recipe)], env=env)
            log = result.stdout + result.stderr
            assert result.returncode == 0, log[-4000:]
        else:
            log = train_in_process(recipe)
        runs[name] = (first_batches(log), _log_history(out), adapter(out))
    (single_first, single_log, single_adapter), (ddp_first, ddp_log, ddp_adapter) = runs["single"], runs["ddp"]

    assert set(single_first) == {0} and len(single_first[0]) == 4
    assert set(ddp_first) == {0, 1}, "every rank must run with the plugin active"
    assert all(len(targets) == 2 and set(targets) <= train_labels(demo_dir) for targets in ddp_first.values())
    # the two ranks' first batches together are the single process's first batch: same rows, same targets
    assert ddp_first[0] + ddp_first[1] == single_first[0]
    assert_adapter_saved(tmp_path / "ddp")

    assert [e["step"] for e in single_log] == [e["step"] for e in ddp_log] == list(range(1, steps + 1))
    # Every sample has 2 target tokens and transformers (average_tokens_across_devices) divides each rank's
    # sum by the global token count and scales by the world size before DDP averages, so both runs compute
    # the same sums, only in another float32 order and with other padding: seen <= 2e-7 relative. rtol 1e-4
    # leaves ~500x of that; other rows at the same weights move the loss by ~6e-3 (steps 1-2 with lr 0 at
    # step 1), and a missing or doubled world-size scale moves grad_norm by a factor of 2.
    for key in ("loss", "grad_norm"):
        ref, got = (torch.tensor([e[key] for e in run], dtype=torch.float64) for run in (single_log, ddp_log))
        assert torch.allclose(got, ref, rtol=rtol, atol=0), (key, ref.tolist(), got.tolist())
    losses = [e["loss"] for e in single_log]
    assert max(losses) - min(losses) > 100 * rtol * max(losses), losses  # the curve moves: not vacuous

    # The final adapters: seen <= 5e-6 apart; one Adam step is ~lr = 5e-3 per weight, and lora_B (zero at
    # init) has moved by that much, so atol 1e-4 would see a missed or different optimizer step.
    assert set(ddp_adapter) == set(single_adapter)
    assert max(v.abs().max().item() for k, v in single_adapter.items() if "lora_B" in k) > 1e-3
    for key, ref in single_adapter.items():
        assert torch.allclose(ddp_adapter[key], ref, rtol=0, atol=1e-4), (key, (ddp_adapter[key] - ref).abs().max())

"""The ``--nproc`` launcher and the modules it reads start no torch: its workers load the model, it only splits the
rows, starts them and merges their files."""

import os
import subprocess
import sys

from conftest import base_recipe, write_recipe

LAUNCHER_MODULES = ("iovqa_plugin.cli", "iovqa_plugin.score.command", "iovqa_plugin.score.launch",
                    "iovqa_plugin.score.parallel", "iovqa_plugin.score.scoring_loop", "iovqa_plugin.score.results",
                    "iovqa_plugin.score.prediction_file", "iovqa_plugin.score.modes", "iovqa_plugin.score.settings",
                    "iovqa_plugin.data.datasets", "iovqa_plugin.data.label_formats")


def test_the_launcher_modules_import_no_torch():
    code = f"import sys; import {', '.join(LAUNCHER_MODULES)}; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_nproc_launcher_reaches_its_workers_without_torch(tiny_model, demo_dir, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model, demo_dir, str(tmp_path / "none")))
    argv = ["score", "--recipe", recipe, "--adapter", "", "--data", os.path.join(demo_dir, "demo", "test.csv"),
            "--out", str(tmp_path / "preds.csv"), "--nproc", "2"]
    # the workers are replaced by a probe: what the launcher process holds when it would start them
    code = ("import sys\n"
            "from iovqa_plugin.score import launch\n"
            "def probe(job, argv, **kwargs):\n"
            "    print('workers', job.size, 'rows', len(job.rows), 'torch', 'torch' in sys.modules)\n"
            "    sys.exit(0)\n"
            "launch.run_local = probe\n"
            "from iovqa_plugin.cli import main\n"
            f"main({argv!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "workers 2 rows" in result.stdout and result.stdout.strip().endswith("torch False"), result.stdout

"""A regular (non-editable) install: the wheel's layout and its start-up hook."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), REPO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [path] = [os.path.join(out, n) for n in os.listdir(out) if n.endswith(".whl")]
    return path


@pytest.mark.slow
def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "iovqa_plugin.pth" in names
    assert "iovqa_plugin/patches/__init__.py" in names and "iovqa_plugin/patches/tuner.py" in names
    assert not any(n.startswith("patches/") for n in names), "no top-level `patches` module in site-packages"
    assert zipfile.ZipFile(wheel).read("iovqa_plugin.pth").decode().strip() == "import iovqa_plugin._autoload"


@pytest.mark.slow
def test_installed_wheel_patches_llamafactory(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # -S: no site processing, so the development (editable) install is invisible; the wheel's
    # folder is then added as a site dir (its .pth runs) and the dependencies as a plain path.
    code = (
        "import site, sys, json; site.addsitedir(sys.argv[1]); sys.path.append(sys.argv[2]); "
        "import iovqa_plugin, iovqa_plugin.patches as p; import llamafactory.train.tuner as t; "
        "print(json.dumps([iovqa_plugin.__file__, p.__file__, hasattr(t.read_args, '__iovqa_original__')]))"
    )
    deps = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [sys.executable, "-S", "-c", code, str(target), deps], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    package, patches, patched = json.loads(result.stdout.strip().splitlines()[-1])
    assert package.startswith(str(target)) and patches.startswith(str(target)) and patched

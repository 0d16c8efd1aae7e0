"""The layer picture holds: iovqa_plugin/ never imports LLaMA-Factory (the console script's entry point aside),
patches/ is the one adapter, and every module imports on its own (no import cycle)."""

import ast
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules():
    found = []
    for folder, package in (("iovqa_plugin", "iovqa_plugin"), ("patches", "iovqa_plugin.patches")):
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for name in sorted(files):
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(root, name), os.path.join(REPO, folder))
                    parts = [package] + rel[: -len(".py")].split(os.sep)
                    if parts[-1] == "__init__":
                        parts.pop()
                    found.append((os.path.join(root, name), ".".join(parts)))
    return found


def imported_names(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_the_domain_and_applications_do_not_import_llamafactory():
    offenders = []
    for path, module in modules():
        if module.startswith("iovqa_plugin.patches"):
            continue
        for name in imported_names(path):
            if name.split(".")[0] == "llamafactory" and (module, name) != ("iovqa_plugin.cli", "llamafactory.cli"):
                offenders.append(f"{module} imports {name}")
    assert offenders == []


def test_the_adapter_does_not_import_the_applications():
    applications = ("iovqa_plugin.cli", "iovqa_plugin.score", "iovqa_plugin.demo", "iovqa_plugin.eval")
    offenders = [
        f"{module} imports {name}"
        for path, module in modules()
        if module.startswith("iovqa_plugin.patches")
        for name in imported_names(path)
        if name.startswith(applications)
    ]
    assert offenders == []


@pytest.fixture(scope="module")
def imported_alone():
    """{module: traceback or None}: each module imported alone, in a forked child of one interpreter."""
    script = os.path.join(REPO, "tests", "import_each_alone.py")
    result = subprocess.run([sys.executable, script, *[m for _, m in modules()]], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("module", [m for _, m in modules()])
def test_every_module_imports_alone(imported_alone, module):
    assert imported_alone[module] is None, imported_alone[module][-2000:]


def test_an_import_cycle_fails_in_the_one_interpreter_too(tmp_path):
    """The check above is not vacuous: two modules importing each other's names fail alone, in either order."""
    (tmp_path / "cycle_a.py").write_text("from cycle_b import B\nA = 1\n")
    (tmp_path / "cycle_b.py").write_text("from cycle_a import A\nB = 2\n")
    script = os.path.join(REPO, "tests", "import_each_alone.py")
    result = subprocess.run([sys.executable, script, "cycle_a", "cycle_b", "json"], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert "ImportError" in found["cycle_a"] and "ImportError" in found["cycle_b"] and found["json"] is None


def test_data_preparation_imports_neither_torch_nor_llamafactory():
    code = "import sys, iovqa_plugin.data.labels, iovqa_plugin.data.prompt, iovqa_plugin.config; " \
           "print([m for m in ('torch', 'llamafactory') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == "[]"

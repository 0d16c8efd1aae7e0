"""``data/`` stands below ``config.py``: it is handed the settings and imports neither config.py nor anything
above it (the applications, the adapter), except as type names."""

import ast
import os

DATA = os.path.join(os.path.dirname(__file__), "..", "iovqa_plugin", "data")
ABOVE = ("config", "config_parser", "recipe", "cli", "score", "eval", "train", "demo", "patches")


def runtime_imports(tree):
    """Relative imports of a module outside ``if TYPE_CHECKING:`` blocks, as (level, module)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in skipped and node.level:
            names = [node.module] if node.module else [alias.name for alias in node.names]
            yield from ((node.level, name) for name in names)


def test_data_imports_nothing_above_it():
    offenders = []
    for name in sorted(os.listdir(DATA)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(DATA, name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        offenders += [f"data/{name} imports {'.' * level}{module}" for level, module in runtime_imports(tree)
                      if level > 1 and module.split(".")[0] in ABOVE]
    assert offenders == []

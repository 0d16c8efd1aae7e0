"""Start-up hook run by ``iovqa_plugin.pth`` in every Python interpreter.

It must cost nothing measurable: standard library only, no torch, no
LLaMA-Factory. It registers a meta-path finder that waits for the few
LLaMA-Factory modules the plugin patches; right after one of them has been
executed, the matching patch from ``iovqa_plugin.patches`` is applied. A
process that never imports LLaMA-Factory never loads anything else.

Set ``IOVQA_DISABLE_AUTOLOAD=1`` to turn the hook off (stock LLaMA-Factory).
"""

import os
import sys

# LLaMA-Factory modules whose import triggers a patch (see iovqa_plugin.patches).
WATCHED_MODULES = (
    "llamafactory.launcher",
    "llamafactory.hparams.parser",
    "llamafactory.data.converter",
    "llamafactory.data.loader",
    "llamafactory.data.processor.supervised",
    "llamafactory.model.loader",
    "llamafactory.train.sft.workflow",
    "llamafactory.train.tuner",
)


# Plain classes (the import protocols are duck-typed): importing importlib.abc
# would pull in importlib.resources, typing and tempfile, ~10 ms at every start-up.
class _PatchingLoader:
    """Wraps the real loader; runs the plugin's patch after the module body."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        from iovqa_plugin.patches import on_module_imported

        on_module_imported(module.__name__, module)

    def __getattr__(self, name):  # get_resource_reader, is_package, get_code, ...
        return getattr(self._loader, name)


class PostImportFinder:
    """Finds watched modules through the other finders and wraps their loader."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in WATCHED_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _PatchingLoader):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install():
    """Put the finder first on ``sys.meta_path`` (idempotent)."""
    if os.environ.get("IOVQA_DISABLE_AUTOLOAD", "").lower() in ("1", "true", "yes"):
        return False
    if any(isinstance(finder, PostImportFinder) for finder in sys.meta_path):
        return True
    sys.meta_path.insert(0, PostImportFinder())
    already = [name for name in WATCHED_MODULES if name in sys.modules]
    if already:  # imported before the hook existed (unusual): patch now
        from iovqa_plugin.patches import on_module_imported

        for name in already:
            on_module_imported(name, sys.modules[name])
    return True


install()

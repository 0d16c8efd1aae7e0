"""Import each module named on the command line alone, in one interpreter: `python import_each_alone.py MODULE...`.

A fresh interpreter per module would load torch, transformers and the rest again each time (seconds each). Here
the third-party libraries the modules use are loaded once, then every module is imported in a forked child of
this interpreter, in which no module of the plugin or of LLaMA-Factory is loaded yet beyond what a fresh
interpreter has (the start-up hook of iovqa_plugin.pth): an import cycle in the plugin, or one the hook's patches
close, fails there as it would in a fresh interpreter. Prints one JSON object: {module: traceback or null}.
"""

import importlib
import json
import os
import sys
import traceback

OWN = ("iovqa_plugin", "llamafactory")


def own_modules() -> set:
    return {name for name in sys.modules if name.split(".")[0] in OWN}


def in_child(function):
    """function() run in a forked child: its JSON result, or the traceback of what it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result = function()
        except BaseException:
            result = traceback.format_exc()
        with os.fdopen(write, "w") as handle:
            handle.write(json.dumps(result))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        text = handle.read()
    os.waitpid(pid, 0)
    return json.loads(text) if text else f"the child importing it died without a result (pid {pid})"


def third_party(modules):
    """The modules, not the plugin's nor LLaMA-Factory's, that importing all of them loads, in load order."""
    for module in modules:
        importlib.import_module(module)
    return [name for name in sys.modules if name.split(".")[0] not in OWN]


def import_alone(module):
    importlib.import_module(module)
    return None


def main(modules):
    fresh = own_modules()  # what the start-up hook loaded: what every fresh interpreter has
    preload = in_child(lambda: third_party(modules))
    if isinstance(preload, list):  # otherwise some import failed: each child below says which
        for name in preload:
            if name not in sys.modules:
                try:
                    importlib.import_module(name)
                except Exception:  # e.g. aliases registered under names that cannot be imported
                    pass
    leaked = sorted(own_modules() - fresh)
    if leaked:
        return {module: f"loading the third-party libraries loaded {leaked}" for module in modules}
    return {module: in_child(lambda: import_alone(module)) for module in modules}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))

"""Target: ``llamafactory.launcher.launch`` (what ``llamafactory-cli`` runs; ``llamafactory.cli`` looks it up at
call time), and how a training run stopped by bad input reports it.

In one process the patched ``run_exp`` prints the plugin's message and exits
with status 2. Under torchrun (``FORCE_TORCHRUN=1``, several GPUs) each rank
does so, and then torchrun and the launcher print their own failure reports
(~45 lines); so the ranks also leave the message in a file the launcher names
(``IOVQA_ERROR_FILE``, inherited through torchrun), and the patched launcher
prints it last and exits with status 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from .support import patch_attribute

ERROR_FILE_ENV = "IOVQA_ERROR_FILE"


def apply_launcher_launch() -> None:
    """Make ``llamafactory-cli train`` under torchrun end with the plugin's message when a rank stopped on bad input."""
    patch_attribute("llamafactory.launcher", "launch", _ending_with_input_errors)


def report_input_error(err: Exception) -> None:
    """Print a bad-input error as the run's last line, and leave it for the launcher (torchrun ranks)."""
    print(f"[iovqa] error: {err}", file=sys.stderr, flush=True)
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        tmp = f"{path}.{os.getpid()}.tmp"  # ranks write the same message: whole files only
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(str(err))
        os.replace(tmp, path)


def _ending_with_input_errors(original):
    def launch():
        if ERROR_FILE_ENV in os.environ:  # a launcher inside a launcher: the outer one reports
            return original()
        handle, path = tempfile.mkstemp(prefix="iovqa_error_", suffix=".txt")
        os.close(handle)
        os.environ[ERROR_FILE_ENV] = path
        try:
            return original()
        except subprocess.CalledProcessError:
            message = _read(path)
            if not message:
                raise
            print(f"[iovqa] error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        finally:
            os.environ.pop(ERROR_FILE_ENV, None)
            os.remove(path)

    return launch


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()

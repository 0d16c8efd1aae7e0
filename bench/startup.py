"""Python start-up cost of the installed plugin (its .pth hook), measured side by side.

    python bench/startup.py [--runs 30]

Times `python -c pass` with the start-up hook on and off (IOVQA_DISABLE_AUTOLOAD=1:
the .pth still imports the hook module, which then returns at once), interleaved so
both see the same machine load, and reads `-X importtime` for the hook module and
everything it imports (its whole cost). Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time


def wall(env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - start


def hook_import_us(env: dict) -> int:
    """Cumulative -X importtime of ``iovqa_plugin._autoload`` and what it imports (microseconds)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=env, capture_output=True, text=True)
    for line in result.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "iovqa_plugin._autoload":
            return int(parts[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    on = dict(os.environ)
    on.pop("IOVQA_DISABLE_AUTOLOAD", None)
    off = dict(on, IOVQA_DISABLE_AUTOLOAD="1")
    times = {"hook on": [], "hook off": []}
    for _ in range(args.runs):
        times["hook on"].append(wall(on))
        times["hook off"].append(wall(off))
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores, {args.runs} runs each")
    for name, values in times.items():
        print(f"  {name:9s} median {statistics.median(values) * 1000:7.2f} ms")
    ratio = statistics.median(times["hook on"]) / statistics.median(times["hook off"])
    print(f"  ratio on/off: {ratio:.3f}")
    print(f"  import of the start-up hook, cumulative (-X importtime): {hook_import_us(on)} us")


if __name__ == "__main__":
    main()

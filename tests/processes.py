"""The ``mosic`` command line run as a real process, as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def mosic(*args, **popen) -> subprocess.Popen:
    """Start ``python -m mosic ARGS`` with stdout and stderr merged into one text pipe."""
    command = [sys.executable, "-m", "mosic", *[str(a) for a in args]]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """Wait for ``process``: its exit code and the rest of its output."""
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def wait_for_line(process: subprocess.Popen, prefix: str) -> str:
    """Read ``process``'s output up to the first line starting with ``prefix``; return it."""
    lines = []
    for line in process.stdout:
        if line.startswith(prefix):
            return line.rstrip("\n")
        lines.append(line)
    raise AssertionError(f"the run ended before printing {prefix!r}: {''.join(lines)}")

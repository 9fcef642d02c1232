"""How training hears that it must stop: SIGTERM, or another rank gone from a collective.

torchrun stops every rank with SIGTERM when one fails (then SIGKILL after a grace period), a
cluster scheduler does the same at a time limit; Python's default for SIGTERM ends the process
without a word. A rank killed outside this process's torchrun (another node) surfaces as an
error of the next collective (gloo: "Connection closed by peer"), after the process group's
timeout at worst when its host vanished without closing its connections.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist


class Stopped(BaseException):  # not an error: the process was asked to stop
    """SIGTERM arrived (raised by ``stop_on_sigterm``'s handler)."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Stopped`` (in the main thread; elsewhere nothing
    changes). A BaseException, so that no ``except Exception`` on the way swallows it.

    A rank of a distributed job that leaves the block with an error ignores SIGTERM from then
    on: it is about to report the error and exit, and torchrun follows one rank's failure with
    SIGTERM to the others, which must not kill it before its one line is out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Stopped

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except BaseException:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if dist.is_initialized() else previous)
        raise
    signal.signal(signal.SIGTERM, previous)


def lost_rank(exc: RuntimeError) -> str | None:
    """The first sentence of a collective's error when another rank is gone (in a process
    group of several ranks), else None: ``Connection closed by peer [127.0.0.1]:35978``."""
    if not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    text = " ".join(str(exc).split())
    if not isinstance(exc, dist.DistError) and not re.search(r"gloo|nccl", text, re.IGNORECASE):
        return None
    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text)  # [.../gloo/.../pair.cc:561]
    return text.split(". ")[0][:200]

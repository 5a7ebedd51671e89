"""Process-wide settings this extension makes to the ComfyUI it runs in, master or worker.

Both exist because of how ComfyUI's main.py behaves over hours of use, not because of our code:
- after a prompt, main.py runs a full `gc.collect()` (at most every 10 s). With torch, the models'
  code and the frontend loaded, that walks about half a million objects and holds the interpreter
  for 0.2 to 0.5 s on a small CPU: the server loop stalls while results arrive, and a worker starts
  its next share late. Objects that exist once the server starts live as long as the process, so
  they are frozen out of every later collection (`gc.freeze`).
- Python's default SIGTERM ends the process without running exit handlers, so local workers would
  outlive a master stopped with `kill` until their watchdog noticed.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)


async def freeze_startup_heap(app: Any) -> None:
    """aiohttp on_startup hook: move everything alive at server start out of the collector's reach."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    logger.debug("Froze %d start-up objects in %.0f ms", gc.get_freeze_count(), 1000 * (time.perf_counter() - started))


def exit_cleanly_on_sigterm() -> None:
    """Makes SIGTERM a normal exit, so exit handlers (stopping local workers) run at once.

    Left alone if ComfyUI or the user already set a handler, and where there is no SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

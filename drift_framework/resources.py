"""What a run needs from the machine, estimated before anything is built, so a recipe that cannot fit is refused
at validation with the number, not killed hours later."""
from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["BYTES_PER_PIXEL", "available_memory", "frame_memory"]

#: Working memory per frame pixel while a frame is acquired and measured: the simulator's rendering (~93 B/px,
#: bounded for large frames by rendering in bands), a pipeline (classical ~50 B/px, measured with tracemalloc at
#: 256² and 512²), and the reference, the frame and its stored copy (float32).
BYTES_PER_PIXEL = 160


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable), or None when the system does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def frame_memory(shape: Sequence[int]) -> int:
    """Estimated bytes one run needs for frames of ``shape`` (px)."""
    return int(shape[0]) * int(shape[1]) * BYTES_PER_PIXEL

"""glibc malloc tuning for the extraction process (measured by ``bench/allocator.py``).

Extraction allocates the same large blocks batch after batch (uint8 patch buffers, resized float tensors,
encoder activations: megabytes each). With glibc's defaults each block above the mmap threshold is a fresh
``mmap`` whose pages the kernel faults in and zeroes, then ``munmap``s on free: system time that grows with
the patches encoded. Turning mmap off for the process (``M_MMAP_MAX`` = 0) and keeping freed memory in the
heap (``M_TRIM_THRESHOLD`` = 1 GiB) lets the blocks be reused, at the price of a peak RSS that stays at its
high-water mark. The settings are made with ``mallopt`` at run time (the same as the ``MALLOC_MMAP_MAX_`` /
``MALLOC_TRIM_THRESHOLD_`` environment variables, which only act at process start). Not glibc (musl, macOS):
nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**30


def tune_glibc_malloc(trim_threshold: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Set ``M_MMAP_MAX`` = 0 and ``M_TRIM_THRESHOLD`` = ``trim_threshold`` bytes for this process.

    Returns True when glibc accepted both settings, False elsewhere (no glibc: nothing changed).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl also has mallopt, as a no-op)
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, int(min(trim_threshold, 2**31 - 1))))

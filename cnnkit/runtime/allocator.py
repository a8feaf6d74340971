"""glibc malloc settings for training on a CPU.

By default glibc serves allocations over a threshold (128 KB at first, raised as large blocks are freed) with fresh
memory maps and gives freed memory at the heap's top back at once. A training step allocates and frees the same
activation and gradient buffers (megabytes each) every step, so in a process that has not happened to free a large
block first (a data set read from the decoded-image cache, rather than decoded into memory), every step paid page
faults for them again: simple-cnn on CIFAR-10 trained at 60% of the speed (bench/large_folder.py). Serving them from
the heap, and keeping freed memory for reuse, removes that.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks under 64 MB come from the heap; up to 128 MB freed at the heap's top is kept for reuse: little beside what
# training holds anyway; a 224-px model's larger buffers still come from memory maps, whose cost is small beside
# the work on them. (Lower thresholds slowed training from the cache, higher ones added RSS: README, "Memory, and
# speed on a CPU".)
MMAP_THRESHOLD_BYTES = 64 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024


def reuse_freed_memory() -> bool:
    """Set the thresholds above for this process; whether they were set (glibc only)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))


def images_under_threshold(bytes_per_image: int, *, most: int) -> int:
    """The most images, 1 to `most`, whose buffers of `bytes_per_image` each stay under MMAP_THRESHOLD_BYTES
    together: over it, every batch's buffers are freshly mapped memory, paid for in page faults."""
    return max(1, min(most, MMAP_THRESHOLD_BYTES // max(bytes_per_image, 1)))

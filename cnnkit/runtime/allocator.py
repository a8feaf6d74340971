"""The memory allocator for training on a CPU: tcmalloc where it is installed, else glibc's malloc, tuned.

A training step allocates and frees thousands of blocks (PyTorch's and oneDNN's bookkeeping besides the tensors'
buffers), and glibc's malloc makes that cost more than tcmalloc does (bench/README.md has the figures). The
allocator is chosen when a process starts, so the `cnnkit` command starts a training command once more with tcmalloc
preloaded (`LD_PRELOAD`, as PyTorch's own CPU launcher `torch.backends.xeon.run_cpu` does) when the library is
installed (Debian and Ubuntu: `libtcmalloc-minimal4`) and not loaded already. `CNNKIT_ALLOCATOR=system` keeps
glibc's. A Python process that imports cnnkit keeps the allocator it started with.

Under glibc's malloc, by default glibc serves allocations over a threshold (128 KB at first, raised as large blocks are
freed) with fresh memory maps and gives freed memory at the heap's top back at once. A training step allocates and frees
the same activation and gradient buffers (megabytes each) every step, so in a process that has not happened to free a
large block first (a data set read from the decoded-image cache, rather than decoded into memory), every step paid page
faults for them again (README, "Memory, and speed on a CPU"; bench/large_folder.py). Serving them from the heap, and
keeping freed memory for reuse, removes that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cnnkit.errors import CnnkitError

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks under 64 MB come from the heap; up to 128 MB freed at the heap's top is kept for reuse: little beside what
# training holds anyway; a 224-px model's larger buffers still come from memory maps, whose cost is small beside
# the work on them. (Lower thresholds slowed training from the cache, higher ones added RSS: README, "Memory, and
# speed on a CPU".)
MMAP_THRESHOLD_BYTES = 64 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024

ALLOCATOR_ENV = "CNNKIT_ALLOCATOR"  # auto (tcmalloc where installed) | system (glibc's malloc)
ALLOCATOR_CHOICES = ("auto", "system")
_RELAUNCHED_ENV = "CNNKIT_ALLOCATOR_RELAUNCHED"  # set in the restarted process: it never restarts again
_TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")  # find_library names: the minimal build lacks only profiling
_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")  # libraries preloaded in place of glibc's malloc
# tcmalloc reports each allocation over 1 GiB on stderr by default; a data set decoded into memory is one.
_LARGE_ALLOC_REPORT_ENV = "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"
_NEVER_REPORT_BYTES = 1 << 50


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


@functools.cache  # malloc is chosen when the process starts: it never changes after
def loaded_allocator() -> tuple[str, str] | None:
    """The malloc this process runs with in place of glibc's, as (name, library path), if any (Linux: from its
    memory maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.split()[-1]
                for name in _ALLOCATORS:
                    if Path(path).name.startswith(f"lib{name}"):
                        return name, path
    except OSError:
        pass
    return None


def installed_tcmalloc() -> str | None:
    """The name of an installed tcmalloc library that the dynamic loader can preload, if there is one."""
    for name in _TCMALLOC_NAMES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def allocator_choice() -> str:
    """CNNKIT_ALLOCATOR, checked: 'auto' (tcmalloc where installed; the default) or 'system' (glibc's malloc)."""
    choice = os.environ.get(ALLOCATOR_ENV, "auto").strip().lower() or "auto"
    if choice not in ALLOCATOR_CHOICES:
        raise CnnkitError(f"{ALLOCATOR_ENV}={choice!r}; valid: {', '.join(ALLOCATOR_CHOICES)}")
    return choice


def restart_with_tcmalloc(argv: Sequence[str]) -> None:
    """Replace this process with the same command run with tcmalloc preloaded, where that is wanted and possible;
    otherwise return and let the command run as it is. Call it before anything else has started: the process is
    replaced (same PID, same environment plus LD_PRELOAD, so torchrun sees the same rank)."""
    if (sys.platform != "linux" or allocator_choice() == "system" or os.environ.get(_RELAUNCHED_ENV)
            or loaded_allocator() or _preloads_an_allocator()):
        return
    library = installed_tcmalloc()
    if library is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    env.setdefault(_LARGE_ALLOC_REPORT_ENV, str(_NEVER_REPORT_BYTES))
    env[_RELAUNCHED_ENV] = "1"  # a library the loader cannot preload after all must not make this a loop
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)


def allocator_name() -> str:
    """'tcmalloc', 'jemalloc', 'mimalloc' or 'glibc': what this process allocates with (a run's config.json)."""
    loaded = loaded_allocator()
    return loaded[0] if loaded else "glibc"


def _preloads_an_allocator() -> bool:
    """Whether LD_PRELOAD names a malloc (jemalloc, mimalloc, tcmalloc...): the user's choice stands, loaded or not."""
    return any("malloc" in Path(entry).name for entry in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":"))


def describe_allocator() -> str:
    """One line for a CPU run's header: which allocator its steps use, and how to get the faster one."""
    loaded = loaded_allocator()
    if loaded is not None:
        return f"{loaded[0]} ({loaded[1]})"
    if allocator_choice() == "system":
        return f"glibc malloc ({ALLOCATOR_ENV}=system)"
    if _preloads_an_allocator():
        return f"glibc malloc (LD_PRELOAD={os.environ['LD_PRELOAD']} did not load)"
    if installed_tcmalloc() is None:
        return "glibc malloc (install tcmalloc, libtcmalloc-minimal4 on Debian and Ubuntu, for faster CPU training)"
    return "glibc malloc (the cnnkit command preloads the installed tcmalloc; a Python process keeps its own)"

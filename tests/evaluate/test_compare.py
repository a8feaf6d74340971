import json
import re
from pathlib import Path

from cnnkit.config import TrainConfig
from cnnkit.evaluate.compare import compare_runs
from cnnkit.training.fit import train


def test_compare_two_tiny_runs(shapes_npz: Path, tmp_path: Path) -> None:
    base = dict(data=f"npz:{shapes_npz}", epochs=2, batch_size=32, quiet=True, device="cpu", top_k=2)
    train(TrainConfig(out=tmp_path / "simple", model="simple-cnn", **base))
    train(TrainConfig(out=tmp_path / "lenet", model="lenet5", augment="standard", **base))
    table = compare_runs(runs=[tmp_path / "simple", tmp_path / "lenet"], plot_path=tmp_path / "curves.png")
    lines = table.splitlines()
    assert lines[0].split() == ["run", "model", "params", "trainable", "epochs", "wall_s", "kept_epoch", "val_acc",
                                "test_top1", "top1_ci95", "test_top2", "test_ece"]
    simple, lenet = lines[2].split(), lines[3].split()
    assert simple[:5] == ["simple", "simple-cnn", "122,115", "122,115", "2"]  # parameters with 3 classes
    assert lenet[:5] == ["lenet", "lenet5", "61,411", "61,411", "2"]
    assert all(0.0 <= float(v) <= 1.0 for v in simple[7:9] + simple[10:] + lenet[7:9] + lenet[10:])
    low, high = (float(v) for v in simple[9].split("-"))
    assert low <= float(simple[8]) <= high  # the test accuracy within its 95% interval
    history = json.loads((tmp_path / "simple" / "history.json").read_text())
    kept = json.loads((tmp_path / "simple" / "metrics.json").read_text())["best_epoch"]
    assert simple[6] == str(kept)  # the val_acc of the epoch whose weights were tested
    assert simple[7] == f"{history[kept - 1]['val_accuracy']:.4f}"
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert "Note:" not in table  # the same test images
    # paired on the same 60 test images: the images one run gets right and the other wrong
    paired = table.split("Paired on the same 60 test images:\n")[1].splitlines()[0]
    gained, lost = (int(n) for n in re.findall(r"on (\d+)", paired))
    lenet_acc, simple_acc = (json.loads((tmp_path / r / "metrics.json").read_text())["accuracy"]
                             for r in ("lenet", "simple"))
    assert paired.startswith("lenet: right where simple was wrong on") and "McNemar p = " in paired
    assert gained - lost == round((lenet_acc - simple_acc) * 60)
    # what differs between the two runs, to credit the difference in results to: model and augmentation only
    settings = table.split("Settings that differ:\n")[1].splitlines()
    assert settings[0].split() == ["setting", "simple", "lenet"]
    assert [line.split() for line in settings[2:]] == [["augment", "none", "standard"],
                                                       ["model", "simple-cnn", "lenet5"]]


def test_runs_tested_on_different_images_are_said_not_to_compare(shapes_npz: Path, tmp_path: Path) -> None:
    import numpy as np
    from helpers import CLASSES, make_shapes

    x, y = make_shapes(20, seed=7)
    other = tmp_path / "other.npz"
    np.savez(other, x_train=x[:45], y_train=y[:45], x_test=x[45:], y_test=y[45:], class_names=np.array(CLASSES))
    base = dict(epochs=1, batch_size=32, quiet=True, device="cpu")
    train(TrainConfig(data=f"npz:{shapes_npz}", out=tmp_path / "a", **base))
    train(TrainConfig(data=f"npz:{other}", out=tmp_path / "b", test_split=0, **base))
    table = compare_runs(runs=[tmp_path / "a", tmp_path / "b"])
    assert "\nNote: the runs were tested on different images (a 60, b 15): their test columns do not compare\n" in table


def test_runs_on_other_classes_or_without_a_test_set_are_named(shapes_npz: Path, tmp_path: Path) -> None:
    import numpy as np
    from helpers import make_shapes

    x, y = make_shapes(20, seed=8)
    two = y < 2  # two of the three classes; no test arrays and --test-split 0: no test set
    other = tmp_path / "two.npz"
    np.savez(other, x=x[two], y=y[two])
    base = dict(epochs=1, batch_size=32, quiet=True, device="cpu")
    train(TrainConfig(data=f"npz:{shapes_npz}", out=tmp_path / "a", **base))
    train(TrainConfig(data=f"npz:{other}", out=tmp_path / "b", test_split=0, **base))
    notes = [line for line in compare_runs(runs=[tmp_path / "a", tmp_path / "b"]).splitlines()
             if line.startswith("Note:")]
    assert notes == ["Note: the runs classify different sets of classes (a 3, b 2): their accuracies do not compare",
                     "Note: b had no test set"]


def test_runs_lists_every_run_with_its_export_state(shapes_npz: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from cnnkit.config import ExportConfig
    from cnnkit.deploy.onnx import export_run

    base = dict(data=f"npz:{shapes_npz}", epochs=1, batch_size=32, quiet=True, device="cpu", project=tmp_path / "runs")
    train(TrainConfig(name="a", **base))
    train(TrainConfig(name="a", **base))  # the name is taken: a-2
    export_run(ExportConfig(run=tmp_path / "runs" / "a"))
    result = subprocess.run([sys.executable, "-m", "cnnkit", "runs", tmp_path / "runs"], capture_output=True,
                            text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "model", "data", "epochs", "monitor", "best", "test_acc", "export", "created"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"a", "a-2"}
    assert rows["a"][1] == "simple-cnn" and rows["a"][3] == "1/1" and rows["a"][4] == "val_loss"
    assert rows["a"][7] == "current" and rows["a-2"][7] == "none"

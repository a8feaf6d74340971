"""`cnnkit evaluate RUN` recomputes the test figures training reported: the same images, decoded and preprocessed the
same way, through the same model and test-time augmentation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import write_tree

from cnnkit.config import EvaluateConfig, TrainConfig
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.report import evaluate_run
from cnnkit.training.fit import train


@pytest.fixture(scope="module")
def binary_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of shapes, 30 training and 12 test images each, 40-48 px: resized on decoding."""
    root = tmp_path_factory.mktemp("binary")
    write_tree(root / "train", 30, seed=3)
    write_tree(root / "test", 12, seed=4)
    for split in ("train", "test"):
        shutil.rmtree(sorted((root / split).iterdir())[-1])
    return root


@pytest.mark.parametrize("variant", ["pretrained-frozen", "scratch-tta"])
def test_evaluating_a_run_gives_the_test_figures_training_reported(binary_tree: Path, tmp_path: Path,
                                                                    variant: str) -> None:
    if variant == "pretrained-frozen":
        import timm
        from safetensors.torch import save_file

        save_file(timm.create_model("test_resnet", num_classes=1000).state_dict(), tmp_path / "base.safetensors")
        model = {"model": "timm/test_resnet", "weights": tmp_path / "base.safetensors", "input_size": 24,
                 "freeze_base": True, "finetune_epochs": 1}
    else:
        model = {"model": "simple-cnn", "input_size": 32, "tta": "flip"}
    config = TrainConfig(data=f"folder:{binary_tree}", out=tmp_path / "run", epochs=2, quiet=True, device="cpu",
                         **model)  # type: ignore[arg-type]
    reported = train(config).metrics
    again = evaluate_run(EvaluateConfig(run=tmp_path / "run"))
    assert again["num_samples"] == reported["num_samples"] == 24
    assert again["accuracy"] == reported["accuracy"]
    assert again["binary"]["roc_auc"] == pytest.approx(reported["binary"]["roc_auc"], abs=1e-9)
    assert again["confusion_matrix"] == reported["confusion_matrix"]


def test_another_source_is_evaluated_whole_and_the_runs_own_data_on_its_test_split(binary_tree: Path,
                                                                                    tmp_path: Path) -> None:
    """A bare folder of 24 new images is all evaluated (it was once cut to a 20% 'test split' of 4 images, with no
    word said, and written over the run's own test figures); naming the run's own (bare) folder again gives the
    test split training cut, not its training images."""
    own = binary_tree / "train"  # 60 images in class folders, no train/ or test/ subtrees: a 20% test split
    train(TrainConfig(data=f"folder:{own}", out=tmp_path / "run", epochs=1, quiet=True, device="cpu",
                      model="simple-cnn", input_size=32))
    reported = json.loads((tmp_path / "run" / "metrics.json").read_text())
    whole = evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"folder:{binary_tree / 'test'}"))
    assert (whole["num_samples"], whole["evaluated_on"]) == (24, "all its images")
    # written apart: the run's own figures (`cnnkit runs`, `cnnkit compare`) stay its test split's
    assert Path(whole["output"]).parent == tmp_path / "run" / "evaluations"
    assert json.loads((Path(whole["output"]) / "metrics.json").read_text())["num_samples"] == 24
    # Each evaluation's page shows what is beside it: the run's has its learning curves, the other source's not.
    other_page = (Path(whole["output"]) / "report.html").read_text()
    assert "calibration.png" in other_page and "learning_curves.png" not in other_page
    assert "all its images" in other_page and "ROC AUC" in other_page
    assert "learning_curves.png" in (tmp_path / "run" / "report.html").read_text()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == reported
    again = evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"folder:{own}"))
    assert (again["num_samples"], again["evaluated_on"]) == (12, "the run's test split")
    with pytest.raises(CnnkitError, match="is the data being evaluated"):  # a threshold measured where it was chosen
        evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"folder:{binary_tree / 'test'}", target_fpr=0.5,
                                    calibration_data=f"folder:{binary_tree / 'test'}"))


def test_a_run_whose_own_data_changed_is_neither_evaluated_nor_resumed(binary_tree: Path, tmp_path: Path) -> None:
    """Files added to a bare folder re-cut its seeded test split, which can then hold images the run trained on:
    evaluating the run on its own data, or resuming it, is refused until the data is what it was."""
    from cnnkit.training.fit import resume_config

    own = tmp_path / "shots"
    shutil.copytree(binary_tree / "train", own)
    run = tmp_path / "run"
    train(TrainConfig(data=f"folder:{own}", out=run, epochs=1, quiet=True, device="cpu", model="simple-cnn",
                      input_size=32))
    assert json.loads((run / "data.json").read_text())["test"]["images"] == 12
    evaluate_run(EvaluateConfig(run=run))  # unchanged: fine
    added = own / "circle" / "added.png"
    shutil.copy(binary_tree / "test" / "circle" / "000.png", added)
    with pytest.raises(CnnkitError, match=r"changed since .* was trained \(test: (other images|12 images, now 13)"):
        evaluate_run(EvaluateConfig(run=run))
    with pytest.raises(CnnkitError, match=r"changed since .* started \(test: .*; train: 44 images, now 45; "
                                          r".*\): resumed"):
        train(resume_config(run, epochs=2))
    added.unlink()
    assert train(resume_config(run, epochs=2)).metrics["num_samples"] == 12


def test_a_run_trained_without_a_test_split_is_not_evaluated_on_its_own_data(binary_tree: Path,
                                                                              tmp_path: Path) -> None:
    """With --test-split 0 every image of the run's data trained or validated it: no own-data figure is honest."""
    run = tmp_path / "run"
    train(TrainConfig(data=f"folder:{binary_tree / 'train'}", out=run, epochs=1, quiet=True, device="cpu",
                      input_size=32, test_split=0))
    with pytest.raises(CnnkitError, match="trained without a test split of folder:.*evaluate on other data with "
                                          "--data"):
        evaluate_run(EvaluateConfig(run=run))
    assert evaluate_run(EvaluateConfig(run=run, data=f"folder:{binary_tree / 'test'}"))["num_samples"] == 24


def test_another_source_with_some_of_the_runs_classes_is_matched_by_name(shapes_tree: Path, tmp_path: Path) -> None:
    """A folder of two of a three-class run's classes: its labels are the run's indices of those names, not their
    positions among two folders; a folder with a class the run does not know is refused."""
    train(TrainConfig(data=f"folder:{shapes_tree}", out=tmp_path / "run", epochs=2, quiet=True, device="cpu",
                      model="simple-cnn"))
    run_classes = json.loads((tmp_path / "run" / "classes.json").read_text())
    full = evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"folder:{shapes_tree / 'test'}"))
    two = tmp_path / "two"
    for name in run_classes[1:]:  # 'cross' and 'square': folders 0 and 1 here, classes 1 and 2 of the run
        shutil.copytree(shapes_tree / "test" / name, two / name)
    part = evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"folder:{two}"))
    assert part["evaluated_on"] == "all its images, in 2 of the run's 3 classes: no circle"
    assert part["classes_without_images"] == ["circle"] and part["num_samples"] == 20
    for name in run_classes[1:]:  # the same images, the same answers as in the whole folder
        assert part["per_class"][name]["recall"] == full["per_class"][name]["recall"]
        assert part["per_class"][name]["support"] == 10
    shutil.copytree(shapes_tree / "test" / "circle", two / "disc")
    with pytest.raises(CnnkitError, match=r"disc unknown to it"):
        evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"folder:{two}"))


def test_another_source_with_train_and_val_trees_is_evaluated_on_both(binary_tree: Path, tmp_path: Path) -> None:
    """A source without a test part is evaluated whole: its val/ tree too (it was left out), unless --target-fpr
    calibrates on it."""
    train(TrainConfig(data=f"folder:{binary_tree}", out=tmp_path / "run", epochs=1, quiet=True, device="cpu",
                      model="simple-cnn", input_size=32))
    other = tmp_path / "other"
    shutil.copytree(binary_tree / "train", other / "train")
    shutil.copytree(binary_tree / "test", other / "val")
    whole = evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"folder:{other}"))
    assert (whole["num_samples"], whole["evaluated_on"]) == (60 + 24, "all its images")
    calibrated = evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"folder:{other}", target_fpr=0.5))
    assert (calibrated["num_samples"], calibrated["evaluated_on"]) == (60, "its images outside the calibration split")


def test_mistakes_are_shown_most_confident_first_and_a_stale_figure_is_removed(tmp_path: Path) -> None:
    import numpy as np

    from cnnkit.evaluate.plots import mistakes_figure
    from cnnkit.evaluate.report import ReportPlace, confident_mistakes
    from cnnkit.rundir import RunDir

    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.45, 0.55], [np.nan, np.nan], [0.2, 0.8]])
    assert confident_mistakes(probs, np.array([0, 0, 0, 1, 1]), limit=5).tolist() == [1, 2, 3]
    assert confident_mistakes(probs, np.array([0, 0, 0, 1, 1]), limit=1).tolist() == [1]
    run = RunDir.create(tmp_path / "run", overwrite=False)
    place = ReportPlace(run, "evaluations/other/")
    place.save_figure("mistakes.png", mistakes_figure(np.zeros((3, 8, 8, 3), np.uint8), ["a", "b", "c"], title="t"))
    assert "evaluations/other/mistakes.png" in run.manifest()
    place.remove("mistakes.png")  # a later evaluation without mistakes: the old figure showed other weights
    assert not (run.path / "evaluations/other/mistakes.png").exists()
    assert "evaluations/other/mistakes.png" not in run.manifest()


def test_the_report_page_escapes_what_comes_from_the_data() -> None:
    from cnnkit.evaluate.html import report_html
    from cnnkit.evaluate.metrics import classification_metrics

    names = ["<script>alert(1)</script>", "cat & dog"]
    metrics = classification_metrics(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1]),
                                     class_names=names, top_k=None)
    page = report_html(metrics, title="run <b>x</b>", figures=[("confusion_matrix.png", "Confusion matrix")])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "cat &amp; dog" in page
    assert "run &lt;b&gt;x&lt;/b&gt;" in page and '<img src="confusion_matrix.png"' in page
    assert "0.6667 (95% interval" in page  # two of three right


def test_another_csv_source_reads_its_files_beside_it_not_in_the_runs_data_dir(tmp_path: Path) -> None:
    """A run trained on a table whose files live under --data-dir; another table, listing files beside itself, is
    evaluated with those (the training's --data-dir was once applied to it, and none of its files were found)."""
    write_tree(tmp_path / "pool" / "images", 8, seed=5)
    write_tree(tmp_path / "new" / "photos", 4, seed=6)
    for folder, table in ((tmp_path / "pool", tmp_path / "tables" / "train.csv"), (tmp_path / "new",
                                                                                    tmp_path / "new" / "test.csv")):
        table.parent.mkdir(exist_ok=True)
        rows = [f"{p.relative_to(folder)},{p.parent.name}" for p in sorted(folder.rglob("*.*"))]
        table.write_text("file,label\n" + "\n".join(rows) + "\n")
    train(TrainConfig(data=f"csv:{tmp_path / 'tables' / 'train.csv'}", data_dir=tmp_path / "pool",
                      out=tmp_path / "run", epochs=1, quiet=True, device="cpu", input_size=32))
    other = evaluate_run(EvaluateConfig(run=tmp_path / "run", data=f"csv:{tmp_path / 'new' / 'test.csv'}"))
    assert (other["num_samples"], other["evaluated_on"]) == (12, "all its images")

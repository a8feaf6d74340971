"""Temperature scaling: fitted on held-out data, stored for the best weights, and then used by every path that
turns the run's logits into probabilities (predict, evaluate, a binary threshold, the ONNX export)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import make_shapes

from cnnkit.config import CalibrateConfig, EvaluateConfig, ExportConfig, TrainConfig
from cnnkit.deploy.onnx import export_run
from cnnkit.errors import CnnkitError
from cnnkit.evaluate.report import evaluate_run
from cnnkit.evaluate.temperature import calibrate_run, fit_temperature
from cnnkit.rundir import RunDir
from cnnkit.runtime.exports import export_status
from cnnkit.runtime.fitted import run_threshold
from cnnkit.runtime.model import load_run_model
from cnnkit.serving.runtime import ModelRepository
from cnnkit.training.fit import resume_config, train


def test_the_fitted_temperature_is_the_one_that_drew_the_labels() -> None:
    """Labels drawn from softmax(z / 2.5): the likelihood is highest at T = 2.5, and accuracy is untouched by T."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 5, generator=generator) * 4
    labels = torch.multinomial((logits / 2.5).softmax(dim=1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)
    over_confident = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    assert fit_temperature(logits, over_confident) == pytest.approx(1.0, rel=0.05)


def _noisy_binary(n_per_class: int, seed: int, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Circles against squares with `noise` of the labels flipped: a model that fits them is over-confident."""
    x, y = make_shapes(n_per_class, seed=seed)
    keep = y != 1
    x, y = x[keep], (y[keep] == 2).astype(np.int64)
    flip = np.random.default_rng(seed + 100).random(len(y)) < noise
    return x, np.where(flip, 1 - y, y)


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simple-cnn on 400 noisy-labelled images (120 of them the validation split), 200 test images; a threshold
    chosen for 10% FPR; exported."""
    x_train, y_train = _noisy_binary(200, seed=1)
    x_test, y_test = _noisy_binary(100, seed=2)
    root = tmp_path_factory.mktemp("noisy")
    np.savez(root / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["legitimate", "phishing"]))
    run = root / "run"
    train(TrainConfig(data=f"npz:{root / 'data.npz'}", out=run, epochs=12, val_split=0.3, batch_size=32, lr=3e-3,
                      precision="fp32", quiet=True, device="cpu"))
    evaluate_run(EvaluateConfig(run=run, target_fpr=0.1))
    export_run(ExportConfig(run=run))
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_calibrating_changes_the_probabilities_everywhere_and_nothing_else(noisy_run: Path, tmp_path: Path) -> None:
    run = _copy(noisy_run, tmp_path)
    before_metrics = json.loads((run / "metrics.json").read_text())
    before_threshold = json.loads((run / "threshold.json").read_text())
    raw = load_run_model(run, device="cpu")
    images = _noisy_binary(20, seed=7)[0]
    raw_probs = raw.probabilities(images)

    result = calibrate_run(CalibrateConfig(run=run, device="cpu"))
    stored = json.loads((run / "temperature.json").read_text())
    assert stored["temperature"] == pytest.approx(result.temperature) and result.images == 120
    assert stored["weights_sha256"] == RunDir(run).manifest()["model.safetensors"]["sha256"]
    assert "temperature.json" in RunDir(run).manifest()
    # The fit lowers the held-out log loss (it is what is minimised) and moves T away from 1 on these labels.
    assert result.after["log_loss"] < result.before["log_loss"] and abs(result.temperature - 1) > 0.02

    # The run's probabilities are now softmax(logits / T): the same ranking, so the same answers.
    calibrated = load_run_model(run, device="cpu")
    assert calibrated.settings.temperature == pytest.approx(result.temperature)
    probs = calibrated.probabilities(images)
    logits = torch.from_numpy(raw_probs).log()  # log-softmax: the logits up to a constant per row
    assert probs == pytest.approx((logits / result.temperature).softmax(dim=1).numpy(), abs=1e-5)
    assert (probs.argmax(axis=1) == raw_probs.argmax(axis=1)).all()

    # metrics.json was evaluated again with T: accuracy and AUC unchanged, the calibration figures are T's.
    after_metrics = json.loads((run / "metrics.json").read_text())
    assert after_metrics["temperature"] == pytest.approx(result.temperature)
    assert after_metrics["accuracy"] == before_metrics["accuracy"]
    assert after_metrics["binary"]["roc_auc"] == pytest.approx(before_metrics["binary"]["roc_auc"], abs=1e-9)
    assert after_metrics["calibration"]["log_loss"] != before_metrics["calibration"]["log_loss"]

    # The threshold was chosen again on the new scale: another number, the same operating point.
    threshold = json.loads((run / "threshold.json").read_text())
    assert threshold["threshold"] != pytest.approx(before_threshold["threshold"], abs=1e-4)
    assert (threshold["val_fpr"], threshold["val_tpr"]) == (before_threshold["val_fpr"], before_threshold["val_tpr"])

    # The export made before is stale; made again, its graph divides by T and matches PyTorch.
    assert export_status(run) == "stale"
    export_run(ExportConfig(run=run))
    assert export_status(run) == "current"
    info = json.loads((run / "export" / "export.json").read_text())
    assert info["temperature"]["temperature"] == pytest.approx(result.temperature)
    session = ort.InferenceSession(str(run / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_probs = session.run(None, {"images": images.astype(np.float32)})[0]
    assert onnx_probs == pytest.approx(probs, abs=1e-5)
    # The server (ONNX Runtime, no torch) serves that graph and says which temperature it holds.
    repository = ModelRepository(threads=1)
    repository.add_path(run, name="noisy")
    assert repository.get("noisy").resolve().temperature == pytest.approx(result.temperature)

    # --reset: the plain softmax again, threshold and metrics with it.
    calibrate_run(CalibrateConfig(run=run, device="cpu", reset=True))
    assert not (run / "temperature.json").exists() and "temperature.json" not in RunDir(run).manifest()
    assert load_run_model(run, device="cpu").probabilities(images) == pytest.approx(raw_probs, abs=1e-6)
    assert "temperature" not in json.loads((run / "metrics.json").read_text())
    assert json.loads((run / "threshold.json").read_text())["threshold"] == pytest.approx(
        before_threshold["threshold"], abs=1e-6)


def test_a_temperature_for_other_weights_is_refused_and_training_removes_it(shapes_npz: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train(TrainConfig(data=f"npz:{shapes_npz}", out=run, epochs=1, batch_size=32, lr=3e-3, quiet=True, device="cpu"))
    current = RunDir(run).manifest()["model.safetensors"]["sha256"]
    RunDir(run).write_json("temperature.json", {"temperature": 1.5, "weights_sha256": current})
    assert load_run_model(run, device="cpu").settings.temperature == 1.5
    RunDir(run).write_json("temperature.json", {"temperature": 1.5, "weights_sha256": "0" * 64})
    with pytest.raises(CnnkitError, match=r"temperature.json was fitted for weights 000000000000, but .* fit it "
                                          r"again with `cnnkit calibrate"):
        load_run_model(run, device="cpu")
    RunDir(run).write_json("threshold.json", {"positive": "square", "threshold": 0.7, "weights_sha256": "0" * 64})
    with pytest.raises(CnnkitError, match=r"threshold.json was fitted for weights .* `cnnkit evaluate \S+ --target"):
        run_threshold(run)

    # A resumed run that finds better weights (val_loss improves after epoch 1 on this data) takes out what was
    # fitted for the old ones, saying so, and evaluates its test split without it.
    RunDir(run).write_json("temperature.json", {"temperature": 1.5, "weights_sha256": current})
    RunDir(run).write_json("threshold.json", {"positive": "square", "threshold": 0.7, "weights_sha256": current})
    capsys.readouterr()
    train(resume_config(run, epochs=4, quiet=False))
    assert RunDir(run).manifest()["model.safetensors"]["sha256"] != current
    said = capsys.readouterr().out
    assert "Removed temperature.json: it was fitted for earlier weights" in said and "Removed threshold.json" in said
    assert not (run / "temperature.json").exists() and "temperature.json" not in RunDir(run).manifest()
    assert not (run / "threshold.json").exists()
    assert "temperature" not in json.loads((run / "metrics.json").read_text())
    assert load_run_model(run, device="cpu").settings.temperature == 1.0


def test_calibrating_refuses_too_few_images_and_the_runs_own_data(noisy_run: Path, tmp_path: Path) -> None:
    run = _copy(noisy_run, tmp_path)
    data = f"npz:{noisy_run.parent / 'data.npz'}"
    with pytest.raises(CnnkitError, match="is the run's own data"):
        calibrate_run(CalibrateConfig(run=run, device="cpu", data=data))
    x, y = _noisy_binary(30, seed=9)
    np.savez(tmp_path / "few.npz", x=x, y=y, class_names=np.array(["legitimate", "phishing"]))
    with pytest.raises(CnnkitError, match=r"has 60 images; fitting a temperature takes at least 100"):
        calibrate_run(CalibrateConfig(run=run, device="cpu", data=f"npz:{tmp_path / 'few.npz'}"))
    assert not (run / "temperature.json").exists()
    with pytest.raises(CnnkitError, match="--reset fits nothing"):
        CalibrateConfig(run=run, reset=True, data=data)


def test_the_cli_says_what_it_fitted_and_what_it_changed(noisy_run: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    run = _copy(noisy_run, tmp_path)
    done = subprocess.run([sys.executable, "-m", "cnnkit", "calibrate", str(run), "--device", "cpu"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    temperature = json.loads((run / "temperature.json").read_text())["temperature"]
    assert (f"Temperature {temperature:.4f}, fitted on the validation split (120 images) (rough: under 1000 images): "
            "log loss") in done.stdout
    assert "Test split evaluated again" in done.stdout
    assert "Decision threshold chosen again for --target-fpr 0.1" in done.stdout
    assert "the same operating point" in done.stdout
    assert f"`cnnkit export {run}` again" in done.stdout


def test_a_prediction_file_is_not_resumed_under_another_temperature(noisy_run: Path, tmp_path: Path) -> None:
    """Rows written before `cnnkit calibrate` state other probabilities than rows written after: one file must
    not hold both."""
    from PIL import Image

    import cnnkit

    run = _copy(noisy_run, tmp_path)
    (tmp_path / "pages").mkdir()
    for i, image in enumerate(_noisy_binary(3, seed=11)[0]):
        Image.fromarray(image).save(tmp_path / "pages" / f"{i}.png")
    output = tmp_path / "out.csv"
    assert cnnkit.load(run, device="cpu").predict_to_file(tmp_path / "pages", output) == 0
    calibrate_run(CalibrateConfig(run=run, device="cpu"))
    with pytest.raises(CnnkitError, match=r"out.csv was written with another temperature, threshold"):
        cnnkit.load(run, device="cpu").predict_to_file(tmp_path / "pages", output, resume=True)

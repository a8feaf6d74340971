import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cnnkit.config import ScheduleConfig, TrainConfig
from cnnkit.errors import CnnkitError
from cnnkit.rundir import RunDir
from cnnkit.training.callbacks import BestTracker, Callback
from cnnkit.training.fit import train

ARTIFACTS = ["config.json", "classes.json", "preprocess.json", "data.json", "model.safetensors", "last.safetensors",
             "checkpoint.safetensors", "history.json", "history.csv", "metrics.json", "learning_curves.png",
             "confusion_matrix.png", "confusion_matrix.json", "calibration.png", "predictions.csv", "report.html",
             "manifest.json"]


def small_config(data: Path, out: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(data=f"npz:{data}", out=out, epochs=3, batch_size=32, lr=3e-3, val_split=0.2, quiet=True,
                       device="cpu", top_k=2)
    return replace(base, **changes)


def test_training_learns_and_writes_the_whole_run_directory(shapes_npz: Path, tmp_path: Path) -> None:
    result = train(small_config(shapes_npz, tmp_path / "run", epochs=6))
    run = RunDir.open(tmp_path / "run")
    for name in ARTIFACTS:
        assert run.exists(name), name
    mistakes = {"mistakes.png"} if result.metrics["accuracy"] < 1 else set()  # the test images it got wrong
    assert set(run.manifest()) == set(ARTIFACTS) - {"manifest.json"} | mistakes
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "accuracy", "top2_accuracy", "val_loss", "val_accuracy", "lr", "time_s"} <= set(history[0])
    assert history[-1]["loss"] < history[0]["loss"]
    # chance is 1/3 on three balanced classes
    assert result.metrics["accuracy"] > 0.6
    assert result.metrics["num_samples"] == 60
    assert json.loads((tmp_path / "run" / "preprocess.json").read_text())["input_size"] == 32
    rows = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "index,file,label,predicted,probability,correct" and len(rows) == 1 + 60
    assert sum(row.endswith(",1") for row in rows[1:]) == round(result.metrics["accuracy"] * 60)


def test_existing_run_needs_overwrite(shapes_npz: Path, tmp_path: Path) -> None:
    config = small_config(shapes_npz, tmp_path / "run", epochs=1)
    train(config)
    with pytest.raises(CnnkitError, match="already holds a run; pass --overwrite"):
        train(config)
    train(replace(config, overwrite=True))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep me")
    with pytest.raises(CnnkitError, match="not a cnnkit run"):
        train(replace(config, out=tmp_path / "other", overwrite=True))
    assert (tmp_path / "other" / "precious.txt").exists()


def test_resume_continues_to_the_same_history_as_an_uninterrupted_run(shapes_npz: Path, tmp_path: Path) -> None:
    full = train(small_config(shapes_npz, tmp_path / "full", epochs=3))
    train(small_config(shapes_npz, tmp_path / "part", epochs=2))
    resumed = train(small_config(shapes_npz, tmp_path / "part", epochs=3, resume=True))
    assert len(resumed.history) == 3
    for a, b in zip(full.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"])
    w_full, _ = RunDir.open(tmp_path / "full").read_tensors("last.safetensors")
    w_part, _ = RunDir.open(tmp_path / "part").read_tensors("last.safetensors")
    assert all(torch.allclose(w_full[k], w_part[k], atol=1e-6) for k in w_full)


def test_mixup_and_cutmix_train_say_so_and_resume_to_the_same_history(shapes_npz: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    full = train(small_config(shapes_npz, tmp_path / "full", epochs=3, mixup=0.4, cutmix=1.0, quiet=False))
    printed = capsys.readouterr().out
    assert "Mixing: MixUp alpha 0.4 and CutMix alpha 1 (one of the two per batch)" in printed
    assert "(on MixUp/CutMix-blended images)" in printed
    plain = train(small_config(shapes_npz, tmp_path / "plain", epochs=3))
    assert all(math.isfinite(row["loss"]) for row in full.history)
    assert [row["loss"] for row in full.history] != [row["loss"] for row in plain.history]
    train(small_config(shapes_npz, tmp_path / "part", epochs=2, mixup=0.4, cutmix=1.0))
    resumed = train(small_config(shapes_npz, tmp_path / "part", epochs=3, mixup=0.4, cutmix=1.0, resume=True))
    for a, b in zip(full.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_plateau_schedule_lowers_the_learning_rate(shapes_npz: Path, tmp_path: Path) -> None:
    # so small an lr barely moves the loss (less than the 1e-4 relative threshold), so val_loss plateaus
    schedule = ScheduleConfig(name="plateau", factor=0.5, patience=1, monitor="val_loss")
    result = train(small_config(shapes_npz, tmp_path / "run", epochs=4, lr=1e-7, schedule=schedule))
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == 1e-7 and lrs[-1] < lrs[0]


@pytest.mark.parametrize("name", ["cosine", "onecycle"])
def test_per_batch_schedules_change_the_lr_each_epoch(shapes_npz: Path, tmp_path: Path, name: str) -> None:
    schedule = ScheduleConfig(name=name, warmup_epochs=1)
    result = train(small_config(shapes_npz, tmp_path / "run", epochs=3, schedule=schedule))
    lrs = [row["lr"] for row in result.history]
    assert len(set(lrs)) == 3


def test_early_stopping_stops_and_keeps_the_best_weights(shapes_npz: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # A huge learning rate makes training diverge after the first epochs, so the best epoch comes early.
    config = small_config(shapes_npz, tmp_path / "run", epochs=12, lr=0.5, optimizer="sgd", early_stopping=2,
                          schedule=ScheduleConfig(monitor="val_accuracy"), precision="fp32")  # bf16 turns it to NaN
    result = train(replace(config, quiet=False))
    best = result.metrics["best_epoch"]
    assert len(result.history) == best + 2
    # The closing lines say which epoch each accuracy belongs to: the test's is the best epoch's weights.
    printed = capsys.readouterr().out
    assert f"; epoch {best}'s weights: the best val_accuracy)" in printed
    assert f"(epoch {best + 2}, measured while it trained)" in printed
    run = RunDir.open(tmp_path / "run")
    best_weights, meta = run.read_tensors("model.safetensors")
    assert meta["epoch"] == str(best)
    # Resumed for more epochs, a run that stopped early trains none (it would stop again at once), and says so.
    again = train(replace(config, epochs=20, resume=True, quiet=False))
    assert [row["epoch"] for row in again.history] == [row["epoch"] for row in result.history]
    assert "Early stopping ended this run after epoch" in capsys.readouterr().out


def test_best_tracker_modes() -> None:
    loss = BestTracker(monitor="val_loss", patience=2)
    assert loss.update(1, 1.0) and not loss.update(2, 1.5) and loss.update(3, 0.5)
    acc = BestTracker(monitor="val_accuracy")
    assert acc.update(1, 0.5) and acc.update(2, 0.6) and not acc.update(3, 0.55)
    assert not loss.should_stop
    loss.update(4, 0.9), loss.update(5, 0.9)
    assert loss.should_stop


def test_weight_averaging_is_what_gets_saved_and_resumed(shapes_npz: Path, tmp_path: Path) -> None:
    config = small_config(shapes_npz, tmp_path / "run", epochs=2, ema_decay=0.9, tta="flip")
    train(config)
    run = RunDir.open(tmp_path / "run")
    saved, _ = run.read_tensors("last.safetensors")
    checkpoint, _ = run.read_tensors("checkpoint.safetensors")
    raw = {k[len("model."):]: v for k, v in checkpoint.items() if k.startswith("model.")}
    averaged = {k[len("ema.module."):]: v for k, v in checkpoint.items() if k.startswith("ema.module.")}
    assert set(saved) == set(raw) == set(averaged)
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved if saved[k].is_floating_point())
    resumed = train(small_config(shapes_npz, tmp_path / "run", epochs=3, resume=True))
    full = train(replace(config, out=tmp_path / "full", epochs=3))
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-5)


def test_recipe_fills_defaults_and_explicit_flags_win() -> None:
    from cnnkit.cli import build_parser, train_config_from_args

    parse = build_parser().parse_args
    config = train_config_from_args(parse(["train", "cifar10", "--recipe", "cifar-fast", "--epochs", "3"]))
    assert (config.model, config.epochs, config.batch_size, config.optimizer) == ("cifar-fast-net", 3, 1024, "sgd")
    assert (config.tta, config.lookahead_steps, config.norm_lr_scale, config.schedule.name) == ("flip-shift", 5,
                                                                                                 64.0, "linear")
    plain = train_config_from_args(parse(["train", "cifar10"]))
    assert (plain.model, plain.epochs, plain.batch_size, plain.tta, plain.lookahead_steps) == ("simple-cnn", 10, 64,
                                                                                               "none", 0)
    mine = train_config_from_args(parse(["train", "cifar10", "--recipe", "cifar-fast", "--batch-size", "256",
                                         "--scheduler", "cosine"]))
    assert mine.batch_size == 256 and mine.schedule.name == "cosine" and mine.lr == 1.5


def test_the_fast_recipe_whitens_its_stem_from_the_training_images(fast_run: Path, shapes_npz: Path) -> None:
    import numpy as np
    import torch.nn.functional as F

    from cnnkit.runtime.model import load_run_model

    classifier = load_run_model(fast_run, device="cpu")
    images = torch.from_numpy(np.load(shapes_npz)["x_train"]).permute(0, 3, 1, 2)
    out = F.conv2d(classifier.preprocess(images), classifier.model.whiten.weight.float())
    half = out.shape[1] // 2
    flat = out[:, :half].permute(0, 2, 3, 1).reshape(-1, half)
    covariance = flat.T @ flat / len(flat)
    off_diagonal = covariance - torch.diag(covariance.diag())
    assert off_diagonal.abs().max() < 0.1 and covariance.diag()[:4].sub(1).abs().max() < 0.1
    history = json.loads((fast_run / "history.json").read_text())
    assert all(np.isfinite(row["loss"]) for row in history)


def test_lookahead_runs_resume_exactly(shapes_npz: Path, tmp_path: Path) -> None:

    # 192 training images in batches of 32: 6 steps an epoch, so pulls every 4 steps fall mid-epoch too.
    config = small_config(shapes_npz, tmp_path / "full", lookahead_steps=4, optimizer="sgd", lr=0.05)
    full = train(config)
    plain = train(replace(config, out=tmp_path / "plain", lookahead_steps=0))
    assert plain.history[-1]["val_loss"] != pytest.approx(full.history[-1]["val_loss"], rel=1e-4)

    class Interrupt(Callback):
        def on_epoch_start(self, trainer: object, epoch: int) -> None:
            if epoch == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(replace(config, out=tmp_path / "cut"), callbacks=[Interrupt()])
    resumed = train(small_config(shapes_npz, tmp_path / "cut", resume=True))
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-5)


def test_resuming_a_run_killed_before_its_first_save_starts_it_over(shapes_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.json.123.tmp").write_text('{"half": ')  # what a writer killed mid-write leaves
    result = train(small_config(shapes_npz, out, epochs=2, resume=True))
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert not list(out.glob(".*.tmp")) and (out / "config.json").is_file()
    with pytest.raises(CnnkitError, match="other: no such file or directory"):
        train(small_config(shapes_npz, tmp_path / "other", resume=True))


def test_pretrained_runs_train_on_images_decoded_as_evaluation_decodes_them(shapes_tree: Path, tmp_path: Path) -> None:
    """Pretrained weights bring their interpolation (timm's ResNet-18: bicubic), which the run's preprocess.json
    keeps for evaluation, prediction and serving; the training data must be decoded with it too, not with the
    default (bilinear) the data was once loaded with before the weights were known."""
    import timm
    from safetensors.torch import save_file

    from cnnkit.runtime.parallel import SINGLE_PROCESS
    from cnnkit.training.fit import Trainer

    save_file(timm.create_model("resnet18", num_classes=1000).state_dict(), tmp_path / "base.safetensors")
    config = TrainConfig(data=f"folder:{shapes_tree}", out=tmp_path / "run", model="timm/resnet18",
                         weights=tmp_path / "base.safetensors", input_size=24, epochs=1, quiet=True, device="cpu")
    trainer = Trainer.prepare(config, SINGLE_PROCESS)
    assert trainer.preprocess.interpolation == "bicubic"
    files = sorted(p for p in (shapes_tree / "test").rglob("*") if p.is_file())
    decoded = sorted(trainer.preprocess.load(p).tobytes() for p in files)  # as `cnnkit evaluate` reads them
    trained = sorted(image.permute(1, 2, 0).numpy().tobytes() for image in trainer.data.test.images)
    assert trained == decoded


def test_a_pretrained_run_resumes_without_its_weights_file(shapes_npz: Path, tmp_path: Path) -> None:
    """The checkpoint holds every weight: a run started from --weights FILE resumes (to the same history as one
    uninterrupted run) after that file was moved away; it needed the file before."""
    import timm
    from safetensors.torch import save_file

    save_file(timm.create_model("test_resnet").state_dict(), tmp_path / "base.safetensors")  # a small ResNet
    config = small_config(shapes_npz, tmp_path / "full", model="timm/test_resnet",
                          weights=tmp_path / "base.safetensors", freeze_base=True, epochs=1, finetune_epochs=1)
    full = train(config)
    train(replace(config, out=tmp_path / "part", finetune_epochs=0))
    (tmp_path / "base.safetensors").rename(tmp_path / "moved.safetensors")
    resumed = train(replace(config, out=tmp_path / "part", resume=True))
    assert [row["loss"] for row in resumed.history] == pytest.approx([row["loss"] for row in full.history], rel=1e-5)
    saved = json.loads((tmp_path / "part" / "config.json").read_text())
    assert saved["weights_source"] == str(tmp_path / "base.safetensors")


def test_fp16_training_scales_the_loss_and_resumes_exactly(shapes_npz: Path, tmp_path: Path) -> None:
    """--precision fp16 (what auto picks on T4/V100 GPUs; on this CPU only when asked for): the loss is scaled for
    backward (torch.amp.GradScaler), the scale is in the history and the checkpoint, a resumed run continues to the
    same history, and it learns."""
    # LeNet-5: fp16 convolutions on a CPU are emulated, slowly; the scaler's logic is the same for any network.
    config = small_config(shapes_npz, tmp_path / "full", precision="fp16", epochs=4, model="lenet5")
    full = train(config)
    scales = [row["loss_scale"] for row in full.history]  # 2^16 at first, halved after each overflowing step
    assert all(scale in {2.0**k for k in range(17)} for scale in scales) and scales == sorted(scales, reverse=True)
    assert full.history[-1]["loss"] < full.history[0]["loss"] and full.metrics["accuracy"] > 0.5
    train(replace(config, out=tmp_path / "part", epochs=2))
    resumed = train(replace(config, out=tmp_path / "part", epochs=4, resume=True))
    for a, b in zip(full.history, resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["loss_scale"] == b["loss_scale"]
    saved = json.loads((tmp_path / "part" / "config.json").read_text())
    assert saved["precision_used"] == {"train": "fp16"}


def test_the_test_figures_are_measured_in_fp32_whatever_the_training_precision(
        shapes_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluate, predict, export and serve run the saved weights in fp32; the test figures training writes must be
    theirs too (measured in bf16, they once said 0.333 where `cnnkit evaluate` said 0.25 on the same 12 images)."""
    import cnnkit.training.fit as fit

    seen = []

    def recording(*args: object, settings: object, **kwargs: object) -> dict:
        seen.append(settings.precision)  # type: ignore[attr-defined]
        return evaluate_model(*args, settings=settings, **kwargs)

    evaluate_model = fit.evaluate_model
    monkeypatch.setattr(fit, "evaluate_model", recording)
    result = train(small_config(shapes_npz, tmp_path / "run", precision="bf16", epochs=1))
    assert seen == ["fp32"] and json.loads((tmp_path / "run" / "config.json").read_text())["precision_used"] == {
        "train": "bf16"}
    from cnnkit.config import EvaluateConfig
    from cnnkit.evaluate.report import evaluate_run

    again = evaluate_run(EvaluateConfig(run=tmp_path / "run"))
    assert again["accuracy"] == result.metrics["accuracy"] and again["per_class"] == result.metrics["per_class"]


def test_early_stopping_ends_the_head_phase_and_fine_tuning_starts_from_the_best_weights(
        shapes_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--early-stopping with --finetune-epochs: the head phase stopping early used to end the whole run, so the
    fine-tuning asked for never ran. Each phase has its own patience; fine-tuning starts from the best head weights
    (Keras: restore_best_weights), also when a run stopped there is resumed with fine-tuning added."""
    import timm
    from safetensors.torch import save_file

    import cnnkit.training.fit as fit

    save_file(timm.create_model("test_resnet").state_dict(), tmp_path / "base.safetensors")  # a small ResNet
    config = small_config(shapes_npz, tmp_path / "full", model="timm/test_resnet",
                          weights=tmp_path / "base.safetensors", input_size=32, freeze_base=True, epochs=8, lr=0.5,
                          optimizer="sgd", finetune_epochs=2, finetune_lr=1e-4, early_stopping=2,
                          schedule=ScheduleConfig(monitor="val_accuracy"), precision="fp32")
    started_from: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []

    class Recording(Callback):
        def on_phase_start(self, trainer: fit.Trainer, phase: fit.Phase) -> None:
            if phase.name == "finetune" and trainer.run is not None:
                best, _ = trainer.run.read_tensors("model.safetensors")
                started_from.append(({k: v.clone() for k, v in trainer.net.state_dict().items()}, best))

    full = train(replace(config, quiet=False), callbacks=[Recording()])
    epochs = [row["epoch"] for row in full.history]
    stopped = max(e for e in epochs if e <= 8)
    assert stopped < 8 and epochs[-2:] == [9, 10], epochs  # the head stopped early; both fine-tuning epochs ran
    assert "Early stopping of the head phase: no improvement in val_accuracy for 2 epochs" in capsys.readouterr().out
    (weights, best), = started_from
    assert all(torch.equal(weights[k], best[k]) for k in best)  # not the last head epoch's
    train(replace(config, out=tmp_path / "part", finetune_epochs=0))  # stops in the head phase, the run's last
    resumed = train(replace(config, out=tmp_path / "part", resume=True))
    assert [row["epoch"] for row in resumed.history] == epochs
    assert [row["loss"] for row in resumed.history] == pytest.approx([row["loss"] for row in full.history], rel=1e-5)

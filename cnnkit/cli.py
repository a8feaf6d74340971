"""The command line: each subcommand parses its flags into a typed config and calls one library function."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from cnnkit import __version__
from cnnkit.config import (
    RECIPES,
    CaptureConfig,
    DemoConfig,
    EvaluateConfig,
    ExplainConfig,
    ExportConfig,
    PredictConfig,
    PreviewConfig,
    ScheduleConfig,
    ServeConfig,
    TrainConfig,
)
from cnnkit.data.augment import parse_augment
from cnnkit.errors import CnnkitError

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.handler(args)
    except CnnkitError as exc:
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnkit",
                                     description="Train, evaluate, export and serve CNN image classifiers.")
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_models, _add_summary, _add_train, _add_evaluate, _add_predict, _add_compare,
                _add_augment_preview, _add_export, _add_serve, _add_explain, _add_capture, _add_demo):
        add(commands)
    return parser


def _command(commands: argparse._SubParsersAction, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(handler=handler)
    return sub


# models / summary -----------------------------------------------------------------------------------------------
def _add_models(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "models", _run_models, "list the registered models")
    sub.add_argument("--timm", metavar="PATTERN", nargs="?", const="*", help="list timm models matching PATTERN")


def _run_models(args: argparse.Namespace) -> int:
    from cnnkit.models import MODELS, count_params, create_model

    if args.timm:
        import timm

        print("\n".join(f"timm/{name}" for name in timm.list_models(args.timm)))
        return 0
    print(f"{'name':<22}{'params':>14}{'input':>8}  description")
    for name, entry in MODELS.items():
        params = sum(count_params(create_model(name, num_classes=10)))
        print(f"{name:<22}{params:>14,}{entry.input_size:>8}  {entry.description}")
    print("\nParameter counts are for 10 classes. Any timm model also works as timm/NAME.")
    return 0


def _add_summary(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "summary", _run_summary, "print a Keras-style layer table of a model")
    sub.add_argument("model")
    sub.add_argument("--input-size", type=int, help="input side in pixels (default: the model's)")
    sub.add_argument("--num-classes", type=int, default=10)


def _run_summary(args: argparse.Namespace) -> int:
    from cnnkit.models import create_model, default_input_size, summary

    size = args.input_size or default_input_size(args.model)
    model = create_model(args.model, num_classes=args.num_classes, input_size=size)
    print(summary(model, input_size=size, name=args.model))
    return 0


# train ----------------------------------------------------------------------------------------------------------
def _add_train(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "train", _run_train, "train a model and write a run directory")
    sub.add_argument("data", nargs="?", help="cifar10 | folder:PATH | npz:PATH (not needed with --resume)")
    sub.add_argument("--out", type=Path, help="run directory (default: runs/MODEL)")
    sub.add_argument("--model", default="simple-cnn")
    sub.add_argument("--data-dir", type=Path, help="where the data source's files are (cifar10: train.npz, test.npz)")
    sub.add_argument("--epochs", type=int, help="default 10; with --resume: the saved run's, or more to extend it")
    sub.add_argument("--batch-size", type=int, default=64)
    sub.add_argument("--lr", type=float, default=1e-3)
    sub.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam")
    sub.add_argument("--weight-decay", type=float, default=0.0)
    sub.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (Nesterov)")
    sub.add_argument("--norm-lr-scale", type=float, default=1.0,
                     help="normalisation layers train at this multiple of the LR (their weight decay divided by it)")
    sub.add_argument("--label-smoothing", type=float, default=0.0)
    sub.add_argument("--val-split", type=float, default=0.1, help="fraction of training data held out (0: none)")
    sub.add_argument("--test-split", type=float, default=0.2, help="folder trees without test/: fraction for test")
    sub.add_argument("--input-size", type=int, help="input side in pixels (default: the model's)")
    sub.add_argument("--normalize", choices=("auto", "dataset", "unit", "imagenet"), default="auto",
                     help="auto: dataset mean/std; unit: pixels/255 only")
    sub.add_argument("--resize", choices=("squash", "center-crop", "top-crop"), default="squash")
    sub.add_argument("--top-k", type=int, default=3)
    sub.add_argument("--augment", default="none", metavar="POLICY",
                     help="none | standard | screenshot | a spec like flip,rotate=0.1,zoom=0.1,contrast=0.1")
    sub.add_argument("--pretrained", action="store_true", help="start from ImageNet weights")
    sub.add_argument("--weights", type=Path, help="pretrained weights file (.safetensors or .pth state dict)")
    sub.add_argument("--freeze-base", action="store_true", help="train a new head on the frozen pretrained base")
    sub.add_argument("--head-hidden", type=int, default=128, help="units of the new head's hidden layer (0: none)")
    sub.add_argument("--head-dropout", type=float, default=0.3)
    sub.add_argument("--finetune-epochs", type=int, default=0,
                     help="then train this many epochs with the base unfrozen")
    sub.add_argument("--finetune-lr", type=float, default=1e-5)
    sub.add_argument("--unfreeze", default="all", help="for fine-tuning: all | last-K (blocks of the base)")
    sub.add_argument("--scheduler", choices=("none", "plateau", "cosine", "onecycle", "linear"), default="none")
    sub.add_argument("--warmup-epochs", type=float, default=0.0)
    sub.add_argument("--monitor", default="val_loss", help="history key for best epoch, plateau, early stopping")
    sub.add_argument("--plateau-factor", type=float, default=0.1)
    sub.add_argument("--plateau-patience", type=int, default=2)
    sub.add_argument("--min-lr", type=float, default=0.0)
    sub.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE", help="epochs; 0 = off")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    sub.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    sub.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    sub.add_argument("--strict", action="store_true", help="stop on unreadable images instead of skipping them")
    sub.add_argument("--workers", type=int, default=4, help="threads decoding image files")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    sub.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    sub.add_argument("--quiet", action="store_true")
    sub.add_argument("--recipe", choices=sorted(RECIPES), help="a preset for the flags left at their defaults")
    sub.add_argument("--ema-decay", type=float, default=0.0, help="keep a moving average of the weights (per step)")
    sub.add_argument("--lookahead-steps", type=int, default=0, metavar="K",
                     help="lookahead weight averaging every K steps (0: off)")
    sub.add_argument("--tta", nargs="?", const="flip", default="none", choices=("none", "flip", "flip-shift"),
                     help="test-time augmentation in evaluation, prediction and export (--tta alone: flip)")
    sub.set_defaults(parser=sub)
    sub.add_argument("--test-every-epoch", action="store_true",
                     help="also evaluate the test split each epoch (reported only; weights are picked on validation)")
    sub.add_argument("--nproc", type=int, default=1,
                     help="data-parallel processes on this machine (launches torchrun); see README for multi-node")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.resume and args.out is None:
        raise CnnkitError("--resume needs --out RUN")
    if not args.resume and not args.data:
        raise CnnkitError("no data source given (cifar10, folder:PATH or npz:PATH)")
    epochs = args.epochs if args.epochs is not None else (0 if args.resume else 10)
    if args.epochs is not None and args.epochs < 1:
        raise CnnkitError("--epochs must be at least 1")
    for flag in ("batch_size", "top_k"):
        if getattr(args, flag) < 1:
            raise CnnkitError(f"--{flag.replace('_', '-')} must be at least 1")
    if not 0.0 <= args.val_split < 1.0:
        raise CnnkitError("--val-split must be in [0, 1)")
    if args.norm_lr_scale <= 0 or args.lookahead_steps < 0 or not 0.0 <= args.momentum < 1.0:
        raise CnnkitError("--norm-lr-scale must be > 0, --lookahead-steps >= 0, --momentum in [0, 1)")
    parse_augment(args.augment)  # fail on a bad spec before any data is loaded
    if args.finetune_epochs and not args.freeze_base:
        raise CnnkitError("--finetune-epochs needs --freeze-base (a pretrained base with a new head)")
    if args.freeze_base and not (args.pretrained or args.weights):
        raise CnnkitError("--freeze-base needs --pretrained or --weights PATH")
    schedule = ScheduleConfig(name=args.scheduler, warmup_epochs=args.warmup_epochs, monitor=args.monitor,
                              factor=args.plateau_factor, patience=args.plateau_patience, min_lr=args.min_lr)
    config = TrainConfig(
        data=args.data or "", out=args.out or Path("runs") / args.model.replace("/", "_"), model=args.model,
        data_dir=args.data_dir, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
        optimizer=args.optimizer, weight_decay=args.weight_decay, momentum=args.momentum,
        norm_lr_scale=args.norm_lr_scale, lookahead_steps=args.lookahead_steps, label_smoothing=args.label_smoothing,
        val_split=args.val_split, test_split=args.test_split, input_size=args.input_size, normalize=args.normalize,
        resize=args.resize, top_k=args.top_k, augment=args.augment, pretrained=args.pretrained or bool(args.weights),
        weights=args.weights, freeze_base=args.freeze_base, head_hidden=args.head_hidden,
        head_dropout=args.head_dropout, finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
        unfreeze=args.unfreeze, schedule=schedule, early_stopping=args.early_stopping, seed=args.seed,
        device=args.device, precision=args.precision, channels_last=args.channels_last, strict=args.strict,
        overwrite=args.overwrite, resume=args.resume, workers=args.workers, quiet=args.quiet,
        test_every_epoch=args.test_every_epoch, ema_decay=args.ema_decay, tta=args.tta,
    )
    return _apply_recipe(config, args) if args.recipe else config


def _apply_recipe(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """The recipe's values for every setting the user left at its default; explicit flags win."""
    recipe = dict(RECIPES[args.recipe])
    flags = {"schedule": ("scheduler", "warmup_epochs", "monitor")}
    changes = {}
    for field, value in recipe.items():
        dests = flags.get(field, (field,))
        if all(getattr(args, d, None) == args.parser.get_default(d) for d in dests):
            changes[field] = value
    if "model" in changes and args.out is None:
        changes["out"] = Path("runs") / changes["model"]
    return replace(config, **changes)


def _run_train(args: argparse.Namespace) -> int:
    from cnnkit.train.distributed import launch_torchrun
    from cnnkit.train.fit import train

    config = train_config_from_args(args)
    if args.nproc > 1:
        return launch_torchrun(_without_option(args.argv, "--nproc"), nproc=args.nproc)
    train(config)
    return 0


def _without_option(argv: list[str], option: str) -> list[str]:
    """argv less `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == option:
            skip = True
        elif not token.startswith(option + "="):
            out.append(token)
    return out


# evaluate / predict ---------------------------------------------------------------------------------------------
def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "evaluate", _run_evaluate, "evaluate a run on its test data (or --data)")
    sub.add_argument("run", type=Path)
    sub.add_argument("--data", help="another data source with the same classes")
    sub.add_argument("--data-dir", type=Path)
    sub.add_argument("--top-k", type=int)
    sub.add_argument("--batch-size", type=int, default=256)
    sub.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    sub.add_argument("--target-fpr", type=float, help="binary: choose and store the threshold for this FPR")
    sub.add_argument("--positive", help="binary: the positive class (default: phishing, or the second class)")


def _run_evaluate(args: argparse.Namespace) -> int:
    from cnnkit.evaluate.metrics import format_table
    from cnnkit.evaluate.report import evaluate_run

    if args.target_fpr is not None and not 0.0 < args.target_fpr < 1.0:
        raise CnnkitError("--target-fpr must be between 0 and 1, e.g. 0.01")
    config = EvaluateConfig(run=args.run, data=args.data, data_dir=args.data_dir, top_k=args.top_k,
                            batch_size=args.batch_size, device=args.device, target_fpr=args.target_fpr,
                            positive=args.positive)
    metrics = evaluate_run(config)
    top_k = next(int(k[3:-9]) for k in metrics if k.startswith("top") and k.endswith("_accuracy"))
    print(format_table(metrics, top_k=top_k))
    extra = ", roc_pr.png" if "binary" in metrics else ""
    extra += ", threshold.json" if args.target_fpr is not None else ""
    print(f"Written: {args.run / 'metrics.json'}, confusion_matrix.png, confusion_matrix.json{extra}")
    return 0


def _add_predict(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "predict", _run_predict, "classify image files with a trained run")
    sub.add_argument("run", type=Path)
    sub.add_argument("images", type=Path, nargs="+")
    sub.add_argument("--top-k", type=int, default=3)
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _run_predict(args: argparse.Namespace) -> int:
    from cnnkit.predict import predict

    predictions = predict(PredictConfig(run=args.run, images=tuple(args.images), top_k=args.top_k, device=args.device))
    if args.json:
        print(json.dumps([{"image": p.path, "top": [{"label": label, "probability": round(score, 6)}
                                                    for label, score in p.top]}
                          for p in predictions], indent=2))
        return 0
    for p in predictions:
        print(p.path)
        for label, score in p.top:
            print(f"  {label:<20} {score:7.2%}")
    return 0


# compare / augment-preview --------------------------------------------------------------------------------------
def _add_compare(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "compare", _run_compare, "compare runs side by side (table and learning curves)")
    sub.add_argument("runs", type=Path, nargs="+")
    sub.add_argument("--out", type=Path, default=Path("compare.png"), help="PNG of the runs' learning curves")


def _run_compare(args: argparse.Namespace) -> int:
    from cnnkit.evaluate.compare import compare_runs

    print(compare_runs(runs=list(args.runs), plot_path=args.out))
    print(f"Learning curves: {args.out}")
    return 0


def _add_augment_preview(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "augment-preview", _run_augment_preview, "draw originals beside augmented samples")
    sub.add_argument("data")
    sub.add_argument("--augment", default="standard", metavar="POLICY")
    sub.add_argument("--data-dir", type=Path)
    sub.add_argument("--input-size", type=int, default=None, help="pixels (default: the images' own for arrays, 128)")
    sub.add_argument("--images", type=int, default=8, help="how many originals")
    sub.add_argument("--samples", type=int, default=4, help="augmented samples per original")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--out", type=Path, default=Path("augment.png"))


def _run_augment_preview(args: argparse.Namespace) -> int:
    from cnnkit.data.preview import augment_preview

    augment_preview(PreviewConfig(data=args.data, augment=args.augment, data_dir=args.data_dir,
                                  input_size=args.input_size, images=args.images, samples=args.samples,
                                  seed=args.seed, out=args.out))
    print(f"Written: {args.out}")
    return 0


# export / serve -------------------------------------------------------------------------------------------------
def _add_export(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "export", _run_export, "export a run to ONNX, checked against PyTorch")
    sub.add_argument("run", type=Path)
    sub.add_argument("--format", choices=("onnx",), default="onnx")
    sub.add_argument("--out", type=Path, help="export directory (default: RUN/export)")
    sub.add_argument("--opset", type=int, default=18)
    sub.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed probability difference")


def _run_export(args: argparse.Namespace) -> int:
    from cnnkit.export.onnx import export_run

    result = export_run(ExportConfig(run=args.run, out=args.out, format=args.format, opset=args.opset,
                                     tolerance=args.tolerance))
    print(f"Exported {result.path} in {result.seconds:.1f}s; "
          f"largest difference from PyTorch: {result.max_abs_diff:.2e} (tolerance {args.tolerance:g})")
    return 0


def _add_serve(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "serve", _run_serve, "serve models over the TensorFlow Serving REST API")
    sub.add_argument("paths", type=Path, nargs="*", help="run dirs, export dirs, or NAME/ dirs of VERSION/ subdirs")
    sub.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="serve PATH as NAME")
    sub.add_argument("--label", action="append", default=[], metavar="NAME:LABEL=VERSION",
                     help="point a version label at a version")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    sub.add_argument("--port", type=int, default=8501)
    sub.add_argument("--max-batch", type=int, default=32, help="images per ONNX Runtime call")
    sub.add_argument("--max-wait-ms", type=float, default=0.0,
                     help="extra wait for a fuller batch (0: run what is queued at once; batches form under load)")
    sub.add_argument("--max-queue", type=int, default=1024, help="waiting requests before answering 429")
    sub.add_argument("--max-body-mb", type=float, default=16.0)
    sub.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: one per core)")
    sub.add_argument("--lanes", type=int, default=0,
                     help="batches that may run at once under load, splitting the threads between them "
                          "(0: one per thread, at most 4; 1: every batch uses every thread)")
    sub.add_argument("--top-k", type=int, default=5, help="classes in a :classify answer")


def serve_config_from_args(args: argparse.Namespace) -> ServeConfig:
    named = []
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CnnkitError(f"--model {item!r}: expected NAME=PATH")
        named.append((name, Path(path)))
    labels = []
    for item in args.label:
        match = re.fullmatch(r"([^:=]+):([^:=]+)=(\d+)", item)
        if not match:
            raise CnnkitError(f"--label {item!r}: expected NAME:LABEL=VERSION")
        labels.append((match[1], match[2], int(match[3])))
    if args.max_batch < 1 or args.max_wait_ms < 0 or args.max_queue < 1 or args.threads < 0 or args.lanes < 0:
        raise CnnkitError("--max-batch and --max-queue must be at least 1, --max-wait-ms, --threads and --lanes "
                          "at least 0")
    return ServeConfig(paths=tuple(args.paths), named=tuple(named), labels=tuple(labels), host=args.host,
                       port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                       max_queue=args.max_queue, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                       threads=args.threads, lanes=args.lanes, top_k=args.top_k)


def _run_serve(args: argparse.Namespace) -> int:
    from cnnkit.serve.main import serve

    serve(serve_config_from_args(args))
    return 0


def _add_explain(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "explain", _run_explain, "Grad-CAM heatmap of what drove a prediction")
    sub.add_argument("run", type=Path)
    sub.add_argument("image", type=Path)
    sub.add_argument("--out", type=Path, default=Path("heat.png"))
    sub.add_argument("--label", help="explain this class (default: the predicted one)")


def _run_explain(args: argparse.Namespace) -> int:
    from cnnkit.evaluate.explain import explain

    result = explain(ExplainConfig(run=args.run, image=args.image, out=args.out, label=args.label))
    print(f"{result.label} ({result.probability:.1%}); heatmap: {args.out}")
    return 0


# phishing application -------------------------------------------------------------------------------------------
def _add_capture(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "capture", _run_capture, "screenshot URLs in headless Chromium, with a manifest")
    sub.add_argument("urls", type=Path, help="text file, one URL per line")
    sub.add_argument("--out", type=Path, required=True)
    sub.add_argument("--label", help="save under OUT/LABEL/ (e.g. phishing), making OUT a folder data set")
    sub.add_argument("--width", type=int, default=1280)
    sub.add_argument("--height", type=int, default=800)
    sub.add_argument("--timeout", type=float, default=20.0, help="seconds per page")
    sub.add_argument("--full-page", action="store_true", help="the whole page, not just the viewport")
    sub.add_argument("--browser", type=Path, default=Path("/usr/bin/chromium"))
    sub.add_argument("--driver", type=Path, default=Path("/usr/bin/chromedriver"))


def _run_capture(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.capture import capture

    report = capture(CaptureConfig(urls=args.urls, out=args.out, label=args.label, width=args.width,
                                   height=args.height, timeout_s=args.timeout, full_page=args.full_page,
                                   browser=args.browser, driver=args.driver))
    print(f"Captured {report.captured}, failed {report.failed}; manifest: {report.manifest}")
    return 0


def _add_demo(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "make-demo-screenshots", _run_demo,
                   "generate a synthetic set of login-page screenshots (legitimate / phishing)")
    sub.add_argument("--out", type=Path, required=True)
    sub.add_argument("--count", type=int, default=200)
    sub.add_argument("--width", type=int, default=1280)
    sub.add_argument("--height", type=int, default=800)
    sub.add_argument("--seed", type=int, default=0)


def _run_demo(args: argparse.Namespace) -> int:
    from cnnkit.apps.phishing.demo import make_demo_screenshots

    if args.count < 2:
        raise CnnkitError("--count must be at least 2")
    out = make_demo_screenshots(DemoConfig(out=args.out, count=args.count, width=args.width, height=args.height,
                                           seed=args.seed))
    print(f"Wrote {args.count} synthetic screenshots to {out}/legitimate and {out}/phishing (manifest.json)")
    return 0

"""The command line: a thin layer over the configs and functions of the Python API.

Each subcommand's flags are generated from its config's option declarations (cnnkit.options), so a flag's type,
default, choices, help and validation live in one place. Only positional arguments and the few flags whose text
is parsed (NAME=PATH) are declared here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from cnnkit import __version__
from cnnkit.config import (
    DEFAULT_FOLDS,
    RECIPES,
    CacheConfig,
    CalibrateConfig,
    EvaluateConfig,
    ExplainConfig,
    ExportConfig,
    LRFindConfig,
    PredictConfig,
    PreviewConfig,
    ServeConfig,
    TrainConfig,
    train_config,
)
from cnnkit.errors import CnnkitError
from cnnkit.files import DISK_FULL
from cnnkit.options import add_arguments, did_you_mean, from_keywords, options_of, typed_values

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
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"cnnkit: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:
        # The reader went away (`cnnkit models | head`): stop quietly, as Unix tools do, and point stdout at
        # /dev/null so that flushing it at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell reports for a tool its pipe stopped
    except OSError as exc:  # after BrokenPipeError, one of its kind
        if exc.errno not in DISK_FULL:
            raise
        # Writes that are not atomic artifacts (a --csv file being appended to, say) land here: the user's to fix.
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"cnnkit: error: no space left on the device{where}: free some space and run again", file=sys.stderr)
        return 2


TRAINING_COMMANDS = ("train", "cv", "lr-find")


def run() -> None:
    """The `cnnkit` command and `python -m cnnkit`: main(), then exit with its status.

    A torchrun rank leaves without running C++ static destructors: after the process group is destroyed, one of
    its communication threads can still be joinable when they run, and the rank then aborts ("terminate called
    without an active exception", SIGABRT) although its work is done, which torchrun reports as a failed job.
    Everything cnnkit writes is closed by the time main() returns.

    A command that trains starts once more with tcmalloc preloaded where it is installed (runtime.allocator).
    SIGTERM (what kill, timeout, Docker and Kubernetes send) is handled as Ctrl-C is: a training run says which epoch
    is saved and how to resume, and the command exits with 143."""
    if sys.argv[1:2] and sys.argv[1] in TRAINING_COMMANDS:
        from cnnkit.runtime.allocator import restart_with_tcmalloc

        try:
            restart_with_tcmalloc(sys.orig_argv[1:])
        except CnnkitError as exc:
            print(f"cnnkit: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    signal.signal(signal.SIGTERM, _terminated)
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


class _Parser(argparse.ArgumentParser):
    """argparse, with a suggestion for a misspelt command or flag (`cnnkit trian`, `--epohcs`), as cnnkit already
    suggests for model names and data sources. Subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2]))
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            flags = sorted(_all_flags(self))
            words = [word.split("=")[0] for word in unknown[1].split() if word.startswith("--")]
            hints = [did_you_mean(word, flags, n=1) for word in words]
            message += "".join(h for h in hints if h)
        super().error(message)


def _all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """Every long flag of `parser` and of its subcommands, recursively."""
    flags = {s for action in parser._actions for s in action.option_strings if s.startswith("--")}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _all_flags(sub)
    return flags


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it stops as Ctrl-C stops it."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnkit", description="Train, evaluate, export and serve CNN image classifiers.")
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_models, _add_summary, _add_check_data, _add_train, _add_cv, _add_lr_find, _add_evaluate,
                _add_calibrate, _add_predict, _add_compare, _add_runs, _add_augment_preview, _add_cache, _add_export,
                _add_serve, _add_explain):
        add(commands)
    for app in _apps():
        app.add_commands(commands)
    return parser


def _command(commands: argparse._SubParsersAction, name: str, handler: Handler, help: str, *,
             config: type | None = None) -> argparse.ArgumentParser:
    """A subcommand; its arguments are `config`'s options where one is given."""
    sub = commands.add_parser(name, help=help, description=help)
    sub.set_defaults(handler=handler)
    if config is not None:
        add_arguments(sub, config)
    return sub


def _config(args: argparse.Namespace, config: type) -> Any:
    """The typed `config` of a command: its arguments and the flags typed, over the defaults."""
    return from_keywords(config, typed_values(args, config))


# models / summary -----------------------------------------------------------------------------------------------
def _add_models(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "models", _run_models, "list the registered models")
    sub.add_argument("--timm", metavar="PATTERN", nargs="?", const="*", help="list timm models matching PATTERN")
    sub.add_argument("--pretrained", action="store_true",
                     help="list the pretrained weights and whether each is available offline here")


def _run_models(args: argparse.Namespace) -> int:
    from cnnkit.evaluate.compare import text_table
    from cnnkit.models import MODELS, count_params, create_model
    from cnnkit.models.weights import WEIGHTS

    if args.timm:
        import timm

        print("\n".join(f"timm/{name}" for name in timm.list_models(args.timm)))
        return 0
    if args.pretrained:
        print(text_table([spec.describe() for _, spec in WEIGHTS.items()]))
        print("\nAny timm model's weights also load as timm/NAME with internet, or from --weights PATH.")
        return 0
    import torch

    print(f"{'name':<22}{'params':>14}{'input':>8}  description")
    for name, entry in MODELS.items():
        with torch.device("meta"):  # counts need shapes only: no memory, and none of VGG16's 134M weights initialised
            params = sum(count_params(create_model(name, num_classes=10)))
        print(f"{name:<22}{params:>14,}{entry.input_size:>8}  {entry.description}")
    print("\nParameter counts are for 10 classes. Any timm model also works as timm/NAME.")
    return 0


def _add_summary(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "summary", _run_summary, "print a Keras-style layer table of a model, or of a run's")
    sub.add_argument("model", help="a registered model, timm/NAME, or a run directory (its trained network)")
    sub.add_argument("--input-size", type=int, help="input side in pixels (default: the model's)")
    sub.add_argument("--num-classes", type=int, default=10)


def _run_summary(args: argparse.Namespace) -> int:
    from cnnkit.api import summary

    print(summary(args.model, input_size=args.input_size, num_classes=args.num_classes))
    return 0


# train ----------------------------------------------------------------------------------------------------------
def _add_data(sub: argparse.ArgumentParser, *, resumable: bool = False) -> None:
    """The DATA argument of the commands that read data as train does, described as TrainConfig.data declares it
    (train's may be left out with --resume, or name the run to resume)."""
    declared = next(o for o in options_of(TrainConfig) if o.keyword == "data").meta["help"]
    if resumable:
        sub.add_argument("data", nargs="?", help=f"{declared}; with --resume: the run directory")
    else:
        sub.add_argument("data", help=declared)


def _add_recipe(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--recipe", choices=sorted(RECIPES), help="a preset; the flags you type win over it")


NPROC_HELP = "data-parallel processes on this machine (launches torchrun); see README for multi-node"


def _add_train(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "train", _run_train, "train a model and write a run directory")
    _add_data(sub, resumable=True)
    add_arguments(sub, TrainConfig)
    _add_recipe(sub)
    sub.add_argument("--nproc", type=int, default=1, help=NPROC_HELP)


def _add_cv(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "cv", _run_cv, "k-fold cross-validation: one run per fold (ROOT/fold-I), every image "
                   "tested once; mean and spread over folds, pooled accuracy")
    _add_data(sub)
    sub.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help=f"number of stratified folds (default: "
                     f"{DEFAULT_FOLDS})")
    add_arguments(sub, TrainConfig, skip=("resume", "fold", "test_source"))
    _add_recipe(sub)
    sub.add_argument("--nproc", type=int, default=1, help=NPROC_HELP + " (every fold)")


def _run_cv(args: argparse.Namespace) -> int:
    from cnnkit.training.cv import cross_validate, describe

    config = train_config(args.data, recipe=args.recipe, **typed_values(args, TrainConfig))
    if args.nproc > 1:
        from cnnkit.runtime.parallel import launch_torchrun

        return launch_torchrun(_without_option(args.argv, "--nproc"), nproc=args.nproc, device=config.device)
    result = cross_validate(config, folds=args.folds)
    if result.folds:  # under torchrun, rank 0's
        print(describe(result))
    return 0


# The train options that decide what data is read and how it is decoded and split: `cnnkit check-data` takes these.
DATA_OPTIONS = ("model", "data_dir", "val_split", "test_split", "test_source", "folder_layout", "input_size", "resize",
                "crop_browser_frame", "first_screen", "pretrained", "weights", "normalize", "class_weight", "sampler",
                "strict", "workers", "cache_dir", "no_cache", "seed", "quiet")


def _add_check_data(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "check-data", _run_check_data, "load and check data as train would (splits, class "
                   "balance, unreadable files, duplicates, shortcuts), training nothing; exit status 1 on warnings")
    _add_data(sub)
    add_arguments(sub, TrainConfig, skip=tuple(o.keyword for o in options_of(TrainConfig)
                                               if o.keyword not in DATA_OPTIONS))


def _run_check_data(args: argparse.Namespace) -> int:
    from cnnkit.api import check_data
    from cnnkit.data.checks import SHORTCUT_ADVICE

    found = check_data(args.data, **typed_values(args, TrainConfig))
    print(found)
    if "a possible shortcut" in str(found):
        print(f"\n{SHORTCUT_ADVICE}\n")
    print(f"{found.warnings} warning(s)" if found.warnings else "No warnings")
    return 1 if found.warnings else 0


# Where a run directory would go, and resuming one: no part of the range test, which writes only its plot.
NOT_SWEPT = ("out", "project", "name", "exist_ok", "overwrite", "resume")


def _add_lr_find(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "lr-find", _run_lr_find, "learning-rate range test: the loss over a sweep of learning "
                   "rates, and a suggested --lr")
    _add_data(sub)
    add_arguments(sub, TrainConfig, skip=NOT_SWEPT)
    add_arguments(sub, LRFindConfig)
    _add_recipe(sub)


def _run_lr_find(args: argparse.Namespace) -> int:
    from cnnkit.training.lr_find import lr_find

    finder = _config(args, LRFindConfig)
    finding = lr_find(train_config(args.data, recipe=args.recipe, **typed_values(args, TrainConfig)), finder)
    print(finding.describe())
    print(f"Loss against learning rate ({len(finding.lrs)} steps, {finding.phase} phase): {finder.plot}")
    return 0


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config a `cnnkit train` command line asks for: the flags typed, over the recipe, over the defaults."""
    from cnnkit.rundir import RunDir
    from cnnkit.training.fit import resume_config

    typed = typed_values(args, TrainConfig)
    if typed.get("resume"):
        run = _resume_target(args, typed)
        if RunDir.started(run) or not args.data or typed.get("out") is None:
            overrides = {k: v for k, v in typed.items() if k not in ("resume", "out", "name", "project")}
            return resume_config(run, **overrides)
        # A run killed before it saved its settings: the full command line starts it over (see train.fit).
    return train_config(args.data or "", recipe=args.recipe, **typed)


def _resume_target(args: argparse.Namespace, typed: dict[str, object]) -> Path:
    """`--resume RUN`, `--resume --out RUN` or `--resume --name NAME [--project DIR]`."""
    from cnnkit.rundir import RunDir

    if typed.get("out") is not None:
        out = Path(str(typed["out"]))
        if args.data and RunDir.started(Path(args.data)) and Path(args.data).resolve() != out.resolve():
            # Two runs named: resuming one into the other would mix their checkpoints and histories.
            raise CnnkitError(f"--resume continues {args.data} in its own directory, not in --out {out}: leave --out "
                              f"out, or copy the run directory to {out} first")
        return out
    if typed.get("name") is not None:
        return Path(str(typed.get("project", "runs"))) / str(typed["name"])
    if args.data:
        return Path(args.data)
    raise CnnkitError("--resume needs the run: cnnkit train --resume RUN")


def _run_train(args: argparse.Namespace) -> int:
    from cnnkit.runtime.parallel import launch_torchrun
    from cnnkit.training.fit import train

    config = train_config_from_args(args)
    if args.nproc > 1:
        return launch_torchrun(_without_option(args.argv, "--nproc"), nproc=args.nproc, device=config.device)
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
    _command(commands, "evaluate", _run_evaluate, "evaluate a run on its test data (or --data)", config=EvaluateConfig)


def _run_evaluate(args: argparse.Namespace) -> int:
    from cnnkit.evaluate.metrics import format_table
    from cnnkit.evaluate.report import evaluate_run

    config = _config(args, EvaluateConfig)
    metrics = evaluate_run(config)
    print(f"Data: {metrics['data']}, {metrics['evaluated_on']} ({metrics['num_samples']} images)")
    print(format_table(metrics))
    extra = ", mistakes.png" if (Path(metrics["output"]) / "mistakes.png").is_file() else ""
    extra += ", roc_pr.png" if (Path(metrics["output"]) / "roc_pr.png").is_file() else ""
    extra += f"; {args.run / 'threshold.json'}" if config.target_fpr is not None else ""
    print(f"Written: {Path(metrics['output']) / 'metrics.json'}, confusion_matrix.png, confusion_matrix.json{extra}")
    return 0


def _add_calibrate(commands: argparse._SubParsersAction) -> None:
    _command(commands, "calibrate", _run_calibrate, "fit the softmax temperature on held-out data, so that "
             "confidences match accuracy (predict, evaluate, export and serve then use it)", config=CalibrateConfig)


def _run_calibrate(args: argparse.Namespace) -> int:
    from cnnkit.evaluate.temperature import calibrate_run
    from cnnkit.runtime.exports import export_status

    result = calibrate_run(_config(args, CalibrateConfig))
    print("\n".join(result.describe(run=args.run)))
    if export_status(args.run) == "stale":
        print(f"The run's export was made with the earlier probabilities: `cnnkit export {args.run}` again")
    return 0


def _add_predict(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "predict", _run_predict, "classify images (files, folders, globs, @lists) with a run "
                   "or an export", config=PredictConfig)
    sub.add_argument("--nproc", type=int, default=1, help="processes sharing the images (launches torchrun); "
                     "with --csv/--jsonl")


def _run_predict(args: argparse.Namespace) -> int:
    """Rows stream to the terminal or to --csv/--jsonl; an unreadable file is an error row, and the exit status
    is 2 when any file failed. Under torchrun (or --nproc N) the ranks share the paths and merge one output file."""
    from cnnkit.api import load
    from cnnkit.runtime.bulk import count_errors, expand
    from cnnkit.runtime.parallel import LAUNCHED, launch_torchrun, process_group

    config = _config(args, PredictConfig)
    output = config.csv or config.jsonl
    if args.nproc > 1:
        if output is None:
            raise CnnkitError("--nproc writes --csv FILE or --jsonl FILE (the ranks merge their rows into it)")
        code = launch_torchrun(_without_option(args.argv, "--nproc"), nproc=args.nproc, device=config.device)
        return code or (2 if count_errors(output) else 0)
    with process_group(config.device) as ctx:
        if ctx.enabled and output is None:
            raise CnnkitError("under torchrun, predict writes --csv FILE or --jsonl FILE")
        classifier = load(config.run, device=config.device)
        if output is None:
            failed = _print_rows(classifier.predict_files(list(expand(config.images)), batch_size=config.batch_size,
                                                          top_k=config.top_k), as_json=config.json)
        else:
            failed = classifier.predict_to_file(config.images, output, resume=config.resume,
                                                batch_size=config.batch_size, top_k=config.top_k)
            if ctx.is_main:
                print(f"Written: {output}" + (f" ({failed} file(s) failed; see their error column)" if failed else ""))
        if ctx.enabled and os.environ.get(LAUNCHED):
            return 0  # a rank's exit 2 would read as a crash to torchrun: the launcher reports failed files
    return 2 if failed else 0


def _print_rows(rows: Iterable[dict[str, Any]], *, as_json: bool) -> int:
    failed, collected = 0, []
    for row in rows:
        if "error" in row:
            failed += 1
            print(f"cnnkit: error: {row['error']}", file=sys.stderr)
        if as_json:
            collected.append({"image": row["path"], "error": row["error"]} if "error" in row else
                             {"image": row["path"], "top": [{"label": label, "probability": p}
                                                            for label, p in row["top"]], **_decision(row)})
        elif "error" not in row:
            print(row["path"])
            for label, score in row["top"]:
                print(f"  {label:<20} {score:7.2%}")
    if as_json:
        print(json.dumps(collected, indent=2))
    return failed


def _decision(row: dict[str, Any]) -> dict[str, Any]:
    return {"decision": row["decision"]} if "decision" in row else {}


# compare / runs / augment-preview -------------------------------------------------------------------------------
def _add_compare(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "compare", _run_compare, "compare runs side by side (table and learning curves)")
    sub.add_argument("runs", type=Path, nargs="+")
    sub.add_argument("--out", type=Path, default=Path("compare.png"), help="PNG of the runs' learning curves")


def _run_compare(args: argparse.Namespace) -> int:
    from cnnkit.api import compare

    print(compare(args.runs, out=args.out))
    print(f"Learning curves: {args.out}")
    return 0


def _add_runs(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "runs", _run_runs, "list the runs under a folder (default: runs/)")
    sub.add_argument("directory", type=Path, nargs="?", default=Path("runs"))


def _run_runs(args: argparse.Namespace) -> int:
    from cnnkit.api import runs
    from cnnkit.evaluate.compare import text_table

    rows = runs(args.directory)
    print(text_table(rows) if rows else f"No runs under {args.directory}")
    return 0


def _add_augment_preview(commands: argparse._SubParsersAction) -> None:
    _command(commands, "augment-preview", _run_augment_preview, "draw originals beside augmented samples",
             config=PreviewConfig)


def _run_augment_preview(args: argparse.Namespace) -> int:
    from cnnkit.data.preview import augment_preview

    config = _config(args, PreviewConfig)
    augment_preview(config)
    print(f"Written: {config.out}")
    return 0


def _add_cache(commands: argparse._SubParsersAction) -> None:
    _command(commands, "cache", _run_cache, "list the decoded-image cache's entries (--prune: remove stale ones)",
             config=CacheConfig)


def _run_cache(args: argparse.Namespace) -> int:
    import time

    from cnnkit.data.cache import cache_entries, prune_cache
    from cnnkit.evaluate.compare import text_table

    config = _config(args, CacheConfig)
    if config.prune:
        removed = prune_cache(config.directory, everything=config.everything, unused_days=config.unused_days)
        print(f"Removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} "
              f"({sum(e.size_bytes for e in removed) / 2**30:.2f} GiB) from {config.directory}")
    entries = cache_entries(config.directory)
    if not entries:
        print(f"No cache entries in {config.directory}")
        return 0
    rows = [{"entry": e.path.name[:16], "images": e.images, "decoding": e.decoding,
             "MiB": f"{e.size_bytes / 2**20:.1f}", "last used": time.strftime("%Y-%m-%d %H:%M", time.localtime(e.used)),
             "state": "unfinished" if e.group is None else "latest" if e.latest else "replaced",
             "folders": ", ".join(e.folders) or "-"} for e in entries]
    print(text_table(rows))
    print(f"{sum(e.size_bytes for e in entries) / 2**30:.2f} GiB in {config.directory}")
    return 0


# export / serve -------------------------------------------------------------------------------------------------
def _add_export(commands: argparse._SubParsersAction) -> None:
    _command(commands, "export", _run_export, "export a run to ONNX (and SavedModel, TFLite), checked against "
             "PyTorch", config=ExportConfig)


def _run_export(args: argparse.Namespace) -> int:
    from cnnkit.deploy.onnx import export_run

    config = _config(args, ExportConfig)
    result = export_run(config)
    print(f"Exported {result.path} in {result.seconds:.1f}s; "
          f"largest difference from PyTorch: {result.max_abs_diff:.2e} (tolerance {config.tolerance:g})")
    if result.int8:
        print(f"INT8 model: {result.path.parent / result.int8['file']}\n{result.int8_table}")
    for kind, record in (result.tf or {}).items():
        print(f"{kind}: {result.path.parent / record['path']}; largest difference from PyTorch "
              f"{record['parity_max_abs_diff']:.2e} on random images and {record['real_images_checked']} of the "
              "run's test images")
    return 0


def _add_serve(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "serve", _run_serve, "serve models over the TensorFlow Serving REST API")
    sub.add_argument("paths", type=Path, nargs="*", help="run dirs, export dirs, or NAME/ dirs of VERSION/ subdirs")
    sub.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="serve PATH as NAME")
    sub.add_argument("--label", action="append", default=[], metavar="NAME:LABEL=VERSION",
                     help="point a version label at a version")
    add_arguments(sub, ServeConfig)
    for app in _apps():
        app.add_serve_options(sub)


def _apps() -> list[Any]:
    """The applications' command-line modules (plugins on the core: each adds its commands and serve options)."""
    from cnnkit.apps.phishing import cli as phishing

    return [phishing]


def serve_config_from_args(args: argparse.Namespace) -> ServeConfig:
    named = []
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CnnkitError(f"--model {item!r}: expected NAME=PATH")
        named.append((name, Path(path)))
    labels = []
    for item in args.label:
        match = re.fullmatch(r"([^:=]+):([^:=]+)=([0-9]{1,18})", item)
        if not match:
            raise CnnkitError(f"--label {item!r}: expected NAME:LABEL=VERSION")
        labels.append((match[1], match[2], int(match[3])))
    base = ServeConfig(paths=tuple(args.paths), named=tuple(named), labels=tuple(labels))
    return from_keywords(ServeConfig, typed_values(args, ServeConfig), base=base)


def _run_serve(args: argparse.Namespace) -> int:
    from cnnkit.serving.main import serve

    hooks = tuple(hook for app in _apps() for hook in app.serve_hooks(args))
    serve(serve_config_from_args(args), hooks=hooks)
    return 0


def _add_explain(commands: argparse._SubParsersAction) -> None:
    _command(commands, "explain", _run_explain, "Grad-CAM heatmap of what drove a prediction", config=ExplainConfig)


def _run_explain(args: argparse.Namespace) -> int:
    from cnnkit.evaluate.explain import explain

    config = _config(args, ExplainConfig)
    result = explain(config)
    print(f"{result.label} ({result.probability:.1%}); heatmap: {config.out}")
    return 0

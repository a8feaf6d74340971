"""Each option declared once: the CLI, the API and validation come from the same declaration."""

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnnkit.cli import build_parser, train_config_from_args
from cnnkit.config import RECIPES, EvaluateConfig, ServeConfig, TrainConfig, train_config
from cnnkit.errors import CnnkitError
from cnnkit.options import add_arguments, check, from_keywords, option, options_of, typed_values


def parse_train(*argv: str) -> TrainConfig:
    return train_config_from_args(build_parser().parse_args(["train", *argv]))


def test_a_typed_flag_wins_over_the_recipe_even_when_it_equals_the_default() -> None:
    config = parse_train("cifar10", "--recipe", "cifar-fast", "--lr", "0.001", "--scheduler", "none")
    assert config.lr == 0.001 and config.schedule.name == "none"
    assert config.batch_size == RECIPES["cifar-fast"]["batch_size"] and config.model == "cifar-fast-net"
    assert config.schedule.warmup_epochs == 2  # the recipe's, not typed
    assert train_config("cifar10", recipe="cifar-fast", lr=0.001).lr == 0.001


def test_the_cli_and_the_library_refuse_the_same_values() -> None:
    with pytest.raises(CnnkitError, match=r"--momentum 1.5: must lie in \[0, 0.999\]"):
        TrainConfig(data="cifar10", momentum=1.5)
    with pytest.raises(CnnkitError, match=r"--momentum 1.5: must lie in \[0, 0.999\]"):
        parse_train("cifar10", "--momentum", "1.5")
    with pytest.raises(CnnkitError, match="--finetune-epochs needs --freeze-base"):
        TrainConfig(data="cifar10", finetune_epochs=2)
    with pytest.raises(CnnkitError, match="--target-fpr 2.0"):
        EvaluateConfig(run="r", target_fpr=2.0)
    with pytest.raises(CnnkitError, match="--lanes -1"):
        ServeConfig(lanes=-1)
    result = subprocess.run([sys.executable, "-m", "cnnkit", "train", "cifar10", "--momentum", "1.5"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "cnnkit: error: --momentum 1.5: must lie in [0, 0.999]"


def test_every_train_option_is_a_flag_with_help_and_choices_from_its_type() -> None:
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    flags = {flag for action in train._actions for flag in action.option_strings}
    for opt in options_of(TrainConfig):
        if opt.on_command_line:
            assert opt.flag in flags, opt.flag
            assert opt.meta["help"]
    by_flag = {o for a in train._actions for o in a.option_strings if a.choices}
    assert {"--scheduler", "--device", "--resize", "--tta", "--optimizer", "--precision"} <= by_flag


def test_strings_become_paths_and_keywords_match_the_flags(tmp_path: object) -> None:
    config = train_config("cifar10", out="runs/x", scheduler="cosine", warmup_epochs=1, plateau_patience=4)
    assert str(config.out) == "runs/x" and config.out.__class__.__name__.endswith("Path")
    assert (config.schedule.name, config.schedule.warmup_epochs, config.schedule.patience) == ("cosine", 1.0, 4)


def test_every_flag_passes_through_a_hand_run_torchrun_in_one_spelling_at_least() -> None:
    """torchrun reads the whole command line with its own parser, which refuses an option that abbreviates two of its
    own: `--monitor` (its `--monitor-interval`). Such an option needs a second spelling (`--monitor-metric`)."""
    import argparse

    from torch.distributed.run import get_args_parser

    torchrun = get_args_parser()
    torchrun.exit_on_error = False

    def passes(flag: str) -> bool:
        try:
            parsed = torchrun.parse_args(["--standalone", "-m", "cnnkit", "train", "cifar10", flag, "1"])
        except (argparse.ArgumentError, SystemExit):
            return False
        return parsed.training_script_args[-2:] == [flag, "1"]

    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    refused = [a.option_strings for a in train._actions
               if a.option_strings and a.dest not in ("help", "nproc") and not any(map(passes, a.option_strings))]
    assert refused == []
    assert not passes("--monitor") and passes("--monitor-metric")
    assert parse_train("cifar10", "--monitor-metric", "val_accuracy").schedule.monitor == "val_accuracy"


@dataclass(frozen=True)
class Positionals:
    run: Path = option(cli="positional", help="the run to read")
    out: Path = option(help="where to write")
    images: tuple[Path, ...] = option((), cli="positional", help="the images to read")
    size: int = option(3, low=1, help="how many")

    def __post_init__(self) -> None:
        check(self)


def test_positional_arguments_and_required_flags_come_from_the_declaration(capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="toy")
    add_arguments(parser, Positionals)
    args = parser.parse_args(["r", "a.png", "b.png", "--out", "o"])
    assert from_keywords(Positionals, typed_values(args, Positionals)) == Positionals(
        run=Path("r"), images=(Path("a.png"), Path("b.png")), out=Path("o"))
    assert "the images to read" in parser.format_help() and "--out OUT" in parser.format_usage()
    with pytest.raises(SystemExit):
        parser.parse_args(["r", "--out", "o"])
    assert "required: images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["r", "a.png"])
    assert "required: --out" in capsys.readouterr().err

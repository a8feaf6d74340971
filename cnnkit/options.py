"""Each option declared once: a config field carries its default, help, flag, choices and bounds.

`option(...)` declares a dataclass field; the command line (`add_arguments`), the Python API's keyword arguments
(`from_keywords`) and validation (`check`) are all derived from that one declaration. Choices come from `Literal`
types. Nested configs (a `ScheduleConfig` inside `TrainConfig`) are flattened: their options get flat keyword and
flag names (`scheduler`, `warmup_epochs`), the same in the CLI and the API.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union

from cnnkit.errors import CnnkitError

_NO_DEFAULT: Any = dataclasses.MISSING


def option(
    default: Any = _NO_DEFAULT,
    *,
    help: str,  # noqa: A002 - the argparse word, on purpose
    flag: str | tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    const: Any = None,
    cli: bool | Literal["positional"] = True,
    factory: Any = None,
) -> Any:
    """A config field with its CLI/API metadata. `low`/`high` are inclusive bounds; `const` is the value of a bare
    flag (`--tta` alone); `flag` overrides the derived name (a tuple: the name, then other spellings the command
    line accepts too). `cli=True`: a flag, required where the field has no default; `"positional"`: a positional
    argument (a tuple field takes one or more); `False`: not on the command line."""
    metadata = {"help": help, "flag": flag, "low": low, "high": high, "const": const, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def section(title: str, declared: Any) -> Any:
    """An option that starts a titled group of flags in --help; the fields after it join the group until the next
    section: `model: str = section("model and run directory", option("simple-cnn", help=...))`."""
    metadata = {**declared.metadata, "section": title}
    if declared.default_factory is not dataclasses.MISSING:
        return field(default_factory=declared.default_factory, metadata=metadata)
    return field(default=declared.default, metadata=metadata)


@dataclass(frozen=True)
class Option:
    """One flat option: its keyword (= flag without dashes), where it lives in the config, its type and metadata."""

    keyword: str
    path: tuple[str, ...]  # field names from the outer config to the field
    hint: Any
    default: Any
    meta: dict[str, Any]

    @property
    def flag(self) -> str:
        return "--" + self.keyword.replace("_", "-")

    @property
    def flags(self) -> list[str]:
        """The flag, then the other spellings its declaration gives."""
        return ["--" + name.replace("_", "-") for name in _flag_names(self.meta, self.keyword)]

    @property
    def on_command_line(self) -> bool:
        return bool(self.meta.get("cli", True))

    @property
    def positional(self) -> bool:
        return self.meta.get("cli", True) == "positional"

    @property
    def choices(self) -> tuple[Any, ...] | None:
        literal = _literal(self.hint)
        return typing.get_args(literal) if literal is not None else None


def options_of(cls: type) -> list[Option]:
    """The flat options of a config class, nested configs opened, in declaration order."""
    return list(_walk(cls, ()))


def _walk(cls: type, path: tuple[str, ...]) -> Iterator[Option]:
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            yield from _walk(hint, (*path, f.name))
            continue
        if "help" not in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else _NO_DEFAULT)
        keyword = _flag_names(f.metadata, f.name)[0].replace("-", "_")
        yield Option(keyword, (*path, f.name), hint, default, dict(f.metadata))


def _flag_names(meta: Any, name: str) -> tuple[str, ...]:
    """A field's flag names without dashes: its declared flag (or flags), else the field's name."""
    flag = meta.get("flag") or name
    return tuple(n.lstrip("-") for n in ((flag,) if isinstance(flag, str) else flag))


def check(config: Any) -> None:
    """Coerce strings to Paths and lists to tuples, then check choices and bounds; raise CnnkitError."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        coerced = _coerce(value, hint)
        if coerced is not value:
            object.__setattr__(config, f.name, coerced)
            value = coerced
        if value is None or "help" not in f.metadata:
            continue
        name = _flag_names(f.metadata, f.name)[0].replace("_", "-")
        choices = typing.get_args(_literal(hint)) if _literal(hint) is not None else None
        if choices is not None and value not in choices:
            raise CnnkitError(f"--{name} {value!r}: expected one of {', '.join(map(str, choices))}"
                              + did_you_mean(str(value), [str(c) for c in choices]))
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
                raise CnnkitError(f"--{name} {value}: must lie in {bounds}")


def _coerce(value: Any, hint: Any) -> Any:
    base = _strip_optional(hint)
    if base is Path and isinstance(value, str):
        return Path(value)
    if typing.get_origin(base) is tuple and isinstance(value, list):
        return tuple(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_keywords(cls: type, values: dict[str, Any], *, base: Any = None) -> Any:
    """A config of `cls` from flat keyword values (as the CLI flags name them) over `base` (default: defaults).

    Unknown keywords are an error that suggests the closest valid one.
    """
    by_keyword = {o.keyword: o for o in options_of(cls)}
    nested: dict[tuple[str, ...], dict[str, Any]] = {}
    for keyword, value in values.items():
        if keyword not in by_keyword:
            raise CnnkitError(f"unknown option {keyword!r}" + did_you_mean(keyword, list(by_keyword)))
        opt = by_keyword[keyword]
        nested.setdefault(opt.path[:-1], {})[opt.path[-1]] = value
    return _build(cls, (), nested, base)


def _build(cls: type, path: tuple[str, ...], nested: dict[tuple[str, ...], dict[str, Any]], base: Any) -> Any:
    hints = typing.get_type_hints(cls)
    changes = dict(nested.get(path, {}))
    for f in fields(cls):
        if is_dataclass(hints[f.name]) and any(p[: len(path) + 1] == (*path, f.name) for p in nested):
            inner = getattr(base, f.name) if base is not None else None
            changes[f.name] = _build(hints[f.name], (*path, f.name), nested, inner)
    return dataclasses.replace(base, **changes) if base is not None else cls(**changes)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add a flag for every option of `cls`. Defaults are suppressed so that the parsed namespace holds only the
    flags the user typed: that is what lets typed flags win over a recipe, whatever their value."""
    group: argparse._ActionsContainer = parser
    for opt in options_of(cls):
        if opt.meta.get("section"):
            group = parser.add_argument_group(opt.meta["section"])
        if opt.keyword in skip or not opt.on_command_line:
            continue
        if opt.positional:
            group.add_argument(opt.keyword, **_positional(opt))
            continue
        help_text = opt.meta["help"]
        if opt.default is not _NO_DEFAULT and opt.default not in (None, False, "", ()):
            help_text += f" (default: {opt.default})"
        base = _strip_optional(opt.hint)
        kwargs: dict[str, Any] = {"dest": opt.keyword, "default": argparse.SUPPRESS, "help": help_text}
        if opt.default is _NO_DEFAULT:
            kwargs["required"] = True
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if opt.default is True else "store_true"
        else:
            if opt.choices is not None:
                kwargs["choices"] = opt.choices
            elif typing.get_origin(base) is tuple:  # --reference a.png b.png
                item = typing.get_args(base)[0]
                kwargs |= {"nargs": "+", "type": item if item in (int, float, Path) else str}
            else:
                kwargs["type"] = base if base in (int, float, Path) else str
            if opt.meta.get("const") is not None:
                kwargs |= {"nargs": "?", "const": opt.meta["const"]}
        group.add_argument(*opt.flags, **kwargs)


def _positional(opt: Option) -> dict[str, Any]:
    """argparse's keywords for a positional option: a tuple takes one or more values (of its item type), a field
    with a default may be left out."""
    base = _strip_optional(opt.hint)
    kwargs: dict[str, Any] = {"help": opt.meta["help"], "default": argparse.SUPPRESS}
    if typing.get_origin(base) is tuple:
        base = typing.get_args(base)[0]
        kwargs["nargs"] = "+"
    elif opt.default is not _NO_DEFAULT:
        kwargs["nargs"] = "?"
    if base in (int, float, Path):
        kwargs["type"] = base
    return kwargs


def typed_values(namespace: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of `cls` that the user typed on the command line, by keyword."""
    keywords = {o.keyword for o in options_of(cls) if o.on_command_line}
    return {k: v for k, v in vars(namespace).items() if k in keywords}


def did_you_mean(word: str, valid: list[str], *, n: int = 3) -> str:
    """"; did you mean X?" for the closest valid names, or "" when none is close."""
    close = difflib.get_close_matches(word, valid, n=n, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _literal(hint: Any) -> Any:
    base = _strip_optional(hint)
    return base if typing.get_origin(base) is Literal else None

"""Served models: ONNX Runtime sessions, laid out and addressed as TensorFlow Serving does (NAME/VERSION)."""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit import artifacts as names
from cnnkit.data.preprocess import Preprocess
from cnnkit.errors import CnnkitError
from cnnkit.files import no_such_path
from cnnkit.runtime.exports import check_current, export_temperature, find_export_dir, read_verified_model

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_DEFAULT_LANES = 4


@dataclass
class ServedVersion:
    """One loaded version of a model: its ONNX Runtime sessions plus what the export says about it.

    Under load, `lanes` model calls run at once, each on `lane_session` with its share of the threads. Independent
    one-thread calls do not wait for each other at every layer as the threads of one call do, so HTTP work taking a
    core for a moment slows one lane instead of both threads: on 2 cores, in paired rounds, the server reached
    87-94% of raw batch-32 throughput with two lanes against 78-88% with one (README, Benchmarks). A request that
    finds the server idle runs on `session`, with every thread, for the lowest latency.
    """

    name: str
    version: int
    path: Path
    session: Any  # onnxruntime.InferenceSession with all the threads
    class_names: list[str]
    preprocess: Preprocess
    input_name: str
    output_name: str
    threshold: dict[str, Any] | None = None  # binary tasks: {"positive": label, "threshold": t, ...}
    temperature: float = 1.0  # the softmax temperature inside the graph (`cnnkit calibrate`); 1: none
    lane_session: Any = None  # shared by the lanes (ORT sessions are safe to run from several threads); None: session
    lanes: int = 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        size = self.preprocess.input_size
        return size, size, 3

    def run(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, H, W, 3] in 0..255 -> probabilities [N, C], on every thread."""
        return self.session.run([self.output_name], {self.input_name: images})[0]

    def run_lane(self, images: np.ndarray) -> np.ndarray:
        """As `run`, on one lane's share of the threads; up to `lanes` of these calls may run at once."""
        session = self.lane_session or self.session
        return session.run([self.output_name], {self.input_name: images})[0]


@dataclass
class ServedModel:
    name: str
    versions: dict[int, ServedVersion] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def resolve(self, *, version: int | None = None, label: str | None = None) -> ServedVersion:
        """The requested version, the labelled one, or the highest; KeyError with a message when absent."""
        if label is not None:
            if label not in self.labels:
                raise KeyError(f"model {self.name!r} has no version label {label!r}")
            version = self.labels[label]
        if version is None:
            version = max(self.versions)
        if version not in self.versions:
            raise KeyError(f"model {self.name!r} has no version {version}")
        return self.versions[version]


class ModelRepository:
    """Models loaded once at start-up from configured paths; requests only ever look names up in memory."""

    def __init__(self, *, threads: int = 0, lanes: int = 0, precision: str = "fp32") -> None:
        self.models: dict[str, ServedModel] = {}
        self.precision = precision  # "int8": serve each export's model.int8.onnx
        self.threads = threads or (os.cpu_count() or 1)
        # One lane per thread, at most MAX_DEFAULT_LANES: with more, a second request on an otherwise idle big
        # machine would run on a single core while the rest wait (measured on 2 cores only).
        self.lanes = max(1, min(lanes or MAX_DEFAULT_LANES, self.threads))

    def add_path(self, path: Path, *, name: str | None = None) -> None:
        """A run dir, an export dir, or a TF-Serving-style base dir NAME/ with numbered version subdirs."""
        path = Path(path)
        if not path.exists():
            raise no_such_path(path)
        if not path.is_dir():
            raise CnnkitError(f"{path}: a file; serve a run directory or an export directory")
        versions = sorted(int(p.name) for p in path.iterdir() if p.is_dir() and _is_version(p.name))
        if versions and find_export_dir(path) is None:
            for version in versions:
                self.add_version(name or path.name, version, path / str(version))
        else:
            self.add_version(name or path.resolve().name, 1, path)

    def add_version(self, name: str, version: int, path: Path) -> None:
        if not NAME_PATTERN.match(name):
            raise CnnkitError(f"model name {name!r}: use letters, digits, '.', '_' and '-'")
        export = find_export_dir(path)
        if export is None:
            if not (Path(path) / names.CONFIG).is_file():
                raise CnnkitError(f"{path}: neither a run directory (no config.json) nor an export (no "
                                  f"{names.EXPORT_INFO})")
            raise CnnkitError(f"{path}: no exported model (run `cnnkit export {path}` first)")
        check_current(export)  # never serve an export made from weights the run no longer has
        model = self.models.setdefault(name, ServedModel(name))
        if version in model.versions:
            raise CnnkitError(f"model {name!r} version {version} is given twice")
        model.versions[version] = self._load(name, version, export)

    def add_label(self, name: str, label: str, version: int) -> None:
        if name not in self.models or version not in self.models[name].versions:
            raise CnnkitError(f"label {name}:{label}={version}: no such model version")
        if not NAME_PATTERN.match(label):
            raise CnnkitError(f"label {label!r}: use letters, digits, '.', '_' and '-'")
        self.models[name].labels[label] = version

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
            raise KeyError(f"no model named {name!r}")
        return self.models[name]

    def _load(self, name: str, version: int, export: Path) -> ServedVersion:
        import onnxruntime as ort

        # Every session is built from the bytes that were checked.
        info, model = read_verified_model(export, precision=self.precision)

        def session(threads: int) -> Any:
            return ort.InferenceSession(model, session_options(threads), providers=["CPUExecutionProvider"])

        return ServedVersion(
            name=name, version=version, path=export, session=session(self.threads),
            class_names=json.loads((export / names.CLASSES).read_text()),
            preprocess=Preprocess.from_dict(json.loads((export / names.PREPROCESS).read_text())),
            input_name=info["input"]["name"], output_name=info["output"]["name"], threshold=info.get("threshold"),
            temperature=export_temperature(info),
            lane_session=session(self.threads // self.lanes) if self.lanes > 1 else None, lanes=self.lanes,
        )


def session_options(threads: int) -> Any:
    """ONNX Runtime session options for serving with `threads` intra-op threads (also used by bench/serve_load.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's worker threads spin while they wait for work, inside a call (turning that off slowed single images) and
    # after it. Between calls the cores belong to request parsing and HTTP, so they stop spinning
    # when a call returns; no cost measured at concurrency 1 (bench/serve_load.py).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    # One memory arena for every session of the server (each lane's and each model version's) instead of one per
    # session: an arena keeps what it grows to, and with one per lane a flood of many-request batches grew each of
    # them; shared, the server's RSS comes back closer after a flood at the same speed (README: the attack table).
    _register_shared_cpu_arena()
    options.add_session_config_entry("session.use_env_allocators", "1")
    return options


@functools.cache
def _register_shared_cpu_arena() -> None:
    """Register ONNX Runtime's process-wide CPU arena (default settings) once; sessions opt in to it."""
    import onnxruntime as ort

    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg({}))


def _is_version(name: str) -> bool:
    """TF Serving version directories: ASCII digits only (str.isdigit also accepts '²' and other scripts' digits)."""
    return re.fullmatch(r"[0-9]{1,18}", name) is not None

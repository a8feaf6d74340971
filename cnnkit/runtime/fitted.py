"""What is fitted on held-out data after training, for one set of best weights: a binary run's decision threshold
(threshold.json, `cnnkit evaluate --target-fpr`) and the softmax temperature (temperature.json, `cnnkit calibrate`).

Each file records the sha256 of the weights it was fitted for. Once the run's best weights change (a resumed run
found better ones) it no longer describes them: read then, it is refused with the command that fits it again,
never applied; training removes such files itself, saying so. A threshold.json from before cnnkit recorded the
weights is taken as it is.

No torch here: the server uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit import artifacts as names
from cnnkit.errors import CnnkitError
from cnnkit.files import read_json
from cnnkit.rundir import RunDir

WEIGHTS_KEY = "weights_sha256"
# Each fitted file, and the command that fits it again.
REFIT = {names.THRESHOLD: "cnnkit evaluate RUN --target-fpr F", names.TEMPERATURE: "cnnkit calibrate RUN"}


def best_weights_sha256(run: Path) -> str | None:
    """The sha256 of the run's best weights, as its manifest records them."""
    return RunDir(Path(run)).manifest().get(names.WEIGHTS_BEST, {}).get("sha256")


def stale_reason(run: Path, name: str) -> str | None:
    """Why RUN/`name` no longer fits the run's best weights, or None when it does (or is not there)."""
    path = Path(run) / name
    if not path.is_file():
        return None
    fitted_for = read_json(path).get(WEIGHTS_KEY)
    current = best_weights_sha256(run)
    if fitted_for is None or fitted_for == current:
        return None
    return (f"{path} was fitted for weights {fitted_for[:12]}, but the run's {names.WEIGHTS_BEST} is now "
            f"{(current or 'missing')[:12]} (the run was resumed or retrained since): fit it again with "
            f"`{REFIT[name].replace('RUN', str(run))}`")


def read_fitted(run: Path, name: str) -> dict[str, Any] | None:
    """RUN/`name` if it is there, refused if it was fitted for other weights."""
    reason = stale_reason(run, name)
    if reason is not None:
        raise CnnkitError(reason)
    path = Path(run) / name
    return read_json(path) if path.is_file() else None


def stale_files(run: Path) -> list[str]:
    """The fitted files in `run` that describe other weights than its best."""
    return [name for name in REFIT if stale_reason(run, name) is not None]


def run_threshold(run: Path) -> dict[str, Any] | None:
    """A binary run's decision threshold as `cnnkit evaluate --target-fpr` stored it (RUN/threshold.json), if any."""
    return read_fitted(run, names.THRESHOLD)


def run_temperature(run: Path) -> float:
    """The temperature the run's logits are divided by before the softmax: RUN/temperature.json's, else 1."""
    fitted = read_fitted(run, names.TEMPERATURE)
    return float(fitted["temperature"]) if fitted else 1.0

"""Fuzz a real server process with Hypothesis-generated hostile requests; count cases, errors and 5xx answers.

    python bench/fuzz_server.py [--cases 10000]

Trains and exports a tiny model on generated shapes, serves it, then sends --cases requests drawn from the same
strategies as tests/serving/test_fuzz.py. Most go to routes that exist with well-formed bodies carrying hostile
images (every format and mode Pillow writes, extreme aspect ratios, transparency, 16-bit, many frames, EXIF
rotations, truncated or bit-flipped files); the rest are malformed JSON, wrong types, NaN and infinities, wrong
shapes and ranks, bad base64, unknown models, versions and labels, and hostile paths. `reached_decoder` counts the
answers that came from decoding images (a 200, or a 400 naming an image).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests"), str(ROOT / "tests" / "serving")]

from common import table  # noqa: E402
from fuzzing import requests, send  # noqa: E402
from helpers import CLASSES, free_port, make_shapes, start_server, stop_server  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402


def tiny_export(directory: Path) -> Path:
    import numpy as np

    from cnnkit.config import ExportConfig, TrainConfig
    from cnnkit.deploy.onnx import export_run
    from cnnkit.training.fit import train

    x, y = make_shapes(30, seed=1)
    data = directory / "shapes.npz"
    np.savez(data, x=x, y=y, class_names=np.array(CLASSES))
    run = directory / "run"
    train(TrainConfig(data=f"npz:{data}", out=run, epochs=1, quiet=True, device="cpu"))
    export_run(ExportConfig(run=run))
    base = directory / "models" / "shapes" / "1"
    base.parent.mkdir(parents=True)
    (run / "export").rename(base)
    return base.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = tiny_export(Path(tmp))
        port = free_port()
        server = start_server(str(models), "--label", "shapes:stable=1", "--max-body-mb", "1", port=port)
        codes: collections.Counter[int] = collections.Counter()
        bad: list[str] = []
        decoded = {"n": 0}
        reasons: collections.Counter[str] = collections.Counter()
        started = time.perf_counter()

        @settings(max_examples=args.cases, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request=requests)
        def one(request: tuple[str, str, bytes]) -> None:
            method, path, body = request
            try:
                status, payload = send("127.0.0.1", port, method, f"/v1/models/{path}",
                                       body if method == "POST" else None)
            except Exception as exc:  # noqa: BLE001 - a dropped connection is a finding, not a crash of the bench
                codes[0] += 1
                bad.append(f"{method} {path}: {exc!r}")
                return
            codes[status] += 1
            error = payload.get("error", "") if isinstance(payload, dict) else ""
            reasons[" ".join(str(error).split()[:4])] += 1
            if status == 200 or str(error).startswith("image "):
                decoded["n"] += 1  # reached the image decoder (answered, or refused an image)
            if status >= 500 or (status >= 400 and not (isinstance(payload, dict) and payload.get("error"))):
                bad.append(f"{method} {path}: {status} {payload}")

        one()
        elapsed = time.perf_counter() - started
        alive = server.poll() is None
        stop_server(server)
    total = sum(codes.values())
    print(table([{"cases": total, "seconds": elapsed, "2xx": sum(v for k, v in codes.items() if 200 <= k < 300),
                  "4xx": sum(v for k, v in codes.items() if 400 <= k < 500),
                  "5xx_or_dropped": sum(v for k, v in codes.items() if k >= 500 or k == 0),
                  "reached_decoder": decoded["n"], "404_or_405": codes[404] + codes[405],
                  "bad_answers": len(bad), "server_alive": alive}]))
    print("status codes:", dict(sorted(codes.items())))
    print("most common answers (first words of the error):", reasons.most_common(8))
    for line in bad[:20]:
        print("  ", line)


if __name__ == "__main__":
    main()

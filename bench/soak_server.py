"""Soak test: many requests at high concurrency on loopback; errors and the server's memory before and after.

    python bench/soak_server.py [--requests 10000] [--concurrency 64]

Serves a small simple-cnn (trained one epoch on generated shapes), warms it up with 1,000 requests, records the
server's RSS, sends --requests requests (base64 PNGs) from a separate load-generator process, and records RSS again.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from common import rss_mib, table  # noqa: E402
from fuzz_server import tiny_export  # noqa: E402
from helpers import draw_shape, free_port, start_server, stop_server  # noqa: E402


def body_file(directory: Path) -> Path:
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(draw_shape("cross", size=48, rng=np.random.default_rng(0))).save(buffer, format="PNG")
    path = directory / "body.json"
    path.write_text(json.dumps({"instances": [{"b64": base64.b64encode(buffer.getvalue()).decode()}]}))
    return path


def drive(port: int, body: Path, requests: int, concurrency: int) -> dict[str, float]:
    output = subprocess.run([sys.executable, str(ROOT / "bench" / "loadgen.py"), "--port", str(port), "--path",
                             "/v1/models/shapes:predict", "--body", str(body), "--concurrency", str(concurrency),
                             "--requests", str(requests)], capture_output=True, text=True, check=True)
    return json.loads(output.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = tiny_export(Path(tmp))
        body = body_file(Path(tmp))
        port = free_port()
        server = start_server(str(models), port=port)
        try:
            warm = drive(port, body, args.warmup, args.concurrency)
            time.sleep(1)
            before = rss_mib(server.pid)
            soak = drive(port, body, args.requests, args.concurrency)
            time.sleep(1)
            after = rss_mib(server.pid)
            alive = server.poll() is None
        finally:
            stop_server(server)
    print(table([{"phase": "warm-up", **{k: round(v, 1) for k, v in warm.items()}},
                 {"phase": "soak", **{k: round(v, 1) for k, v in soak.items()}}]))
    print()
    print(table([{"rss_after_warmup_mib": before, "rss_after_soak_mib": after,
                  "growth": f"{(after - before) / before:+.1%}", "server_alive": alive}]))


if __name__ == "__main__":
    main()

"""A small closed-loop HTTP load generator: N threads, each with a keep-alive connection, for a bounded time.

Run as its own process by the serving benchmarks so that the client does not share the server's interpreter:
    python bench/loadgen.py --port 8501 --path /v1/models/m:predict --body body.json --concurrency 8 --seconds 10
Prints one JSON line: requests, errors, requests/s, p50/p95/p99 latency in ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from pathlib import Path


def drive(*, port: int, path: str, body: bytes, concurrency: int, seconds: float = 0.0,
          requests: int = 0) -> dict[str, float]:
    """Closed loop until `seconds` pass or `requests` requests are sent in all; returns the summary."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    sent = [0]
    stop_at = time.perf_counter() + seconds if seconds else float("inf")

    def take() -> bool:
        with lock:
            if requests and sent[0] >= requests:
                return False
            sent[0] += 1
            return True

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        own: list[float] = []
        while time.perf_counter() < stop_at and take():
            started = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            own.append(time.perf_counter() - started)
            if not ok:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors[0], "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--requests", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(drive(port=args.port, path=args.path, body=args.body.read_bytes(),
                           concurrency=args.concurrency, seconds=args.seconds, requests=args.requests)))


if __name__ == "__main__":
    main()

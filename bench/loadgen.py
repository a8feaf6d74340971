"""A small closed-loop HTTP load generator: N keep-alive connections on one asyncio loop, for a bounded time.

Run as its own process by the serving benchmarks so that the client does not share the server's interpreter:
    python bench/loadgen.py --port 8501 --path /v1/models/m:predict --body body.json --concurrency 8 --seconds 10
Prints one JSON line: requests, errors, requests/s, p50/p95/p99 latency in ms, and the client's own CPU seconds.

One event loop with pre-built request bytes keeps the client's CPU share small: on a 2-core machine every
millisecond the client spends is taken from the server it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path


async def _one_connection(port: int, request: bytes, stop_at: float, budget: list[float],
                          latencies: list[float], errors: list[int]) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at and budget[0] > 0:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status = await _read_response(reader)
            ok = status == 200
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ok = False
            if writer is not None:
                writer.close()
            reader = writer = None
        latencies.append(time.perf_counter() - started)
        if not ok:
            errors[0] += 1
    if writer is not None:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status


def drive(*, port: int, path: str, body: bytes, concurrency: int, seconds: float = 0.0,
          requests: int = 0) -> dict[str, float]:
    """Closed loop until `seconds` pass or `requests` requests are sent in all; returns the summary."""
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors = [0]
    budget = [float(requests) if requests else float("inf")]  # requests left to send
    stop_at = time.perf_counter() + seconds if seconds else float("inf")

    async def run() -> None:
        await asyncio.gather(*(_one_connection(port, request, stop_at, budget, latencies, errors)
                               for _ in range(concurrency)))

    cpu, started = time.process_time(), time.perf_counter()
    asyncio.run(run())
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors[0], "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "client_cpu_s": cpu}


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

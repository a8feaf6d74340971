"""Small data the tests make themselves: coloured shapes that a tiny CNN learns in a few epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ["circle", "cross", "square"]  # sorted, as folder sources order them


def draw_shape(kind: str, *, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image of one shape at a random place, colour and scale on a noisy background."""
    background = tuple(int(v) for v in rng.integers(0, 90, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    r = size * rng.uniform(0.22, 0.32)
    cx, cy = rng.uniform(r, size - r, 2)
    colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    else:
        width = max(2, int(r / 2))
        draw.line((cx - r, cy, cx + r, cy), fill=colour, width=width)
        draw.line((cx, cy - r, cx, cy + r), fill=colour, width=width)
    noise = rng.integers(-12, 13, (size, size, 3))
    return np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)


def make_shapes(n_per_class: int, *, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.stack([draw_shape(kind, size=size, rng=rng) for kind in CLASSES for _ in range(n_per_class)])
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    order = rng.permutation(len(y))
    return x[order], y[order]


def write_tree(root: Path, n_per_class: int, *, size: int = 40, seed: int = 0) -> Path:
    """One folder per class of PNG files (mixed modes and sizes, as real folders are)."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            image = Image.fromarray(draw_shape(kind, size=size + int(rng.integers(0, 9)), rng=rng))
            if i % 5 == 1:
                image = image.convert("RGBA")
            elif i % 5 == 2:
                image = image.convert("P")
            suffix = ".jpg" if i % 5 == 3 else ".png"
            image.convert("RGB").save(root / kind / f"{i:03d}.jpg") if suffix == ".jpg" else image.save(
                root / kind / f"{i:03d}{suffix}")
    return root


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(*args: str, port: int, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    """`python -m cnnkit serve ARGS --port PORT` as a real process; returns it once /healthz answers."""
    import subprocess
    import sys
    import time
    import urllib.request

    # Load shedding judges by measured speed, which a shared test machine does not keep: off unless a test asks.
    shedding = () if "--max-queue-wait" in args else ("--max-queue-wait", "0")
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", "serve", *args, *shedding, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stdout.read() if process.stdout else ''}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def stop_server(process) -> None:  # type: ignore[no-untyped-def]
    process.terminate()
    try:
        process.wait(timeout=10)
    except Exception:  # noqa: BLE001
        process.kill()


def tiny_chunk_png(chunks: int) -> bytes:
    """A valid 32 x 32 grey PNG whose compressed data is cut into `chunks` IDAT chunks (the last one the rest)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    stream = zlib.compress(b"".join(b"\x00" + bytes(range(32)) for _ in range(32)))
    pieces = [stream[i:i + 1] for i in range(min(chunks - 1, len(stream) - 1))]
    pieces += [b""] * (chunks - 1 - len(pieces)) + [stream[len(pieces):]]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 8, 0, 0, 0, 0))
            + b"".join(chunk(b"IDAT", p) for p in pieces) + chunk(b"IEND", b""))


def cli_here(*args: object, cwd: Path | None = None):  # type: ignore[no-untyped-def]
    """`cnnkit ARGS` (run from `cwd`): the command's main() in this process, its exit status and output captured as
    a CompletedProcess (what `python -m cnnkit` runs, less the seconds a fresh interpreter takes to import PyTorch).
    Commands that must be processes of their own (torchrun, signals, a terminal) are run with subprocess instead."""
    import contextlib
    import io
    import os
    import subprocess

    from cnnkit.cli import main

    out, err, previous = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(arg) for arg in args])
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["cnnkit", *map(str, args)], code, out.getvalue(), err.getvalue())

"""Prediction in bulk: folders, globs and lists; a row for every file, bad ones included; --resume."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import cli_here, write_tree
from PIL import Image

import cnnkit


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    """`cnnkit ARGS`: in this process, but as a process of its own where torchrun starts the ranks (--nproc)."""
    if "--nproc" not in args:
        return cli_here(*args)
    return subprocess.run([sys.executable, "-m", "cnnkit", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def photos(tmp_path: Path) -> Path:
    root = write_tree(tmp_path / "photos", 4, size=36, seed=7)
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def test_every_file_gets_a_row_and_a_bad_one_its_error(exported_run: Path, tmp_path: Path) -> None:
    root = photos(tmp_path)
    out = tmp_path / "predictions.csv"
    result = cli("predict", exported_run, root, "--csv", out, "--batch-size", "5")
    assert result.returncode == 2 and "1 file(s) failed" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 13 and len({r["path"] for r in rows}) == 13
    broken = next(r for r in rows if r["path"].endswith("broken.png"))
    assert broken["error"] and not broken["label"]
    good = [r for r in rows if not r["error"]]
    assert all(r["label"] in ("circle", "cross", "square") and r["top"].count(":") == 3 for r in good)
    clf = cnnkit.load(exported_run, device="cpu")
    first = Path(good[0]["path"])
    assert good[0]["label"] == clf.predict(first).label


def test_resume_skips_what_the_file_has(exported_run: Path, tmp_path: Path) -> None:
    root = photos(tmp_path)
    out = tmp_path / "predictions.jsonl"
    listing = tmp_path / "some.txt"
    listing.write_text("\n".join(str(p) for p in sorted((root / "cross").glob("*"))[:2]) + "\n")
    assert cli("predict", exported_run, f"@{listing}", "--jsonl", out).returncode == 0
    with out.open("a") as handle:
        handle.write('{"path": "cut sho')  # as a killed run leaves its last line
    result = cli("predict", exported_run, f"{root}/*/*.png", "--jsonl", out, "--resume")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == len(list(root.glob("*/*.png")))
    assert result.returncode == 2  # broken.png is among them


def test_predict_files_in_the_api_holds_a_batch_at_a_time(exported_run: Path, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    rows = list(cnnkit.load(exported_run / "export").predict_files([tmp_path, tmp_path / "missing.png"],
                                                                    batch_size=1, top_k=2))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "missing.png"]
    assert len(rows[0]["top"]) == 2 and "no such file" in rows[1]["error"]


def test_two_processes_share_the_files_and_merge_one_file_in_order(exported_run: Path, tmp_path: Path) -> None:
    root = photos(tmp_path)
    single, double = tmp_path / "single.csv", tmp_path / "double.csv"
    assert cli("predict", exported_run, root, "--csv", single).returncode == 2
    result = cli("predict", exported_run, root, "--csv", double, "--nproc", "2", "--device", "cpu")
    assert result.returncode == 2, result.stdout + result.stderr  # broken.png failed, in whichever rank had it
    assert result.stdout.count("Written:") == 1  # rank 0 merged and reported
    one, two = list(csv.DictReader(single.open())), list(csv.DictReader(double.open()))
    assert [r["path"] for r in two] == [r["path"] for r in one]  # every file once, in the single run's order
    assert [(r["label"], r["error"] != "") for r in two] == [(r["label"], r["error"] != "") for r in one]
    assert not list(tmp_path.glob("double.csv.part*"))  # the ranks' parts were merged away


def test_a_killed_distributed_job_resumes_from_its_parts(exported_run: Path, tmp_path: Path) -> None:
    root = photos(tmp_path)
    out = tmp_path / "out.jsonl"
    files = sorted(str(p) for p in root.rglob("*.png"))
    # As rank 1 of two leaves its part when the job is killed: one row done, the next cut short.
    (tmp_path / "out.jsonl.part1").write_text(json.dumps({"path": files[1], "label": "circle", "score": 1.0,
                                                          "top": [["circle", 1.0]]}) + '\n{"path": "cut')
    result = cli("predict", exported_run, *files, "--jsonl", out, "--nproc", "2", "--device", "cpu", "--resume")
    assert result.returncode == 2, result.stdout + result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == files
    assert rows[1]["score"] == 1.0  # kept from the part, not predicted again


def test_resume_of_a_csv_skips_what_it_has(exported_run: Path, tmp_path: Path) -> None:
    root = photos(tmp_path)
    out = tmp_path / "predictions.csv"
    first = sorted(str(p) for p in (root / "square").glob("*.png"))
    assert cli("predict", exported_run, *first, "--csv", out).returncode == 0
    kept = {row["path"]: row["score"] for row in csv.DictReader(out.open())}
    result = cli("predict", exported_run, root, "--csv", out, "--resume")
    assert result.returncode == 2  # broken.png
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len({r["path"] for r in rows}) == 13  # each file once, the header once
    assert {r["path"]: r["score"] for r in rows if r["path"] in kept} == kept  # not predicted again


def test_resume_refuses_a_file_another_model_or_setting_wrote(exported_run: Path, fast_run: Path,
                                                              tmp_path: Path) -> None:
    root = photos(tmp_path)
    out = tmp_path / "predictions.jsonl"
    first = sorted(str(p) for p in (root / "square").glob("*.png"))
    assert cli("predict", exported_run, *first, "--jsonl", out).returncode == 0
    before = out.read_text()
    other = cli("predict", fast_run, root, "--jsonl", out, "--resume")  # another run's weights
    assert other.returncode == 2 and "was written with another weights_sha256" in other.stderr
    fewer = cli("predict", exported_run, root, "--jsonl", out, "--resume", "--top-k", "2")
    assert fewer.returncode == 2 and "was written with another top_k" in fewer.stderr
    assert out.read_text() == before  # nothing appended
    assert cli("predict", exported_run, root, "--jsonl", out, "--resume").returncode == 2  # broken.png only
    assert len(out.read_text().splitlines()) == 13

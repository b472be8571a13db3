"""Shared pieces of the benchmark scripts: a served model-repo, percentiles, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
MODEL_REPO = ROOT / "model-repo"

sys.path.insert(0, str(ROOT))
from tests.e2e.server import Server, running_server  # noqa: E402


@contextmanager
def served(models: Sequence[str], repo: Path = MODEL_REPO) -> Iterator[Server]:
    """`mlserver start` on free 127.0.0.1 ports for the duration of a benchmark."""
    with tempfile.TemporaryDirectory() as logs, running_server(repo, models, Path(logs)) as srv:
        yield srv


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far; Linux /proc only."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is `pid` (the server's engine processes), but multiprocessing's
    resource tracker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: Sequence[float]) -> float:
    """The median, nan for no values."""
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, object]:
    """Where the numbers come from."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def table(cols: list[str], rows: list[dict]) -> str:
    """A markdown table of `cols` of `rows` (missing values blank)."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, results: dict[str, object]) -> Path:
    """Save a benchmark's results as JSON under benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2))
    return path

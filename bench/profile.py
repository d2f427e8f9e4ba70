"""Where a gateway process spends its time under load: a py-spy profile.

    .venv/bin/python bench/profile.py [--mode full] [--concurrency 1]
        [--seconds 20] [--label before]

It starts the bench upstream and a gateway exactly as ``bench/run.py`` does,
attaches ``py-spy`` (``pip install py-spy``) to the gateway while the load
generator runs, and writes ``bench/results/profile-<label>.md``: the share of
the gateway's CPU samples spent in each function (inclusive, then own), the
CPU the gateway used per request, and the throughput of the profiled run.
The raw collapsed stacks go beside it (``.folded``) for a flame graph.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/ is a folder of scripts, not a package

TOP = 35


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / 100.0


def profiled_load(
    pid: int, url: str, key: str, args: argparse.Namespace, folded: Path
) -> tuple[dict[str, object], float]:
    """Run the load with py-spy attached; the load's figures and CPU seconds."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    recorder = subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"),
            *("--output", str(folded), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    before = cpu_seconds(pid)
    figures = bench.load(url, key, args.concurrency, args.seconds)
    used = cpu_seconds(pid) - before
    recorder.send_signal(2)
    recorder.wait(timeout=60)
    return figures, used


def shares(folded: Path) -> tuple[Counter[str], Counter[str], int]:
    """Inclusive and own sample counts per function, and the total."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame.split(" (")[0] + _where(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return inclusive, own, total


def _where(frame: str) -> str:
    """`` (module.py)`` of a py-spy frame ``name (path:line)``."""
    if " (" not in frame:
        return ""
    path = frame.split(" (", 1)[1].rsplit(":", 1)[0]
    parts = Path(path).parts
    return f" ({'/'.join(parts[-2:])})"


def report(
    args: argparse.Namespace, figures: dict[str, object], used: float, folded: Path
) -> str:
    inclusive, own, total = shares(folded)
    requests = int(str(figures["requests"])) or 1
    lines = [
        f"# Profile: {args.label} ({args.mode}, c={args.concurrency}, "
        f"{args.seconds:g} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"- throughput {float(str(figures['rps'])):.0f} req/s, p50 "
        f"{float(str(figures['p50_ms'])):.2f} ms, p99 "
        f"{float(str(figures['p99_ms'])):.2f} ms",
        f"- gateway CPU per request: {used / requests * 1000:.2f} ms "
        f"({used / args.seconds * 100:.0f}% of one core)",
        f"- {total} samples",
        "",
        "| inclusive % | own % | function |",
        "|---|---|---|",
    ]
    for name, count in inclusive.most_common(TOP):
        lines.append(
            f"| {count / total * 100:.1f} | {own[name] / total * 100:.1f} | `{name}` |"
        )
    lines += ["", "| own % | function (most own time) |", "|---|---|"]
    for name, count in own.most_common(TOP):
        lines.append(f"| {count / total * 100:.1f} | `{name}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="full", choices=["full", "embedded"])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--label", default="latest")
    parser.add_argument(
        "--stages",
        type=lambda v: v.split(","),
        default=bench.FULL_STAGES,
        help="the stages of the full pipeline to keep (default: all)",
    )
    parser.add_argument("--output", type=Path, default=bench.HERE / "results")
    args = parser.parse_args()

    bench.FULL_STAGES[:] = args.stages
    args.output.mkdir(parents=True, exist_ok=True)
    folded = args.output / f"profile-{args.label}.folded"
    with tempfile.TemporaryDirectory(prefix="sluicegate-profile-") as scratch:
        workdir = Path(scratch)
        upstream_port = bench.free_port()
        upstream = [bench.PYTHON, str(bench.HERE / "upstream.py")]
        command = bench.pinned(1, [*upstream, "--port", str(upstream_port)])
        with bench.process(command, workdir / "upstream.log"):
            bench.wait_port(upstream_port)
            with bench.serving(args.mode, upstream_port, workdir) as served:
                proc, port, key, _ = served
                pid = bench.children(proc.pid)[0] if bench.children(proc.pid) else 0
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                figures, used = profiled_load(pid or proc.pid, url, key, args, folded)
    text = report(args, figures, used, folded)
    (args.output / f"profile-{args.label}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

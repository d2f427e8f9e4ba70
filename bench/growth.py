"""How the gateway's cost grows (issue #9, part 4): one command.

    .venv/bin/python bench/growth.py [--seconds 5] [--rounds 3]
        [--dimensions stages,keys,audit,streams]

Every figure is a load at concurrency 1 (bench/load.py, pinned to core 1)
through a gateway (pinned to core 0); overhead = gateway latency - latency of
the upstream measured directly in the same rounds.  Gateways run as
``bench/run.py``'s ``full`` mode (PostgreSQL and Redis), each on a fresh
database and Redis prefix, both removed afterwards.

The machine is shared, so the points of a dimension are measured
interleaved: all its gateways run at once, and each point gets ``--rounds``
loads of ``--seconds / --rounds``, every round in a new random order; a
point's figure is the median over its rounds.  Slow drift in the machine's
load then spreads over all points instead of biasing the last ones.  Each
dimension measures its first point twice (``(repeat)``): the difference is
the noise of that run, shown beside the verdicts.

* **stages**: the full pipeline, then with 1, 2, 4, 8 and 16 extra stages
  before ``route``, each variant a workspace of one gateway with its own
  pipeline file: ``rate_limit`` stages (distinct ids, limits never reached: a
  Redis round trip each, as layered limits would be) and ``safety_input``
  stages running the ``secrets`` evaluator (CPU only).
* **keys**: 10 to 100,000 API keys over 10 to 1,000 workspaces (COPY), on
  the minimal pipeline (auth, route) so the lookup is not hidden by other
  stages: one key (warm: the key cache), keys in turn with the cache on, keys
  in turn with the cache off (``SLUICEGATE_KEY_CACHE_SECONDS=0``: a database
  lookup per request, its own gateway); and the lookup itself in process.
* **audit**: 0, 100,000 and 1,000,000 records with payloads already in the
  bench workspace's chain (300,000 if the 100,000 insert predicts over a
  minute for the million), the full pipeline; and ``chain.append`` timed in
  process.
* **streams**: streams of 10 to 10,000 chunks, one upstream per length: time
  to first byte overhead and total overhead per chunk.

Results: bench/results/growth.json and bench/results/growth.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import growth_data as data  # bench/ is a folder of scripts, not a package
import growth_report as report
import run as bench

STAGE_COUNTS = [1, 2, 4, 8, 16]
STAGE_SERIES: dict[str, Callable[[int], dict[str, Any]]] = {
    "rate_limit": lambda i: {
        "type": "rate_limit",
        "id": f"limit_{i}",
        "limits": [{"scope": "api_key", "requests": 10_000_000, "per": "minute"}],
    },
    "safety_input": lambda i: {
        "type": "safety_input",
        "id": f"screen_{i}",
        "evaluators": ["secrets"],
    },
}
KEY_COUNTS = [10, 1_000, 10_000, 100_000]
ROTATION_KEYS = 3_000
"""Keys a rotating load cycles through: more than one round sends."""
LOOKUPS_PER_ROUND = 700
AUDIT_ROWS = [0, 100_000, 1_000_000]
AUDIT_FALLBACK_ROWS = 300_000
AUDIT_INSERT_BUDGET_S = 60.0
AUDIT_APPENDS_PER_ROUND = 100
STREAM_CHUNKS = [10, 100, 1_000, 10_000]
DIMENSIONS = ("stages", "keys", "audit", "streams")
MINIMAL_PIPELINE = {"stages": [{"type": "auth"}, {"type": "route", "retries": 0}]}
WARMUP_S = 0.5
FIGURES = ("p50_ms", "p99_ms", "rps", "ttfb_p50_ms", "ttfb_p99_ms")
REPEAT = " (repeat)"


@dataclass(frozen=True)
class Served:
    """A running gateway: its chat completions URL, bench key and database."""

    url: str
    key: str
    database_url: str


@dataclass(frozen=True)
class Target:
    """One point: where the load goes, with which key, and which other point
    is its direct-upstream baseline (None: it is a baseline)."""

    url: str
    key: str | None = None
    baseline: str | None = "direct"
    load: dict[str, Any] = field(default_factory=dict)


@contextmanager
def gateway(
    workdir: Path,
    upstream_port: int,
    fill: Callable[[str], None] | None = None,
    **options: Any,
) -> Iterator[Served]:
    """A full-mode gateway (``options`` go to ``bench.serving``); ``fill(url)``
    runs on its provisioned database before it starts.  Its database and
    Redis keys are removed when it stops."""
    workdir.mkdir(parents=True)
    env: dict[str, str] = {}

    def prepare(provisioned: dict[str, str]) -> None:
        env.update(provisioned)
        if fill is not None:
            fill(provisioned["SLUICEGATE_DATABASE_URL"])

    try:
        with bench.serving(
            "full", upstream_port, workdir, prepare=prepare, **options
        ) as (_, port, key, _):
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            yield Served(url, key, env["SLUICEGATE_DATABASE_URL"])
    finally:
        if "SLUICEGATE_DATABASE_URL" in env:
            data.drop_database(env["SLUICEGATE_DATABASE_URL"])
            data.forget_redis(bench.REDIS, env["SLUICEGATE_REDIS_PREFIX"])


# -- interleaved measurement -----------------------------------------------------


def interleaved(
    targets: dict[str, Target], args: argparse.Namespace, what: str
) -> dict[str, dict[str, Any]]:
    """Every target's figures: the median over ``args.rounds`` loads, each
    round in a new random order, plus its overhead over its baseline."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    order = list(targets)
    shuffle = random.Random(what).shuffle
    for round_ in range(args.rounds):
        shuffle(order)
        for name in order:
            target = targets[name]
            runs[name].append(
                bench.load(
                    target.url,
                    target.key,
                    1,
                    args.seconds / args.rounds,
                    warmup=WARMUP_S,
                    **target.load,
                )
            )
        progress(f"{what}: round {round_ + 1} of {args.rounds} done")
    figures = {name: medians(runs[name]) for name in targets}
    for name, target in targets.items():
        if target.baseline is not None:
            add_overhead(figures[name], figures[target.baseline])
    return figures


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {
        name: round(statistics.median(float(run[name]) for run in runs), 3)
        for name in FIGURES
    }
    result["rounds_p50_ms"] = [round(float(run["p50_ms"]), 3) for run in runs]
    result["requests"] = sum(int(run["requests"]) for run in runs)
    result["errors"] = sum(int(run["errors"]) for run in runs)
    return result


def add_overhead(figures: dict[str, Any], direct: dict[str, Any]) -> None:
    for name in FIGURES:
        if name != "rps":
            figures[f"overhead_{name}"] = round(figures[name] - direct[name], 3)


def control(figures: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """How far a point and its repeat differ: this run's noise."""
    repeat = figures[name + REPEAT]
    return {
        "point": name,
        "p50_ms": [figures[name]["p50_ms"], repeat["p50_ms"]],
        "difference_ms": round(abs(figures[name]["p50_ms"] - repeat["p50_ms"]), 3),
    }


def direct_target(port: int, **load: Any) -> Target:
    return Target(upstream_url(port), baseline=None, load=load)


# -- stages ----------------------------------------------------------------------


def stage_pipelines(
    full: dict[str, Any],
) -> dict[str, tuple[str, int, dict[str, Any]]]:
    """Workspace name -> (series, extra stages, pipeline); ``base`` is the full
    pipeline alone."""
    stages = full["stages"]
    route = next(i for i, stage in enumerate(stages) if stage["type"] == "route")
    variants = {"base": ("full", 0, full)}
    for series, make in STAGE_SERIES.items():
        for count in STAGE_COUNTS:
            extra = [make(i) for i in range(1, count + 1)]
            pipeline = {"stages": stages[:route] + extra + stages[route:]}
            variants[f"{series.replace('_', '-')}-{count}"] = (series, count, pipeline)
    return variants


def measure_stages(
    args: argparse.Namespace, upstream_port: int, workdir: Path
) -> dict[str, Any]:
    """Every variant a workspace of one gateway, measured interleaved."""
    full = bench.full_pipeline()
    variants = stage_pipelines(full)
    keys: dict[str, str] = {}

    home = workdir / "gateway"

    def fill(url: str) -> None:
        for name, (_, _, pipeline) in variants.items():
            path = home / "pipelines" / f"{name}.yaml"
            path.write_text(yaml.safe_dump(pipeline))
        made = data.add_keys(url, list(variants), len(variants))
        keys.update(zip(variants, made, strict=True))

    with gateway(home, upstream_port, fill, pipeline=full) as served:
        targets = {"direct": direct_target(upstream_port)}
        targets |= {name: Target(served.url, keys[name]) for name in variants}
        targets["base" + REPEAT] = targets["base"]
        figures = interleaved(targets, args, "stages")
    rows = [
        {"workspace": name, "series": series, "extra": count, **figures[name]}
        for name, (series, count, _) in variants.items()
    ]
    return {
        "pipeline": [stage["type"] for stage in full["stages"]],
        "series": {name: make(1) for name, make in STAGE_SERIES.items()},
        "direct": figures["direct"],
        "rows": rows,
        "control": control(figures, "base"),
    }


# -- keys and workspaces ---------------------------------------------------------


def workspaces_for(keys: int) -> int:
    return min(1_000, max(10, keys // 100))


def key_filler(
    count: int, workdir: Path, chosen: dict[str, Any]
) -> Callable[[str], None]:
    """Fills a database with ``count`` keys; records in ``chosen`` a warm key
    and the sample of keys to rotate through (also written to a file)."""

    def fill(url: str) -> None:
        names = [f"tenant-{i:04d}" for i in range(workspaces_for(count))]
        keys = data.add_keys(url, names, count)
        sample = random.Random(count).sample(keys, min(count, ROTATION_KEYS))
        keys_file = workdir / "keys.txt"
        keys_file.write_text("\n".join(sample) + "\n")
        chosen.update(warm=keys[count // 2], sample=sample, keys_file=keys_file)

    return fill


@dataclass(frozen=True)
class KeyGateways:
    """The loads of one key count, and where to time its lookups in process."""

    targets: dict[str, Target]
    database_url: str
    sample: list[str]


def key_gateways(
    stack: ExitStack, count: int, upstream_port: int, workdir: Path
) -> KeyGateways:
    """Two gateways on ``count`` keys each: key cache on, key cache off."""
    cached: dict[str, Any] = {}
    on = stack.enter_context(
        gateway(
            workdir / f"keys-{count}",
            upstream_port,
            key_filler(count, workdir / f"keys-{count}", cached),
            pipeline=MINIMAL_PIPELINE,
        )
    )
    uncached: dict[str, Any] = {}
    off = stack.enter_context(
        gateway(
            workdir / f"keys-{count}-uncached",
            upstream_port,
            key_filler(count, workdir / f"keys-{count}-uncached", uncached),
            pipeline=MINIMAL_PIPELINE,
            extra_env={"SLUICEGATE_KEY_CACHE_SECONDS": "0"},
        )
    )
    targets = {
        f"warm {count}": Target(on.url, cached["warm"]),
        f"rotating {count}": Target(on.url, load={"keys_file": cached["keys_file"]}),
        f"cold {count}": Target(off.url, load={"keys_file": uncached["keys_file"]}),
    }
    return KeyGateways(targets, on.database_url, cached["sample"])


def measure_keys(
    args: argparse.Namespace, upstream_port: int, workdir: Path
) -> dict[str, Any]:
    with ExitStack() as stack:
        targets = {"direct": direct_target(upstream_port)}
        lookups = {}
        for count in KEY_COUNTS:
            lookups[count] = key_gateways(stack, count, upstream_port, workdir)
            targets |= lookups[count].targets
            progress(f"keys: gateways on {count:,} keys are up")
        first = f"cold {KEY_COUNTS[0]}"
        targets[first + REPEAT] = targets[first]
        figures = interleaved(targets, args, "keys")
        timed = interleaved_lookups(lookups, args.rounds)
    rows = [
        {
            "keys": count,
            "workspaces": workspaces_for(count),
            "warm": figures[f"warm {count}"],
            "rotating_cached": figures[f"rotating {count}"],
            "rotation_misses_cache": misses_cache(
                count, figures[f"rotating {count}"], args
            ),
            "cold": figures[f"cold {count}"],
            "lookup": timed[count],
        }
        for count in KEY_COUNTS
    ]
    return {
        "direct": figures["direct"],
        "rows": rows,
        "control": control(figures, first),
    }


def misses_cache(count: int, figures: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether a rotating load had more keys than it sent in a round (warm-up
    included), so that each of its requests missed the key cache."""
    measured = args.seconds / args.rounds
    sent = figures["requests"] / args.rounds * (WARMUP_S + measured) / measured
    return bool(min(count, ROTATION_KEYS) >= sent)


def interleaved_lookups(
    lookups: dict[int, KeyGateways], rounds: int
) -> dict[int, dict[str, Any]]:
    """The in-process lookup timing of each key count, interleaved like the
    loads (a different slice of the sample each round); medians over rounds."""
    runs: dict[int, list[dict[str, Any]]] = {count: [] for count in lookups}
    order = list(lookups)
    for round_ in range(rounds):
        random.Random(round_).shuffle(order)
        for count in order:
            sample = lookups[count].sample
            start = round_ * LOOKUPS_PER_ROUND
            chunk = sample[start : start + LOOKUPS_PER_ROUND] or sample
            runs[count].append(data.time_lookups(lookups[count].database_url, chunk))
    return {count: in_process_medians(found) for count, found in runs.items()}


def in_process_medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    result = {
        name: round(statistics.median(run[name] for run in runs), 1)
        for name in ("p50_us", "p99_us")
    }
    extra = {k: v for k, v in runs[-1].items() if k not in result}
    return {**extra, **result, "rounds_p50_us": [run["p50_us"] for run in runs]}


# -- audit table size ------------------------------------------------------------


def measure_audit(
    args: argparse.Namespace, upstream_port: int, workdir: Path
) -> dict[str, Any]:
    """The full pipeline over ever larger audit tables, interleaved; the
    largest size drops to AUDIT_FALLBACK_ROWS if the one before predicts its
    insert would take over AUDIT_INSERT_BUDGET_S."""
    filled: dict[int, dict[str, Any]] = {}
    with ExitStack() as stack:
        served = {}
        for size in AUDIT_ROWS[:-1]:
            served[size] = audit_gateway(stack, size, upstream_port, workdir, filled)
            progress(f"audit: {size:,} rows in {filled[size]['insert_s']} s")
        largest = audit_largest(filled[AUDIT_ROWS[-2]])
        served[largest] = audit_gateway(stack, largest, upstream_port, workdir, filled)
        progress(f"audit: {largest:,} rows in {filled[largest]['insert_s']} s")
        sizes = list(served)
        targets = {"direct": direct_target(upstream_port)}
        targets |= {str(n): Target(served[n].url, served[n].key) for n in sizes}
        targets["0" + REPEAT] = targets["0"]
        figures = interleaved(targets, args, "audit")
        appends = interleaved_appends({n: served[n].database_url for n in sizes}, args)
    rows = [
        {**filled[size], **figures[str(size)], "append": appends[size]}
        for size in sizes
    ]
    note = ""
    if sizes[-1] != AUDIT_ROWS[-1]:
        note = f"{AUDIT_ROWS[-1]:,} rows predicted over {AUDIT_INSERT_BUDGET_S:g} s"
    return {
        "direct": figures["direct"],
        "rows": rows,
        "control": control(figures, "0"),
        "note": note,
    }


def audit_largest(before: dict[str, Any]) -> int:
    rate = before["insert_s"] / max(before["rows"], 1)
    if rate * AUDIT_ROWS[-1] > AUDIT_INSERT_BUDGET_S:
        return AUDIT_FALLBACK_ROWS
    return AUDIT_ROWS[-1]


def audit_gateway(
    stack: ExitStack,
    size: int,
    upstream_port: int,
    workdir: Path,
    filled: dict[int, dict[str, Any]],
) -> Served:
    def fill(url: str) -> None:
        filled[size] = data.fill_audit(url, "bench", size)

    return stack.enter_context(gateway(workdir / f"audit-{size}", upstream_port, fill))


def interleaved_appends(
    databases: dict[int, str], args: argparse.Namespace
) -> dict[int, dict[str, Any]]:
    runs: dict[int, list[dict[str, Any]]] = {size: [] for size in databases}
    order = list(databases)
    for round_ in range(args.rounds):
        random.Random(round_).shuffle(order)
        for size in order:
            timed = data.time_appends(databases[size], "bench", AUDIT_APPENDS_PER_ROUND)
            runs[size].append(timed)
    return {size: in_process_medians(found) for size, found in runs.items()}


# -- stream length ---------------------------------------------------------------


def measure_streams(
    args: argparse.Namespace, upstream_port: int, workdir: Path
) -> dict[str, Any]:
    """One upstream per stream length, behind two gateways (one model per
    length): the full pipeline and, to tell the relay from the stages, the
    minimal one; the direct and gateway loads of every length interleaved."""
    with ExitStack() as stack:
        ports = {n: start_upstream(stack, workdir, n) for n in STREAM_CHUNKS}
        upstreams = {"bench-model": upstream_port}
        upstreams |= {f"stream-{n}": port for n, port in ports.items()}
        full = stack.enter_context(
            gateway(workdir / "full", upstream_port, upstreams=upstreams)
        )
        minimal = stack.enter_context(
            gateway(
                workdir / "minimal",
                upstream_port,
                upstreams=upstreams,
                pipeline=MINIMAL_PIPELINE,
            )
        )
        targets = {}
        for chunks, port in ports.items():
            targets[f"direct {chunks}"] = direct_target(port, stream=True)
            for suffix, served in (("", full), (" minimal", minimal)):
                targets[f"{chunks}{suffix}"] = Target(
                    served.url,
                    served.key,
                    baseline=f"direct {chunks}",
                    load={"stream": True, "model": f"stream-{chunks}"},
                )
        first = str(STREAM_CHUNKS[0])
        targets[first + REPEAT] = targets[first]
        figures = interleaved(targets, args, "streams")
    rows = [
        {
            **stream_row(n, figures[f"direct {n}"], figures[str(n)]),
            "minimal": stream_row(n, figures[f"direct {n}"], figures[f"{n} minimal"]),
        }
        for n in STREAM_CHUNKS
    ]
    return {"rows": rows, "control": control(figures, first)}


def stream_row(
    chunks: int, direct: dict[str, Any], figures: dict[str, Any]
) -> dict[str, Any]:
    per_chunk = figures["overhead_p50_ms"] / chunks * 1000
    return {
        "chunks": chunks,
        "direct_p50_ms": direct["p50_ms"],
        "direct_ttfb_p50_ms": direct["ttfb_p50_ms"],
        "overhead_per_chunk_us": round(per_chunk, 2),
        **figures,
    }


def start_upstream(stack: ExitStack, workdir: Path, chunks: int = 20) -> int:
    port = bench.free_port()
    command = [bench.PYTHON, str(bench.HERE / "upstream.py"), "--port", str(port)]
    command += ["--chunks", str(chunks)]
    log = workdir / f"upstream-{chunks}.log"
    stack.enter_context(bench.process(bench.pinned(1, command), log))
    bench.wait_port(port)
    return port


def upstream_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/chat/completions"


# -- the run ---------------------------------------------------------------------


def progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}",
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup_s": WARMUP_S,
            "concurrency": 1,
        },
    }
    started = time.monotonic()
    steps = {
        "stages": measure_stages,
        "keys": measure_keys,
        "audit": measure_audit,
        "streams": measure_streams,
    }
    with ExitStack() as stack:
        port = start_upstream(stack, workdir)
        for name in args.dimensions:
            (workdir / name).mkdir()
            results[name] = steps[name](args, port, workdir / name)
            progress(f"{name} done")
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_seconds"] = round(time.monotonic() - started)
    return results


def updated(
    path: Path, results: dict[str, Any], dimensions: list[str]
) -> dict[str, Any]:
    """The results in ``path`` with ``dimensions`` replaced by this run's; each
    dimension notes when it was measured."""
    earlier: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    measured = earlier.get("measured", {})
    for name in DIMENSIONS:
        if name in earlier and name not in dimensions:
            results[name] = earlier[name]
            measured.setdefault(name, earlier["when"])
    for name in dimensions:
        measured[name] = results["when"]
    results["measured"] = measured
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dimensions",
        type=lambda v: v.split(","),
        default=list(DIMENSIONS),
    )
    parser.add_argument("--output", type=Path, default=bench.HERE / "results")
    parser.add_argument(
        "--update",
        action="store_true",
        help="keep the other dimensions of the existing growth.json",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sluicegate-growth-") as scratch:
        results = measure(args, Path(scratch))
    args.output.mkdir(parents=True, exist_ok=True)
    if args.update:
        results = updated(args.output / "growth.json", results, args.dimensions)
    (args.output / "growth.json").write_text(json.dumps(results, indent=2, default=str))
    text = report.markdown(results)
    (args.output / "growth.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""The Markdown report of bench/growth.py: a table and verdicts per dimension.

Two verdicts are computed from the numbers, never written by hand:

* **flat**: the figure at the largest size exceeds the one at the smallest
  by at most the noise allowance.
* **linear**: the marginal cost per unit over the last step (e.g. 8 -> 16
  stages) is compared with the marginal cost over all the steps before it;
  growth is *worse than linear* only if the last step costs more than
  SUPERLINEAR times as much per unit *and* the excess is beyond the noise
  allowance.

The noise allowance of a load figure is the largest of NOISE_MS,
NOISE_SHARE of the figure and the difference between the dimension's first
point and its repeat in the same run; of an in-process timing, the larger of
NOISE_US and NOISE_SHARE_IN_PROCESS of it.
"""

from __future__ import annotations

import statistics
from typing import Any

NOISE_MS = 0.3
NOISE_US = 20.0
NOISE_SHARE = 0.15
NOISE_SHARE_IN_PROCESS = 0.25
SUPERLINEAR = 1.5

Points = list[tuple[float, float]]


def allowance(value: float, control: dict[str, Any] | None) -> float:
    """Noise allowance of a load figure (ms) given the run's control."""
    measured = control["difference_ms"] if control else 0.0
    return max(NOISE_MS, NOISE_SHARE * abs(value), measured)


def in_process_allowance(value: float) -> float:
    return max(NOISE_US, NOISE_SHARE_IN_PROCESS * abs(value))


def flat(points: Points, what: str, unit: str, allowed: float) -> str:
    """Flat if the figure at the largest size exceeds the one at the smallest
    by no more than ``allowed`` (a drop is not growth)."""
    values = [y for _, y in points]
    (x0, y0), (xn, yn) = points[0], points[-1]
    verdict = "**flat** (within noise)" if yn - y0 <= allowed else "**NOT flat**"
    return (
        f"{what}: {y0:.2f} {unit} at {x0:,.0f} -> {yn:.2f} {unit} at {xn:,.0f} "
        f"(growth {yn - y0:+.2f} {unit}, noise allowance {allowed:.2f}; spread "
        f"over all sizes {max(values) - min(values):.2f}): {verdict}"
    )


def linear(points: Points, what: str, unit: str, per: str, allowed: float) -> str:
    (x0, y0), (xm, ym), (xn, yn) = points[0], points[-2], points[-1]
    early = (ym - y0) / (xm - x0)
    late = (yn - ym) / (xn - xm)
    excess = (late - max(early, 0.0)) * (xn - xm)
    worse = late > SUPERLINEAR * max(early, 0.0) and excess > allowed
    verdict = "**WORSE THAN LINEAR**" if worse else "**linear or better**"
    return (
        f"{what}: {slope(points):.4g} {unit} per {per} (least squares); "
        f"{x0:,.0f}->{xm:,.0f}: {early:.4g} {unit}/{per}, "
        f"{xm:,.0f}->{xn:,.0f}: {late:.4g} {unit}/{per} (excess over a linear "
        f"continuation {max(excess, 0.0):.2f} {unit}, noise allowance "
        f"{allowed:.2f}); {yn:.2f} {unit} at {xn:,.0f} vs {y0:.2f} at "
        f"{x0:,.0f}: {verdict}"
    )


def slope(points: Points) -> float:
    xs = [x for x, _ in points]
    mx, my = statistics.fmean(xs), statistics.fmean(y for _, y in points)
    num = sum((x - mx) * (y - my) for x, y in points)
    return num / sum((x - mx) ** 2 for x in xs)


def markdown(results: dict[str, Any]) -> str:
    lines = header(results)
    for name, render in (
        ("stages", stages_section),
        ("keys", keys_section),
        ("audit", audit_section),
        ("streams", streams_section),
    ):
        if name in results:
            lines += ["", *render(results[name])]
    return "\n".join(lines) + "\n"


def header(results: dict[str, Any]) -> list[str]:
    settings = results["settings"]
    start = ", ".join(f"{x:g}" for x in results["load_average_start"])
    end = ", ".join(f"{x:g}" for x in results.get("load_average_end", []))
    return [
        f"# How cost grows ({results['when']})",
        "",
        f"Machine: {results['machine']}. **Shared machine: the numbers are "
        f"noisy.** Load average (1, 5, 15 min) at start {start}, at end {end}; "
        f"wall time {results.get('wall_seconds', '?')} s." + measured_line(results),
        "",
        f"Every point: concurrency 1, {settings['rounds']} rounds of "
        f"{settings['seconds'] / settings['rounds']:.2f} s (after a "
        f"{settings['warmup_s']:g} s warm-up each), the points of a dimension "
        "interleaved in a new random order every round, figures = medians over "
        "the rounds; gateway on core 0, load generator and upstream on core 1; "
        "overhead = gateway latency - direct-upstream latency from the same "
        "rounds. *Flat*: the figure at the largest size exceeds the one at the "
        "smallest by at most the noise allowance = max("
        f"{NOISE_MS} ms, {NOISE_SHARE:.0%}, the difference between the "
        "dimension's first point and its repeat) (in-process timings: "
        f"max({NOISE_US:g} us, {NOISE_SHARE_IN_PROCESS:.0%})). *Worse than "
        f"linear*: the last step costs over {SUPERLINEAR}x per unit what the "
        "steps before it did, and the excess is beyond the noise allowance.",
    ]


def measured_line(results: dict[str, Any]) -> str:
    """When each dimension was measured, if not all in the run of the header."""
    measured = results.get("measured", {})
    if len(set(measured.values())) < 2:
        return ""
    when = "; ".join(f"{name} {at}" for name, at in measured.items())
    return f" Dimensions measured at different times ({when})."


def control_line(control: dict[str, Any], direct: dict[str, Any] | None) -> str:
    first, repeat = control["p50_ms"]
    line = (
        f"- Control: `{control['point']}` measured twice in the same rounds: "
        f"p50 {first:.2f} and {repeat:.2f} ms (difference "
        f"{control['difference_ms']:.2f} ms)."
    )
    if direct is not None:
        line += (
            f" Direct upstream: p50 {direct['p50_ms']:.3f} ms, "
            f"p99 {direct['p99_ms']:.3f} ms."
        )
    return line


def stages_section(stages: dict[str, Any]) -> list[str]:
    rows = stages["rows"]
    lines = [
        "## Pipeline length",
        "",
        f"Full pipeline: {', '.join(stages['pipeline'])} (PostgreSQL, Redis); "
        "extra stages go just before `route`, each variant in its own "
        "workspace of one gateway. One extra stage of each series: "
        + "; ".join(f"`{s}`" for s in stages["series"].values()),
        "",
        "| workspace | extra stages | p50 ms | p99 ms | overhead p50 ms "
        "| overhead p99 ms | req/s | p50 per round ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workspace']} | {row['extra']} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['overhead_p50_ms']:.2f} | "
            f"{row['overhead_p99_ms']:.2f} | {row['rps']:.0f} | "
            f"{_rounds(row['rounds_p50_ms'])} | {row['errors']} |"
        )
    lines += ["", control_line(stages["control"], stages["direct"])]
    base = rows[0]["overhead_p50_ms"]
    for series in stages["series"]:
        points: Points = [(0, base)] + [
            (row["extra"], row["overhead_p50_ms"])
            for row in rows
            if row["series"] == series
        ]
        allowed = allowance(points[-1][1], stages["control"])
        lines.append(
            "- " + linear(points, f"`{series}` overhead p50", "ms", "stage", allowed)
        )
    return lines


def keys_section(keys: dict[str, Any]) -> list[str]:
    rows = keys["rows"]
    lines = [
        "## API keys and workspaces",
        "",
        "Pipeline: auth, route (PostgreSQL, Redis). *warm*: one key (the "
        "per-process key cache answers); *rotating*: each request the next of "
        "up to 3,000 keys spread over all workspaces, key cache on (with more "
        "keys than requests and rounds over 5 s apart, a miss per request, "
        "except with 10 keys); *cache off*: the same, gateway with "
        "`SLUICEGATE_KEY_CACHE_SECONDS=0` (a database lookup per request at "
        "every size). *lookup*: `KeyVerifier.verify` without cache, in "
        "process, 700 keys a round (regex, SHA-256, the SQL round trip).",
        "",
        "| keys | workspaces | warm overhead p50 / p99 ms | rotating, cache on "
        "p50 / p99 ms | cache off p50 / p99 ms | lookup p50 / p99 us | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    series = ("warm", "rotating_cached", "cold")
    for row in rows:
        cells = [
            f"{row[name]['overhead_p50_ms']:.2f} / {row[name]['overhead_p99_ms']:.2f}"
            for name in series
        ]
        if not row["rotation_misses_cache"]:
            cells[1] += " (keys repeat: partly cached)"
        errors = sum(row[name]["errors"] for name in series)
        lookup = row["lookup"]
        lines.append(
            f"| {row['keys']:,} | {row['workspaces']:,} | {' | '.join(cells)} | "
            f"{lookup['p50_us']:.0f} / {lookup['p99_us']:.0f} | {errors} |"
        )
    lines += ["", control_line(keys["control"], keys["direct"])]
    missing = [r for r in rows if r["rotation_misses_cache"]]
    for name, label, among in (
        ("warm", "warm overhead p50", rows),
        ("cold", "cache-off overhead p50", rows),
        ("rotating_cached", "rotating (cache on, every request a miss)", missing),
    ):
        points: Points = [(r["keys"], r[name]["overhead_p50_ms"]) for r in among]
        if len(points) < 2:
            lines.append(f"- {label}: fewer than two sizes qualify; no verdict")
            continue
        allowed = allowance(points[0][1], keys["control"])
        lines.append("- " + flat(points, label, "ms", allowed))
    points = [(r["keys"], r["lookup"]["p50_us"]) for r in rows]
    allowed = in_process_allowance(points[0][1])
    lines.append("- " + flat(points, "in-process lookup p50", "us", allowed))
    plan = " / ".join(rows[-1]["lookup"]["plan"])
    lines.append(f"- Plan of the lookup at {rows[-1]['keys']:,} keys: `{plan}`")
    return lines


def audit_section(audit: dict[str, Any]) -> list[str]:
    rows = audit["rows"]
    lines = [
        "## Audit table size",
        "",
        "Records and payloads inserted in bulk into the bench workspace's chain "
        "before the gateway starts (head at the last seq; VACUUM ANALYZE and "
        "CHECKPOINT after), full pipeline with `audit: payloads: store` (the "
        "record is kept after the answer is sent, so its commit is off the "
        "client's latency). *append*: the product's `chain.append` of one "
        "record with its payload, one transaction each, in process, 100 a "
        "round, after the loads. " + (f"**{audit['note']}.**" if audit["note"] else ""),
        "",
        "| rows | insert s | audit_record MB | audit_payload MB | p50 ms | p99 ms "
        "| overhead p50 ms | overhead p99 ms | append p50 / p99 us | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['rows']:,} | {row['insert_s']} | {row['audit_record_mb']} | "
            f"{row['audit_payload_mb']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
            f"{row['overhead_p50_ms']:.2f} | {row['overhead_p99_ms']:.2f} | "
            f"{row['append']['p50_us']:.0f} / {row['append']['p99_us']:.0f} | "
            f"{row['errors']} |"
        )
    overhead: Points = [(r["rows"], r["overhead_p50_ms"]) for r in rows]
    appends: Points = [(r["rows"], r["append"]["p50_us"]) for r in rows]
    noise = allowance(overhead[0][1], audit["control"])
    append_noise = in_process_allowance(appends[0][1])
    return [
        *lines,
        "",
        control_line(audit["control"], audit["direct"]),
        "- " + flat(overhead, "overhead p50", "ms", noise),
        "- " + linear(overhead, "overhead p50", "ms", "row", noise),
        "- " + flat(appends, "append p50", "us", append_noise),
        "- " + linear(appends, "append p50", "us", "row", append_noise),
    ]


def streams_section(streams: dict[str, Any]) -> list[str]:
    rows = streams["rows"]
    lines = [
        "## Stream length",
        "",
        "One upstream per length, two gateways: the full pipeline and the "
        "minimal one (auth, route: the relay alone). Total = until the last "
        "byte. The load generator parses the gateway's chunked framing chunk "
        "by chunk but reads the upstream's stream as one body, so client "
        "parsing is counted in the per-chunk overhead. Two effects that are "
        "not per-request lookups show in the time to first byte (TTFB): the "
        "bench upstream writes a whole stream at once, so the gateway's first "
        "relayed piece is one socket read (up to about 64 KB) and grows with "
        "the stream until the stream exceeds one read; and at c=1 the next "
        "request follows the last byte at once, while the finished stream's "
        "after-steps (its audit record with the whole stream as payload, its "
        "evaluation job) may still run, so their cost, which grows with the "
        "stream, shows in the next request's TTFB (full pipeline only).",
        "",
        "| chunks | direct p50 ms | gateway p50 ms | overhead p50 ms | overhead "
        "per chunk us | direct TTFB p50 ms | TTFB overhead p50 / p99 ms | "
        "minimal: overhead p50 ms | minimal: per chunk us | minimal: TTFB "
        "overhead p50 ms | req/s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(stream_line(row))
    control = streams["control"]
    lines += ["", control_line(control, None)]
    for label, name in (("full", None), ("minimal", "minimal")):
        chosen = [row[name] if name else row for row in rows]
        total: Points = [(r["chunks"], r["overhead_p50_ms"]) for r in chosen]
        first: Points = [(r["chunks"], r["overhead_ttfb_p50_ms"]) for r in chosen]
        noise = allowance(total[-1][1], control)
        lines += [
            "- " + linear(total, f"{label}: total overhead p50", "ms", "chunk", noise),
            "- " + linear(first, f"{label}: TTFB overhead p50", "ms", "chunk", noise),
        ]
    return lines


def stream_line(row: dict[str, Any]) -> str:
    bare = row["minimal"]
    return (
        f"| {row['chunks']:,} | {row['direct_p50_ms']:.2f} | "
        f"{row['p50_ms']:.2f} | {row['overhead_p50_ms']:.2f} | "
        f"{row['overhead_per_chunk_us']:.1f} | {row['direct_ttfb_p50_ms']:.2f} | "
        f"{row['overhead_ttfb_p50_ms']:.2f} / {row['overhead_ttfb_p99_ms']:.2f} | "
        f"{bare['overhead_p50_ms']:.2f} | {bare['overhead_per_chunk_us']:.1f} | "
        f"{bare['overhead_ttfb_p50_ms']:.2f} | {row['rps']:.1f} | "
        f"{row['errors'] + bare['errors']} |"
    )


def _rounds(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)

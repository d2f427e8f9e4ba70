"""The benchmark: one command, every figure in one results file.

    .venv/bin/python bench/run.py [--seconds 10] [--concurrency 1,8,32]
        [--modes full,embedded] [--sustain-seconds 60] [--with-litellm]

It starts the fast fake upstream (bench/upstream.py) in its own process,
measures it directly, then the gateway in each mode against it with the same
load (bench/load.py, its own process), so overhead = gateway - direct from one
run.  ``full`` is the whole pipeline on PostgreSQL and Redis; ``embedded`` is
the default (SQLite, no Redis).  ``--with-litellm`` installs the LiteLLM proxy
into its own virtual environment (bench/.litellm-venv) and measures it the same
way.  When ``taskset`` exists, the server under test is pinned to core 0 and
the load generator to core 1.  Results go to bench/results/latest.json and
bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
SLUICEGATE = str(Path(PYTHON).with_name("sluicegate"))
POSTGRES = os.environ.get(
    "SLUICEGATE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)
REDIS = os.environ.get("SLUICEGATE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
FULL_STAGES = ["audit", "auth", "rate_limit", "budget", "route", "eval_enqueue"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int, command: list[str]) -> list[str]:
    return (
        ["taskset", "-c", str(core), *command] if shutil.which("taskset") else command
    )


@contextmanager
def process(
    command: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, seconds: float = 60.0, **kwargs: Any) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if httpx.get(url, timeout=1, **kwargs).status_code < 500:
                return time.monotonic() - started
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {seconds}s")


def wait_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def load(
    url: str,
    key: str | None,
    concurrency: int,
    seconds: float,
    stream: bool = False,
    model: str = "bench-model",
    keys_file: Path | None = None,
    warmup: float = 1.0,
) -> dict[str, Any]:
    command = [
        PYTHON,
        str(HERE / "load.py"),
        "--url",
        url,
        "--concurrency",
        str(concurrency),
        "--seconds",
        str(seconds),
        "--model",
        model,
        "--warmup",
        str(warmup),
    ]
    if key:
        command += ["--key", key]
    if keys_file:
        command += ["--keys-file", str(keys_file)]
    if stream:
        command.append("--stream")
    done = subprocess.run(
        pinned(1, command), capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout))


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of a process and its children, now and at peak (MB)."""
    pids = [pid, *children(pid)]
    now = peak = 0.0
    for each in pids:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                now += int(line.split()[1]) / 1024
            if line.startswith("VmHWM:"):
                peak += int(line.split()[1]) / 1024
    return {"rss_mb": round(now, 1), "peak_rss_mb": round(peak, 1)}


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    found = [int(child) for child in text.split()]
    return found + [grand for child in found for grand in children(child)]


def installed_stage_types() -> set[str]:
    done = subprocess.run(
        [SLUICEGATE, "plugins", "--json"], capture_output=True, text=True, check=True
    )
    return {
        item.split(":", 1)[1]
        for row in json.loads(done.stdout)
        for item in row["adds"]
        if item.startswith("stage:")
    }


def full_pipeline(held: bool = False) -> dict[str, Any]:
    """Every benchmarked stage that is installed, with limits never reached;
    ``held``: the audit record commits before the answer leaves."""
    settings: dict[str, dict[str, Any]] = {
        "audit": {"payloads": "store", "commit_before_response": held},
        "auth": {},
        "rate_limit": {
            "on_failure": "open",
            "limits": [
                {"scope": "api_key", "requests": 10_000_000, "per": "minute"},
                {"scope": "workspace", "tokens": 10_000_000_000, "per": "minute"},
            ],
        },
        "budget": {"limits": [{"scope": "workspace", "usd": 1_000_000, "per": "day"}]},
        "route": {"retries": 0},
        "eval_enqueue": {"evaluators": [{"name": "pii"}]},
    }
    present = installed_stage_types()
    return {
        "stages": [
            {"type": name, **settings[name]} for name in FULL_STAGES if name in present
        ]
    }


def gateway_config(upstreams: dict[str, int]) -> dict[str, Any]:
    """A gateway config routing each model name to the bench upstream on its
    port (provider ``bench`` when there is one model, ``bench-<model>`` else)."""
    single = len(upstreams) == 1
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for model, port in upstreams.items():
        provider = "bench" if single else f"bench-{model}"
        providers[provider] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{port}/v1",
        }
        models[model] = {
            "targets": [{"provider": provider, "model": "bench-model"}],
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        }
    return {"providers": providers, "models": models}


def gateway_files(
    workdir: Path,
    upstream_port: int,
    mode: str,
    pipeline: dict[str, Any] | None = None,
    upstreams: dict[str, int] | None = None,
) -> None:
    config = gateway_config(upstreams or {"bench-model": upstream_port})
    (workdir / "sluicegate.yaml").write_text(yaml.safe_dump(config))
    pipelines = workdir / "pipelines"
    pipelines.mkdir(exist_ok=True)
    default = pipeline if pipeline is not None else pipeline_of(mode)
    (pipelines / "default.yaml").write_text(yaml.safe_dump(default))


def create_database(mode: str, workdir: Path) -> str:
    if mode == "embedded":
        return f"sqlite:///{workdir / 'bench.db'}"
    name = f"sluicegate_bench_{secrets.token_hex(4)}"
    subprocess.run(
        ["psql", POSTGRES + "/postgres", "-qc", f"CREATE DATABASE {name}"],
        check=True,
        capture_output=True,
    )
    return f"{POSTGRES}/{name}"


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [SLUICEGATE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return done.stdout


def provision(env: dict[str, str]) -> str:
    cli(env, "migrate")
    cli(env, "workspace", "create", "bench")
    created = json.loads(cli(env, "key", "create", "--workspace", "bench", "--json"))
    return str(created["key"])


@contextmanager
def serving(
    mode: str,
    upstream_port: int,
    workdir: Path,
    *,
    pipeline: dict[str, Any] | None = None,
    upstreams: dict[str, int] | None = None,
    extra_env: dict[str, str] | None = None,
    prepare: Callable[[dict[str, str]], None] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], int, str, float]]:
    """A provisioned gateway in ``mode``: its process, port, API key and the
    seconds from start to its first successful response.

    ``pipeline`` replaces the mode's default pipeline, ``upstreams`` maps
    model names to upstream ports (default: ``bench-model`` on
    ``upstream_port``), ``extra_env`` is added to the gateway's environment
    and ``prepare(env)`` runs once the database is provisioned, before the
    gateway starts (e.g. to fill tables)."""
    gateway_files(workdir, upstream_port, mode, pipeline, upstreams)
    database_url = create_database(mode, workdir)
    env = {
        "SLUICEGATE_DATABASE_URL": database_url,
        "SLUICEGATE_CONFIG": str(workdir / "sluicegate.yaml"),
        "SLUICEGATE_PIPELINES_DIR": str(workdir / "pipelines"),
        "SLUICEGATE_LOG_LEVEL": "WARNING",
    }
    if mode.startswith("full"):
        env |= {
            "SLUICEGATE_REDIS_URL": REDIS,
            "SLUICEGATE_REDIS_PREFIX": f"bench-{secrets.token_hex(4)}",
        }
    env |= extra_env or {}
    key = provision(env)
    if prepare is not None:
        prepare(env)
    port = free_port()
    command = pinned(0, [SLUICEGATE, "serve", "--port", str(port)])
    started = time.monotonic()
    log = workdir / f"gateway-{mode}.log"
    with process(command, log, env=env, cwd=workdir) as proc:
        try:
            wait_port(port)
        except RuntimeError:
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
            raise
        first = first_success(port, key)
        to_first = time.monotonic() - started if first else float("nan")
        yield proc, port, key, to_first


def measure_gateway(
    mode: str, upstream_port: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    with serving(mode, upstream_port, workdir) as (proc, port, key, to_first):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        result: dict[str, Any] = {"start_to_first_response_s": round(to_first, 2)}
        result["loads"] = run_loads(url, key, args)
        result["memory_after_loads"] = rss_mb(proc.pid)
        if args.sustain_seconds:
            result["sustained"] = sustain(proc, url, key, args.sustain_seconds)
    result["pipeline"] = [stage["type"] for stage in pipeline_of(mode)["stages"]]
    return result


def sustain(
    proc: subprocess.Popen[bytes], url: str, key: str, seconds: float
) -> dict[str, Any]:
    """Load at c=8 for ``seconds``; resident memory before and after (leaks)."""
    before = rss_mb(proc.pid)["rss_mb"]
    sustained = load(url, key, 8, seconds)
    return {
        "seconds": seconds,
        "rps": sustained["rps"],
        "errors": sustained["errors"],
        "rss_before_mb": before,
        **rss_mb(proc.pid),
    }


def pipeline_of(mode: str) -> dict[str, Any]:
    if mode in ("full", "full-held"):
        return full_pipeline(held=mode == "full-held")
    return {"stages": [{"type": "auth"}, {"type": "route", "retries": 0}]}


def first_success(port: int, key: str) -> bool:
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
                timeout=5,
            )
            if answer.status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    return False


def run_loads(
    url: str, key: str | None, args: argparse.Namespace, model: str = "bench-model"
) -> dict[str, Any]:
    loads: dict[str, Any] = {}
    for concurrency in args.concurrency:
        loads[f"c{concurrency}"] = load(
            url, key, concurrency, args.seconds, model=model
        )
    loads["stream_c1"] = load(url, key, 1, args.seconds, stream=True, model=model)
    return loads


def measure_litellm(
    upstream_port: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    venv = HERE / ".litellm-venv"
    if not (venv / "bin" / "litellm").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True
        )
    master_key = f"sk-bench-{secrets.token_hex(16)}"
    config = {
        "general_settings": {"master_key": master_key},
        "model_list": [
            {
                "model_name": "bench-model",
                "litellm_params": {
                    "model": "openai/bench-model",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "unused",
                },
            }
        ],
    }
    (workdir / "litellm.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = pinned(
        0,
        [
            str(venv / "bin" / "litellm"),
            "--config",
            str(workdir / "litellm.yaml"),
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
    )
    with process(command, workdir / "litellm.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", seconds=180)
        result = {
            "loads": run_loads(
                f"http://127.0.0.1:{port}/v1/chat/completions", master_key, args
            )
        }
        result["memory_after_loads"] = rss_mb(proc.pid)
    return result


def markdown(results: dict[str, Any]) -> str:
    direct = results["direct"]
    lines = [
        f"# Benchmark results ({results['when']})",
        "",
        f"Machine: {results['machine']}",
        "",
        "| target | load | req/s | p50 ms | p90 ms | p99 ms | overhead p50 ms "
        "| overhead p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, load_ in direct.items():
        lines.append(_row("upstream direct", name, load_, None))
    for target in ("embedded", "full", "full-held", "litellm"):
        if target not in results:
            continue
        for name, load_ in results[target]["loads"].items():
            lines.append(_row(target, name, load_, direct.get(name)))
    lines += [
        "",
        "Stream rows (`stream_c1`): the latency columns are the time to first "
        "byte. `full-held`: the full pipeline with the audit stage's "
        "`commit_before_response: true` (the answer waits for its record).",
        "",
    ]
    for target in ("embedded", "full", "full-held"):
        if target in results:
            info = results[target]
            lines.append(
                f"- **{target}**: pipeline {', '.join(info['pipeline'])}; "
                f"start to first response {info['start_to_first_response_s']} s; "
                f"memory {info['memory_after_loads']}; "
                f"sustained {info.get('sustained', 'not run')}"
            )
    if "litellm_error" in results:
        lines.append(f"- **LiteLLM** could not be measured: {results['litellm_error']}")
    if "litellm" in results and "full" in results:
        ours = results["full"]["loads"]
        theirs = results["litellm"]["loads"]
        ratios = {
            name: round(ours[name]["rps"] / theirs[name]["rps"], 1)
            for name in ours
            if theirs.get(name, {}).get("rps")
        }
        lines.append(f"- **sluicegate (full) / LiteLLM req/s**: {ratios}")
    return "\n".join(lines) + "\n"


def _row(target: str, name: str, load_: dict[str, Any], direct: Any) -> str:
    def overhead(key: str) -> str:
        if not direct:
            return ""
        return f"{load_[key] - direct[key]:.2f}"

    stream = "ttfb_" if name.startswith("stream") else ""
    p50, p90, p99 = (f"{stream}{q}_ms" for q in ("p50", "p90", "p99"))
    return (
        f"| {target} | {name} | {load_['rps']:.0f} | {load_[p50]:.2f} | "
        f"{load_.get(p90, load_['p90_ms']):.2f} | {load_[p99]:.2f} | {overhead(p50)} | "
        f"{overhead(p99)} | {load_['errors']} |"
    )


def render(path: Path) -> None:
    """Rewrite the Markdown table from a results JSON file."""
    path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--concurrency",
        type=lambda v: [int(c) for c in v.split(",")],
        default=[1, 8, 32],
    )
    parser.add_argument(
        "--modes", type=lambda v: v.split(","), default=["embedded", "full"]
    )
    parser.add_argument("--sustain-seconds", type=float, default=60.0)
    parser.add_argument("--with-litellm", action="store_true")
    parser.add_argument("--output", type=Path, default=HERE / "results")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}",
        "settings": {"seconds": args.seconds, "concurrency": args.concurrency},
    }
    with tempfile.TemporaryDirectory(prefix="sluicegate-bench-") as scratch:
        workdir = Path(scratch)
        upstream_port = free_port()
        command = pinned(
            1, [PYTHON, str(HERE / "upstream.py"), "--port", str(upstream_port)]
        )
        with process(command, workdir / "upstream.log"):
            wait_port(upstream_port)
            results["direct"] = run_loads(
                f"http://127.0.0.1:{upstream_port}/v1/chat/completions", None, args
            )
            for mode in args.modes:
                mode_dir = workdir / mode
                mode_dir.mkdir()
                results[mode] = measure_gateway(mode, upstream_port, args, mode_dir)
            if args.with_litellm:
                try:
                    results["litellm"] = measure_litellm(upstream_port, args, workdir)
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    log = workdir / "litellm.log"
                    tail = (
                        log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    )
                    results["litellm_error"] = f"{exc}\n{tail}"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(results, indent=2))
    (args.output / "latest.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

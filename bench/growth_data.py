"""Bulk data and in-process timings for bench/growth.py.

Tables are filled the way a long-lived deployment would have them, but in
bulk: workspaces and API keys with COPY (keys made and hashed by
:mod:`sluicegate.core.keys`, so the gateway accepts them), audit records and
payloads with one ``INSERT ... SELECT FROM generate_series`` each.  The
in-process timings call the product's own code (``KeyVerifier`` without its
cache, ``chain.append``) against the filled database, without HTTP around
them, so their noise is far below the gateway's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis

from sluicegate.core.audit.chain import append
from sluicegate.core.audit.record import Payload, PendingRecord
from sluicegate.core.db.database import Database
from sluicegate.core.keys import KeyVerifier, generate_key, hash_key, lookup_query

AUDIT_REQUEST = '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
AUDIT_RESPONSE = "x" * 290
"""Payload bodies of the sizes a bench request stores (67 and 290 chars)."""

# One audit record as the gateway writes it for a bench request (~970 chars);
# request id, seq and hashes vary per row.  The hashes are well-formed and
# linked (each row's prev_hash is the hash of the row before) but are not the
# SHA-256 of the text: `sluicegate audit verify` would reject this chain.
_RECORD_SQL = """
INSERT INTO audit_record
    (workspace_id, seq, request_id, kind, created_at, prev_hash, hash, record)
SELECT $1::int, i, r.request_id, 'request',
    now() - interval '1 second' * ($2::bigint - i),
    r.prev_hash, r.hash,
    '{"cached_tokens":0,"client_ip":"127.0.0.1","completion_tokens":6,'
    || '"cost_micros":0,"decisions":[{"decision":"reserved","detail":"up to '
    || '8202 micro-USD and 4106 tokens","stage":"budget"},{"decision":"served",'
    || '"detail":"bench/bench-model","stage":"route"}],"denied_by":null,'
    || '"endpoint":"chat.completions","error_code":null,"fate":"served",'
    || '"key_id":1,"kind":"request","latency_ms":3,"model":"bench-model",'
    || '"payload_policy":"store","payload_sha256":"' || r.hash
    || '","prev_hash":"' || r.prev_hash || '","prompt_tokens":12,'
    || '"request_id":"' || r.request_id || '","request_sha256":"' || r.hash
    || '","response_sha256":"' || r.hash || '","seq":' || i
    || ',"status":200,"stream":false,"target":"bench/bench-model",'
    || '"time":"2026-12-01T00:00:00.000000Z","upstream_ms":1,"v":1,'
    || '"workspace_id":' || $1::int || '}'
FROM generate_series(1, $2::bigint) AS i,
LATERAL (
    SELECT 'req_' || md5('growth-' || i) AS request_id,
        CASE WHEN i = 1 THEN repeat('0', 64)
            ELSE encode(sha256(('growth-' || (i - 1))::bytea), 'hex')
        END AS prev_hash,
        encode(sha256(('growth-' || i)::bytea), 'hex') AS hash
) AS r
"""

_PAYLOAD_SQL = """
INSERT INTO audit_payload (request_id, workspace_id, subject, policy,
    request_body, response_body, created_at)
SELECT 'req_' || md5('growth-' || i), $1::int, NULL, 'store', $3::text, $4::text,
    now() - interval '1 second' * ($2::bigint - i)
FROM generate_series(1, $2::bigint) AS i
"""

_HEAD_SQL = """
INSERT INTO audit_chain_head (workspace_id, seq, hash)
VALUES ($1::int, $2::bigint, encode(sha256(('growth-' || $2::bigint)::bytea), 'hex'))
ON CONFLICT (workspace_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash
"""


def add_keys(url: str, workspaces: list[str], count: int) -> list[str]:
    """Create ``workspaces`` and ``count`` keys spread over them in turn (key
    ``i`` in workspace ``i % len(workspaces)``); return the keys in order."""
    return asyncio.run(_add_keys(url, workspaces, count))


async def _add_keys(url: str, workspaces: list[str], count: int) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "workspace", records=[(name,) for name in workspaces], columns=["name"]
        )
        found = await conn.fetch(
            "SELECT id, name FROM workspace WHERE name = ANY($1::text[])", workspaces
        )
        ids = {row["name"]: row["id"] for row in found}
        keys, rows = _new_keys([ids[name] for name in workspaces], count)
        await conn.copy_records_to_table(
            "api_key", records=rows, columns=["workspace_id", "prefix", "secret_hash"]
        )
        await conn.execute("ANALYZE workspace; ANALYZE api_key")
    finally:
        await conn.close()
    return keys


def _new_keys(
    workspace_ids: list[int], count: int
) -> tuple[list[str], list[tuple[int, str, str]]]:
    keys: list[str] = []
    rows: list[tuple[int, str, str]] = []
    prefixes: set[str] = set()
    while len(keys) < count:
        prefix, key = generate_key()
        if prefix in prefixes:
            continue
        prefixes.add(prefix)
        rows.append(
            (workspace_ids[len(keys) % len(workspace_ids)], prefix, hash_key(key))
        )
        keys.append(key)
    return keys, rows


def fill_audit(url: str, workspace: str, rows: int) -> dict[str, Any]:
    """Give ``workspace`` ``rows`` audit records, each with its payload, and a
    chain head at the last; then VACUUM ANALYZE and CHECKPOINT, so neither
    autovacuum nor a checkpoint of the load runs during the measurement."""
    return asyncio.run(_fill_audit(url, workspace, rows))


async def _fill_audit(url: str, workspace: str, rows: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        workspace_id = await conn.fetchval(
            "SELECT id FROM workspace WHERE name = $1", workspace
        )
        started = time.monotonic()
        if rows:
            # Bulk-load mode: skip the per-row foreign-key checks (the rows
            # are consistent by construction); the audit triggers fire anyway
            # (ENABLE ALWAYS) but guard only UPDATE, DELETE and TRUNCATE.
            await conn.execute("SET session_replication_role = replica")
            await conn.execute(_RECORD_SQL, workspace_id, rows)
            await conn.execute(
                _PAYLOAD_SQL, workspace_id, rows, AUDIT_REQUEST, AUDIT_RESPONSE
            )
            await conn.execute(_HEAD_SQL, workspace_id, rows)
            await conn.execute("SET session_replication_role = origin")
        inserted = time.monotonic() - started
        await conn.execute("VACUUM ANALYZE audit_record")
        await conn.execute("VACUUM ANALYZE audit_payload")
        await conn.execute("CHECKPOINT")
        sizes = await conn.fetchrow(
            "SELECT pg_total_relation_size('audit_record') AS records, "
            "pg_total_relation_size('audit_payload') AS payloads"
        )
    finally:
        await conn.close()
    return {
        "rows": rows,
        "insert_s": round(inserted, 1),
        "vacuum_checkpoint_s": round(time.monotonic() - started - inserted, 1),
        "audit_record_mb": round(sizes["records"] / 2**20),
        "audit_payload_mb": round(sizes["payloads"] / 2**20),
    }


def time_lookups(url: str, keys: list[str]) -> dict[str, Any]:
    """The product's key lookup without its cache, once per key: microseconds
    per lookup, and the PostgreSQL plan of its query."""
    return asyncio.run(_time_lookups(url, keys))


async def _time_lookups(url: str, keys: list[str]) -> dict[str, Any]:
    db = await Database.connect(url)
    try:
        verifier = KeyVerifier(db, cache_seconds=0)
        for key in keys[:50]:  # warm the pool and the plan cache
            await verifier.verify(key)
        spent = []
        for key in keys:
            started = time.perf_counter()
            found = await verifier.verify(key)
            spent.append(time.perf_counter() - started)
            if found is None:
                raise RuntimeError(f"a bench key was refused: {key[:11]}...")
        plan = await _lookup_plan(db, url, keys[-1])
    finally:
        await db.close()
    return {"lookups": len(keys), **_micros(spent), "plan": plan}


async def _lookup_plan(db: Database, url: str, key: str) -> list[str]:
    """EXPLAIN ANALYZE of the exact query KeyVerifier sends (Piccolo's text)."""
    query = lookup_query(db, key.split("-")[1])
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {query}")
    finally:
        await conn.close()
    return [str(row[0]).strip() for row in rows]


def time_appends(url: str, workspace: str, count: int) -> dict[str, Any]:
    """``count`` appends of one record with its payload through the product's
    ``chain.append`` (one transaction each, as a lone request's batch)."""
    return asyncio.run(_time_appends(url, workspace, count))


async def _time_appends(url: str, workspace: str, count: int) -> dict[str, Any]:
    db = await Database.connect(url)
    try:
        rows = await db.fetch("SELECT id FROM workspace WHERE name = {}", workspace)
        workspace_id = int(rows[0]["id"])
        spent = []
        for _ in range(count):
            record = PendingRecord(
                workspace_id=workspace_id,
                request_id=f"req_{uuid.uuid4().hex}",
                kind="request",
                created_at=datetime.now(UTC),
                fields={"model": "bench-model", "status": 200, "fate": "served"},
                payload=Payload("store", AUDIT_REQUEST, AUDIT_RESPONSE),
            )
            started = time.perf_counter()
            await append(db, [record])
            spent.append(time.perf_counter() - started)
    finally:
        await db.close()
    return {"appends": count, **_micros(spent)}


def _micros(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(
            ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e6, 1
        ),
    }


def drop_database(url: str) -> None:
    """Drop the database of ``url`` (the gateway has stopped)."""
    server, name = url.rsplit("/", 1)
    asyncio.run(_execute(f"{server}/postgres", f'DROP DATABASE IF EXISTS "{name}"'))


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def forget_redis(redis_url: str, prefix: str) -> int:
    """Delete every Redis key under ``prefix:``; how many there were."""
    client = redis.Redis.from_url(redis_url)
    try:
        names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(names), 500):
            client.delete(*names[start : start + 500])
    finally:
        client.close()
    return len(names)

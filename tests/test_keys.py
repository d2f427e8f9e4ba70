"""Workspaces and API keys: create, verify, revoke, list; the verifier's cache."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from sluicegate.core.context import Principal
from sluicegate.core.db.database import Database
from sluicegate.core.errors import InvalidRequest
from sluicegate.core.keys import (
    KeyVerifier,
    create_key,
    generate_key,
    list_keys,
    parse_key,
    parse_key_ref,
    revoke_key,
)
from sluicegate.core.workspaces import (
    create_workspace,
    get_workspace,
    list_workspaces,
)

pytestmark = pytest.mark.anyio

KEY_FORMAT = re.compile(r"sg-[a-z0-9]{8}-[A-Za-z0-9_-]{43}")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoDatabase:
    """Stands in for ``Database.tables``: any use of the database fails."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the database was queried (tables.{name})")


def cut_off(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "tables", NoDatabase())


# -- workspaces ----------------------------------------------------------------


async def test_workspaces_create_list_get(database: Database) -> None:
    beta = await create_workspace(database, "beta")
    alpha = await create_workspace(database, "alpha")
    assert (beta.name, alpha.name) == ("beta", "alpha")
    assert beta.created_at.tzinfo is not None
    assert [w.name for w in await list_workspaces(database)] == ["alpha", "beta"]
    assert await get_workspace(database, "beta") == beta
    assert await get_workspace(database, "gamma") is None


async def test_duplicate_workspace_is_an_invalid_request(database: Database) -> None:
    await create_workspace(database, "acme")
    with pytest.raises(InvalidRequest, match="workspace 'acme' exists"):
        await create_workspace(database, "acme")


@pytest.mark.parametrize("name", ["Acme", "", "-x", "a b", "x" * 64])
async def test_bad_workspace_name_names_the_pattern(
    database: Database, name: str
) -> None:
    with pytest.raises(InvalidRequest, match=re.escape("^[a-z0-9][a-z0-9_-]*$")):
        await create_workspace(database, name)
    assert await list_workspaces(database) == []


# -- creating and listing keys ---------------------------------------------------


def test_generated_keys_have_the_documented_format() -> None:
    for _ in range(200):
        prefix, key = generate_key()
        assert KEY_FORMAT.fullmatch(key)
        assert key.startswith(f"sg-{prefix}-")
        assert prefix[0].isalpha()
        assert parse_key(key) == prefix


async def test_created_key_verifies(database: Database) -> None:
    acme = await create_workspace(database, "acme")
    row, key = await create_key(database, "acme", name="ci")
    assert KEY_FORMAT.fullmatch(key)
    assert (row.workspace, row.workspace_id, row.name) == ("acme", acme.id, "ci")
    assert key.startswith(f"sg-{row.prefix}-")
    assert row.revoked_at is None and not row.revoked

    verifier = KeyVerifier(database, cache_seconds=0)
    assert await verifier.verify(key) == Principal(
        workspace_id=acme.id, workspace="acme", key_id=row.id, key_prefix=row.prefix
    )


async def test_only_the_hash_is_stored_and_listing_never_shows_it(
    database: Database,
) -> None:
    await create_workspace(database, "acme")
    row, key = await create_key(database, "acme")
    digest = hashlib.sha256(key.encode()).hexdigest()
    stored = await database.fetch("SELECT * FROM api_key")
    assert len(stored) == 1
    assert stored[0]["secret_hash"] == digest
    secret_part = key.rsplit("-", 1)[1]
    assert not any(secret_part in str(value) for value in stored[0].values())

    listed = await list_keys(database)
    assert listed == [row]
    assert key not in repr(listed) and digest not in repr(listed)
    assert not hasattr(listed[0], "secret_hash")


async def test_list_keys_by_workspace(database: Database) -> None:
    await create_workspace(database, "acme")
    await create_workspace(database, "globex")
    a1, _ = await create_key(database, "acme", name="one")
    g1, _ = await create_key(database, "globex")
    a2, _ = await create_key(database, "acme", name="two")
    assert await list_keys(database) == [a1, g1, a2]
    assert await list_keys(database, "acme") == [a1, a2]
    assert await list_keys(database, "globex") == [g1]
    with pytest.raises(InvalidRequest, match="'initech' does not exist"):
        await list_keys(database, "initech")


async def test_key_for_an_unknown_workspace_says_how_to_create_one(
    database: Database,
) -> None:
    await create_workspace(database, "acme")
    with pytest.raises(InvalidRequest) as info:
        await create_key(database, "acne")
    message = info.value.message
    assert "'acne' does not exist" in message
    assert "existing: acme" in message
    assert "sluicegate workspace create" in message
    assert await list_keys(database) == []


async def test_key_names_are_checked(database: Database) -> None:
    await create_workspace(database, "acme")
    row, _ = await create_key(database, "acme", name="  ")
    assert row.name is None
    with pytest.raises(InvalidRequest, match="key name"):
        await create_key(database, "acme", name="x" * 256)
    with pytest.raises(InvalidRequest, match="key name"):
        await create_key(database, "acme", name="bad\nname")


# -- verifying -----------------------------------------------------------------


async def test_wrong_secret_with_a_valid_prefix_is_refused(database: Database) -> None:
    await create_workspace(database, "acme")
    row, key = await create_key(database, "acme")
    verifier = KeyVerifier(database, cache_seconds=60)
    last = key[-1]
    wrong = key[:-1] + ("A" if last != "A" else "B")
    assert await verifier.verify(wrong) is None
    other_prefix = (
        "z" + row.prefix[1:] if row.prefix[0] != "z" else "y" + row.prefix[1:]
    )
    assert await verifier.verify(key.replace(row.prefix, other_prefix)) is None
    assert verifier.cached_keys == 0, "refusals are not cached"
    assert await verifier.verify(key) is not None


MALFORMED = [
    "",
    "sg-",
    "Bearer sg-abcd1234-" + "a" * 43,
    "sg-abcd1234-" + "a" * 42,
    "sg-abcd1234-" + "a" * 44,
    "sg-ABCD1234-" + "a" * 43,
    "sg-abcd123-" + "a" * 43,
    "sg-1bcd1234-" + "a" * 43,
    "sk-abcd1234-" + "a" * 43,
    "sg_abcd1234_" + "a" * 43,
    "sg-abcd1234-" + "a" * 42 + "=",
    "sg-abcd1234-" + "a" * 42 + "é",
    " sg-abcd1234-" + "a" * 43,
    "sg-abcd1234-" + "a" * 43 + "\n",
]


@pytest.mark.parametrize("key", MALFORMED)
async def test_malformed_keys_are_refused_without_a_query(
    database: Database, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    verifier = KeyVerifier(database, cache_seconds=60)
    cut_off(database, monkeypatch)
    assert await verifier.verify(key) is None


async def test_cache_hit_does_not_query_the_database(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_workspace(database, "acme")
    _, key = await create_key(database, "acme")
    clock = FakeClock()
    verifier = KeyVerifier(database, cache_seconds=5, clock=clock)
    principal = await verifier.verify(key)
    assert principal is not None

    cut_off(database, monkeypatch)
    clock.now += 4.9
    assert await verifier.verify(key) == principal
    clock.now += 0.1
    with pytest.raises(AssertionError, match="the database was queried"):
        await verifier.verify(key)


async def test_revoked_key_is_refused_once_its_cache_entry_expires(
    database: Database,
) -> None:
    await create_workspace(database, "acme")
    row, key = await create_key(database, "acme")
    clock = FakeClock()
    verifier = KeyVerifier(database, cache_seconds=5, clock=clock)
    assert await verifier.verify(key) is not None

    revoked = await revoke_key(database, row.prefix)
    assert revoked.revoked_at is not None and revoked.id == row.id
    clock.now += 4
    assert await verifier.verify(key) is not None, "still trusted from the cache"
    clock.now += 1
    assert await verifier.verify(key) is None
    assert await KeyVerifier(database, cache_seconds=0).verify(key) is None


async def test_without_a_cache_every_verify_asks_the_database(
    database: Database,
) -> None:
    await create_workspace(database, "acme")
    row, key = await create_key(database, "acme")
    verifier = KeyVerifier(database, cache_seconds=0)
    assert await verifier.verify(key) is not None
    assert verifier.cached_keys == 0
    await revoke_key(database, str(row.id))
    assert await verifier.verify(key) is None


async def test_cache_is_bounded_and_evicts_the_oldest(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_workspace(database, "acme")
    keys = [(await create_key(database, "acme"))[1] for _ in range(3)]
    verifier = KeyVerifier(database, cache_seconds=60, clock=FakeClock(), max_entries=2)
    for key in keys:
        assert await verifier.verify(key) is not None
    assert verifier.cached_keys == 2

    cut_off(database, monkeypatch)
    assert await verifier.verify(keys[1]) is not None
    assert await verifier.verify(keys[2]) is not None
    with pytest.raises(AssertionError, match="the database was queried"):
        await verifier.verify(keys[0])


async def test_verifier_caches_per_key(database: Database) -> None:
    await create_workspace(database, "acme")
    await create_workspace(database, "globex")
    _, acme_key = await create_key(database, "acme")
    _, globex_key = await create_key(database, "globex")
    verifier = KeyVerifier(database, cache_seconds=60)
    acme = await verifier.verify(acme_key)
    globex = await verifier.verify(globex_key)
    assert acme is not None and globex is not None
    assert (acme.workspace, globex.workspace) == ("acme", "globex")
    assert await verifier.verify(acme_key) == acme
    verifier.clear()
    assert verifier.cached_keys == 0


# -- revoking ------------------------------------------------------------------


@pytest.mark.parametrize("form", ["prefix", "sg-prefix", "id", "whole key"])
async def test_revoke_by_prefix_id_or_whole_key(database: Database, form: str) -> None:
    await create_workspace(database, "acme")
    row, key = await create_key(database, "acme")
    _, other_key = await create_key(database, "acme")
    ref = {
        "prefix": row.prefix,
        "sg-prefix": f"sg-{row.prefix}",
        "id": str(row.id),
        "whole key": key,
    }[form]
    revoked = await revoke_key(database, ref)
    assert (revoked.id, revoked.revoked) == (row.id, True)
    assert [r.revoked for r in await list_keys(database)] == [True, False]
    verifier = KeyVerifier(database, cache_seconds=0)
    assert await verifier.verify(key) is None
    assert await verifier.verify(other_key) is not None


async def test_revoking_twice_keeps_the_first_time(database: Database) -> None:
    await create_workspace(database, "acme")
    row, _ = await create_key(database, "acme")
    first = await revoke_key(database, row.prefix)
    again = await revoke_key(database, row.prefix)
    assert first.revoked_at is not None
    assert again.revoked_at == first.revoked_at


async def test_revoking_an_unknown_key_is_an_invalid_request(
    database: Database,
) -> None:
    with pytest.raises(InvalidRequest, match="no API key 'zzzzzzzz'"):
        await revoke_key(database, "zzzzzzzz")
    with pytest.raises(InvalidRequest, match="no API key '42'"):
        await revoke_key(database, "42")


@pytest.mark.parametrize("ref", ["", "sg-", "abc", "ABCD1234", "12ab", "sg-abcd1234-x"])
def test_malformed_key_references_are_refused(ref: str) -> None:
    with pytest.raises(InvalidRequest, match="names no API key"):
        parse_key_ref(ref)


def test_key_references() -> None:
    assert parse_key_ref("17") == 17
    assert parse_key_ref("abcd1234") == "abcd1234"
    assert parse_key_ref(" sg-abcd1234 ") == "abcd1234"
    assert parse_key_ref("sg-abcd1234-" + "x" * 43) == "abcd1234"

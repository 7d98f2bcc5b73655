"""The registry: names and status of masters, keys, providers and provider keys, synced from the gateway.

The lake keeps ids only; the registry gives them names. Deleting an entity removes it (and what hangs
off it: a provider's keys, a master's keys, a key's quota) from the registry and leaves a tombstone, so
checks that would keep alerting on it can skip it, while its history in the lake and in stats stays.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import InvalidParameter
from engine.infra import Infra
from engine.times import INT64_MAX, iso


@dataclass(frozen=True)
class Kind:
    """One kind of registry entity: its document section, table, id column and other columns."""

    section: str
    table: str
    id: str
    columns: tuple[str, ...]
    parent: str | None = None  # the id column naming the owner, required


KINDS: dict[str, Kind] = {k.section: k for k in (
    Kind("masters", "registry_masters", "master_id", ("name", "status")),
    Kind("keys", "registry_keys", "key_id", ("master_id", "name", "status")),
    Kind("providers", "registry_providers", "provider_id", ("name", "provider_type", "status")),
    Kind("provider_keys", "registry_provider_keys", "provider_key_id", ("provider_id", "name", "status", "reason"),
         parent="provider_id"),
)}
STATUSES = ("active", "disabled")
#: What deleting an entity also deletes: (child section, its column naming the parent).
CASCADE = {"masters": ("keys", "master_id"), "providers": ("provider_keys", "provider_id")}

#: Run inside the transaction that deletes an entity, with (connection, section, id): the owner of rows
#: hanging off an entity (a key's quota) deletes them in that same transaction.
DeleteHook = Callable[[sqlite3.Connection, str, int], None]


class _Entity(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str | None
    status: Literal["active", "disabled"] | None
    updated_at: dt.datetime


class Master(_Entity):
    """A tenant of the gateway."""

    master_id: int


class Key(_Entity):
    """A child API key of a master."""

    key_id: int
    master_id: int | None


class Provider(_Entity):
    """An upstream LLM service."""

    provider_id: int
    provider_type: str | None


class ProviderKey(_Entity):
    """A key (or OAuth account) of a provider."""

    provider_key_id: int
    provider_id: int | None
    reason: str | None = Field(None, description="Why it is disabled (e.g. its OAuth refresh token stopped working).")


class Entities(BaseModel):
    """The whole registry, section by section, ordered by id."""

    masters: list[Master]
    keys: list[Key]
    providers: list[Provider]
    provider_keys: list[ProviderKey]


class SyncResult(BaseModel):
    """What a sync changed, per section."""

    upserted: dict[str, int]
    deleted: dict[str, int]


class Registry:
    """The registry (`engine.registry`)."""

    def __init__(self, infra: Infra) -> None:
        self.infra = infra
        self._on_delete: list[DeleteHook] = []

    def on_delete(self, hook: DeleteHook) -> None:
        """Also run `hook(connection, section, id)` in the same transaction whenever an entity is deleted."""
        self._on_delete.append(hook)

    def sync(self, document: Mapping[str, Any], replace: bool = False) -> SyncResult:
        """Upsert and delete entities in one transaction.

        Args:
            document: `{"masters": [{"master_id", "name", "status"}], "keys": [{"key_id", "master_id",
                "name", "status"}], "providers": [{"provider_id", "name", "provider_type", "status",
                "keys": [{"provider_key_id", "name", "status"}]}], "provider_keys": [...],
                "deleted": {"providers": [ids], ...}}`; every section is optional; status is `active`
                (default) or `disabled`.
            replace: also delete the entities of each section given that the document does not list.

        Raises:
            InvalidParameter: an unknown section or field, a missing or non-positive id, a bad status.
        """
        rows, deletions = _parse(document)
        now = iso(self.infra.now())
        upserted = {s: 0 for s in KINDS}
        deleted = {s: 0 for s in KINDS}
        with self.infra.store.connect() as con:
            if replace:
                for section, items in rows.items():
                    kind = KINDS[section]
                    listed = {r[kind.id] for r in items}
                    stale = [i for (i,) in con.execute(f"SELECT {kind.id} FROM {kind.table}") if i not in listed]
                    deletions.setdefault(section, set()).update(stale)
            for section, ids in deletions.items():
                for entity_id in sorted(ids):
                    self._delete(con, section, entity_id, now, deleted)
            for section, items in rows.items():
                kind = KINDS[section]
                cols = (kind.id, *kind.columns, "updated_at")
                for row in items:
                    con.execute(
                        f"INSERT INTO {kind.table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                        f"ON CONFLICT ({kind.id}) DO UPDATE SET "
                        + ", ".join(f"{c} = excluded.{c}" for c in cols[1:]),
                        [row.get(c) for c in cols[:-1]] + [now],
                    )
                    con.execute("DELETE FROM registry_deleted WHERE kind = ? AND id = ?", (section, row[kind.id]))
                    upserted[section] += 1
        return SyncResult(upserted=upserted, deleted=deleted)

    def read(self) -> Entities:
        """The whole registry, section by section, ordered by id."""
        with self.infra.store.connect(write=False) as con:
            sections = {s: [dict(r) for r in con.execute(f"SELECT * FROM {k.table} ORDER BY {k.id}")]
                        for s, k in KINDS.items()}
        return Entities.model_validate(sections)

    def names(self, section: str, ids: Iterable[int] | None = None) -> dict[int, str]:
        """Names by id of one section (`masters`, `keys`, `providers`, `provider_keys`), for display."""
        kind = _kind(section)
        with self.infra.store.connect(write=False) as con:
            found = {r[0]: r[1] for r in con.execute(
                f"SELECT {kind.id}, name FROM {kind.table} WHERE name IS NOT NULL")}
        return found if ids is None else {i: found[i] for i in ids if i in found}

    def deleted(self, section: str) -> set[int]:
        """Ids deleted from a section: checks (quotas, alerts) skip them; their history stays."""
        _kind(section)
        with self.infra.store.connect(write=False) as con:
            return {r[0] for r in con.execute("SELECT id FROM registry_deleted WHERE kind = ?", (section,))}

    def inactive(self, section: str) -> set[int]:
        """Ids deleted or disabled in a section: what alert checks should leave alone."""
        kind = _kind(section)
        with self.infra.store.connect(write=False) as con:
            disabled = {r[0] for r in con.execute(f"SELECT {kind.id} FROM {kind.table} WHERE status = 'disabled'")}
        return disabled | self.deleted(section)

    def set_provider_key_status(self, provider_key_id: int, status: str, reason: str | None = None,
                                name: str | None = None) -> None:
        """Enable or disable one provider key, saying why; a key the registry does not know is created
        (named `name`, under no provider) and a deleted one comes back.

        Raises:
            InvalidParameter: a status other than active or disabled, or a non-positive id.
        """
        if status not in STATUSES or not _is_id(provider_key_id):
            raise InvalidParameter(f"cannot set provider key {provider_key_id!r} to {status!r}")
        with self.infra.store.connect() as con:
            con.execute(
                "INSERT INTO registry_provider_keys (provider_key_id, name, status, reason, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (provider_key_id) DO UPDATE SET status = excluded.status,"
                " reason = excluded.reason, name = coalesce(registry_provider_keys.name, excluded.name),"
                " updated_at = excluded.updated_at",
                (provider_key_id, name, status, reason, iso(self.infra.now())))
            con.execute("DELETE FROM registry_deleted WHERE kind = 'provider_keys' AND id = ?", (provider_key_id,))

    def _delete(self, con: sqlite3.Connection, section: str, entity_id: int, now: str,
                counts: dict[str, int]) -> None:
        kind = KINDS[section]
        counts[section] += con.execute(f"DELETE FROM {kind.table} WHERE {kind.id} = ?", (entity_id,)).rowcount
        con.execute("INSERT INTO registry_deleted (kind, id, deleted_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (kind, id) DO UPDATE SET deleted_at = excluded.deleted_at",
                    (section, entity_id, now))
        for hook in self._on_delete:
            hook(con, section, entity_id)
        if section in CASCADE:
            child, column = CASCADE[section]
            table, child_id = KINDS[child].table, KINDS[child].id
            for (cid,) in con.execute(f"SELECT {child_id} FROM {table} WHERE {column} = ?", (entity_id,)).fetchall():
                self._delete(con, child, cid, now, counts)


def _kind(section: str) -> Kind:
    if section not in KINDS:
        raise InvalidParameter(f"unknown registry section {section!r}; use {', '.join(KINDS)}")
    return KINDS[section]


def _parse(document: Mapping[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, set[int]]]:
    if not isinstance(document, Mapping):
        raise InvalidParameter("the registry document must be a JSON object")
    unknown = set(document) - {*KINDS, "deleted"}
    if unknown:
        raise InvalidParameter(f"unknown registry section(s): {', '.join(sorted(unknown))}")
    rows: dict[str, list[dict[str, Any]]] = {}
    for section, kind in KINDS.items():
        items = document.get(section)
        if items is None:
            continue
        if not isinstance(items, list):
            raise InvalidParameter(f"{section} must be a list")
        for index, item in enumerate(items):
            where = f"{section}[{index}]"
            if section == "providers" and isinstance(item, Mapping) and "keys" in item:
                nested = [{**k, "provider_id": item.get("provider_id")} for k in item["keys"]]
                rows.setdefault("provider_keys", []).extend(_entity(KINDS["provider_keys"], k, f"{where}.keys")
                                                            for k in nested)
                item = {k: v for k, v in item.items() if k != "keys"}
            rows.setdefault(section, []).append(_entity(kind, item, where))
    deletions: dict[str, set[int]] = {}
    deleted = document.get("deleted") or {}
    if not isinstance(deleted, Mapping) or set(deleted) - set(KINDS):
        raise InvalidParameter(f"deleted must map sections ({', '.join(KINDS)}) to lists of ids")
    for section, ids in deleted.items():
        if not isinstance(ids, list) or not all(_is_id(i) for i in ids):
            raise InvalidParameter(f"deleted.{section} must be a list of positive 64-bit integer ids")
        deletions[section] = set(ids)
    return rows, deletions


def _entity(kind: Kind, item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise InvalidParameter(f"{where} must be an object")
    unknown = set(item) - {kind.id, *kind.columns}
    if unknown:
        raise InvalidParameter(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for column in (kind.id, *(c for c in kind.columns if c.endswith("_id"))):
        required = column in (kind.id, kind.parent)
        if (required or item.get(column) is not None) and not _is_id(item.get(column)):
            raise InvalidParameter(f"{where}.{column} must be a positive 64-bit integer (at most {INT64_MAX})")
    for column in ("name", "provider_type", "reason"):
        if item.get(column) is not None and not isinstance(item[column], str):
            raise InvalidParameter(f"{where}.{column} must be a string")
    status = item.get("status", "active")
    if status not in STATUSES:
        raise InvalidParameter(f"{where}.status must be one of {', '.join(STATUSES)}")
    return {**item, "status": status}


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= INT64_MAX



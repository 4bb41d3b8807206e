"""An in-memory stand-in for the part of pymongo the MongoDB sink uses, that can fail.

No MongoDB server can be installed on the development machine, so the sink's control flow
(insert a load, move the pointer, delete the old load, refuse to shrink, upsert) is tested
against this fake. It is not a mock that accepts anything: filters are evaluated (equality on
dotted paths, ``$in``, ``$ne``, ``$gt``/``$gte``/``$lt``/``$lte``; any other operator raises),
and it enforces what a real time-series collection refuses (MongoDB manual,
https://www.mongodb.com/docs/manual/core/timeseries/timeseries-limitations/): documents
without a ``datetime`` in the time field, unique indexes, and, as MongoDB 5.x does, deletes
whose filter is not on the meta field only, and an index created under an existing name with
other keys. Every call is recorded in ``client.calls``.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any

_MISSING = object()
_ids = itertools.count(1)


class FakeOperationFailure(RuntimeError):
    """What pymongo's ``OperationFailure`` would be: the server refused the operation."""


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _cmp(value: Any, op: str, arg: Any) -> bool:
    if op == "$in":
        return value is not _MISSING and value in arg
    if op == "$ne":
        return value is _MISSING or value != arg
    if value is _MISSING:
        return False
    if op == "$gte":
        return value >= arg
    if op == "$gt":
        return value > arg
    if op == "$lt":
        return value < arg
    if op == "$lte":
        return value <= arg
    raise NotImplementedError(f"fake MongoDB does not know the operator {op}")


_OPERATORS = {"$in", "$ne", "$gt", "$gte", "$lt", "$lte"}


def check_filter(flt: dict[str, Any]) -> dict[str, Any]:
    """``flt`` if the fake understands every operator in it (also on an empty collection)."""
    for path, cond in flt.items():
        if path.startswith("$"):
            raise NotImplementedError(f"fake MongoDB does not know the top-level {path}")
        if isinstance(cond, dict):
            unknown = [k for k in cond if k.startswith("$") and k not in _OPERATORS]
            if unknown:
                raise NotImplementedError(f"fake MongoDB does not know the operator {unknown[0]}")
    return flt


def matches(doc: dict[str, Any], flt: dict[str, Any]) -> bool:
    """Whether ``doc`` matches the query filter ``flt`` (the subset described above)."""
    for path, cond in flt.items():
        if path.startswith("$"):
            raise NotImplementedError(f"fake MongoDB does not know the top-level {path}")
        value = _get(doc, path)
        if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
            if not all(_cmp(value, op, arg) for op, arg in cond.items()):
                return False
        elif value is _MISSING or value != cond:
            return False
    return True


def _apply_update(doc: dict[str, Any], update: dict[str, Any], inserting: bool) -> None:
    for op, fields in update.items():
        if op == "$set" or (op == "$setOnInsert" and inserting):
            doc.update(copy.deepcopy(fields))
        elif op != "$setOnInsert":
            raise NotImplementedError(f"fake MongoDB does not know the update {op}")


@dataclass
class BulkResult:
    upserted_count: int
    modified_count: int


_FILTERED = {
    "find",
    "find_one",
    "count_documents",
    "update_one",
    "find_one_and_update",
    "delete_many",
}


class FakeCollection:
    def __init__(self, client: FakeClient, name: str, timeseries: dict[str, str] | None):
        self.client = client
        self.name = name
        self.timeseries = timeseries
        self.docs: list[dict[str, Any]] = []
        self.indexes: dict[str, tuple[list[tuple[str, int]], dict[str, Any]]] = {}

    def _log(self, method: str, *args: Any) -> None:
        """Record the call; every dict argument that is a filter is checked first."""
        self.client.calls.append((self.name, method, *args))
        if method in _FILTERED and args and isinstance(args[0], dict):
            check_filter(args[0])

    def _check_document(self, doc: dict[str, Any]) -> None:
        if self.timeseries is None:
            if any(d["_id"] == doc.get("_id", _MISSING) for d in self.docs):
                raise FakeOperationFailure(f"E11000 duplicate key _id {doc['_id']!r}")
            return
        t = doc.get(self.timeseries["timeField"])
        if not isinstance(t, dt.datetime):
            raise FakeOperationFailure(
                f"'{self.timeseries['timeField']}' must be present and a BSON date, got {t!r}"
            )

    def _insert(self, doc: dict[str, Any]) -> None:
        doc.setdefault("_id", f"oid{next(_ids)}")  # pymongo adds _id to the caller's dict
        self._check_document(doc)
        self.docs.append(copy.deepcopy(doc))

    # -- pymongo Collection API ----------------------------------------------------------
    def create_index(self, keys: list[tuple[str, int]], **options: Any) -> str:
        self._log("create_index", keys, options)
        if self.timeseries is not None and options.get("unique"):
            raise FakeOperationFailure("time-series collections do not support unique indexes")
        name = options.get("name") or "_".join(f"{k}_{d}" for k, d in keys)
        if name in self.indexes and self.indexes[name][0] != keys:
            # MongoDB: code 86 IndexKeySpecsConflict
            raise FakeOperationFailure(f"an index named {name} exists with different keys")
        self.indexes[name] = (keys, options)
        return name

    def index_information(self) -> dict[str, dict[str, Any]]:
        self._log("index_information")
        return {n: {"key": list(k)} for n, (k, _) in self.indexes.items()}

    def drop_index(self, name: str) -> None:
        self._log("drop_index", name)
        if name not in self.indexes:
            raise FakeOperationFailure(f"index not found with name [{name}]")
        del self.indexes[name]

    def insert_many(self, documents: list[dict[str, Any]], ordered: bool = True) -> None:
        self._log("insert_many", len(documents))
        for d in documents:
            self._insert(d)

    def find(self, flt: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._log("find", flt)
        return [copy.deepcopy(d) for d in self.docs if matches(d, flt or {})]

    def find_one(self, flt: dict[str, Any]) -> dict[str, Any] | None:
        self._log("find_one", flt)
        return next((copy.deepcopy(d) for d in self.docs if matches(d, flt)), None)

    def distinct(self, key: str, flt: dict[str, Any] | None = None) -> list[Any]:
        self._log("distinct", key, flt)
        check_filter(flt or {})
        out: list[Any] = []
        for d in self.docs:
            value = _get(d, key)
            if matches(d, flt or {}) and value is not _MISSING and value not in out:
                out.append(value)
        return out

    def count_documents(self, flt: dict[str, Any]) -> int:
        self._log("count_documents", flt)
        return sum(matches(d, flt) for d in self.docs)

    def update_one(self, flt: dict[str, Any], update: dict[str, Any], upsert: bool = False):
        self._log("update_one", flt, update)
        for d in self.docs:
            if matches(d, flt):
                _apply_update(d, update, inserting=False)
                return
        if upsert:
            doc = {k: v for k, v in flt.items() if not isinstance(v, dict)}
            _apply_update(doc, update, inserting=True)
            self._insert(doc)

    def find_one_and_update(
        self,
        flt: dict[str, Any],
        update: dict[str, Any],
        upsert: bool = False,
        return_document: bool = False,
    ) -> dict[str, Any] | None:
        self._log("find_one_and_update", flt, update)
        for d in self.docs:
            if matches(d, flt):
                before = copy.deepcopy(d)
                _apply_update(d, update, inserting=False)
                return copy.deepcopy(d) if return_document else before
        if not upsert:
            return None
        doc = {k: v for k, v in flt.items() if not isinstance(v, dict)}
        _apply_update(doc, update, inserting=True)
        self._insert(doc)
        return copy.deepcopy(doc) if return_document else None

    def delete_many(self, flt: dict[str, Any]) -> None:
        self._log("delete_many", flt)
        if self.timeseries is not None:
            meta = self.timeseries["metaField"]
            off_meta = [k for k in flt if k != meta and not k.startswith(f"{meta}.")]
            if off_meta:
                raise FakeOperationFailure(
                    f"time-series deletes may only filter on {meta!r} (MongoDB 5.x): {off_meta}"
                )
        self.docs = [d for d in self.docs if not matches(d, flt)]

    def bulk_write(self, operations: list[Any], ordered: bool = True) -> BulkResult:
        """``ReplaceOne(filter, doc, upsert=...)`` operations only (what ``upsert`` sends)."""
        self._log("bulk_write", len(operations))
        upserted = modified = 0
        for op in operations:
            if type(op).__name__ != "ReplaceOne":
                raise NotImplementedError(f"fake bulk_write does not know {type(op).__name__}")
            flt, new, upsert = check_filter(op._filter), op._doc, op._upsert
            hit = [i for i, d in enumerate(self.docs) if matches(d, flt)]
            if hit:
                old = self.docs[hit[0]]
                doc = {**copy.deepcopy(new), "_id": old["_id"]}
                if self.timeseries is not None:
                    self._check_document(doc)
                if doc != old:
                    modified += 1
                self.docs[hit[0]] = doc
            elif upsert:
                self._insert(copy.deepcopy(new))
                upserted += 1
        return BulkResult(upserted, modified)


class FakeDatabase:
    def __init__(self, client: FakeClient, name: str):
        self.client = client
        self.name = name
        self.collections: dict[str, FakeCollection] = {}

    def list_collection_names(self) -> list[str]:
        return list(self.collections)

    def create_collection(self, name: str, timeseries: dict[str, str] | None = None):
        self.client.calls.append((name, "create_collection", timeseries))
        if name in self.collections:
            raise FakeOperationFailure(f"collection {name} already exists")
        self.collections[name] = FakeCollection(self.client, name, timeseries)
        return self.collections[name]

    def __getitem__(self, name: str) -> FakeCollection:
        if name not in self.collections:  # MongoDB creates a regular collection on first use
            self.collections[name] = FakeCollection(self.client, name, None)
        return self.collections[name]


class FakeClient:
    """``MongoClient`` stand-in: databases by name, ``close``, the recorded ``calls``."""

    def __init__(self) -> None:
        self.databases: dict[str, FakeDatabase] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.closed = 0

    def __getitem__(self, name: str) -> FakeDatabase:
        return self.databases.setdefault(name, FakeDatabase(self, name))

    def close(self) -> None:
        self.closed += 1

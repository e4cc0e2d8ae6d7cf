"""The SQLite file behind the store: one row per model cycle, kept for the retention period.

The data directory is created 0700 and the database file 0600 (SQLite gives its journal the
file's mode): results name the models and servers a site runs. A symlink in their place (the
directory or the file) is refused: the store would write wherever it points. Like every other
storage failure this is an error in the log and the results are kept in memory only.

Every stored row is checked on the way in as input from a server is (``Record.from_json``,
``Inventory.from_json``): a row with a wrong type or a value out of range is skipped, counted
(``rows_skipped``) and logged (the first few; then one line saying how many).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from ometer_exporter.store.capacity import CapacityRecord
from ometer_exporter.store.records import MAX_TEXT, Inventory, Record, Stored

log = logging.getLogger(__name__)

_LOGGED_SKIPS: Final = 10  # bad rows logged one by one per read; the rest are summed up
_SIDE_FILES: Final = ("-journal", "-wal", "-shm")


class UnsafePath(OSError):
    """A symlink where the data directory or the database file should be."""


def _refuse_symlink(path: Path) -> None:
    if path.is_symlink():
        raise UnsafePath(f"{path} is a symlink; refusing to follow it (use the real path)")


def prepare(path: Path) -> None:
    """The directory (0700 when created) and the database file (0600), neither a symlink."""
    directory = path.parent
    _refuse_symlink(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for candidate in (path, *(path.with_name(path.name + s) for s in _SIDE_FILES)):
        _refuse_symlink(candidate)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o600)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafePath(f"{path} is not a regular file")
        if mode & 0o077:  # an older file, or one made by hand: results are not for everyone
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


# The history's figures, kept in columns beside each row's JSON so that ``/api/history`` reads
# them without parsing JSON (``json_extract`` costs ~10 µs a row: seconds over a week of 200
# models). Written with every row; filled from the JSON once for rows written before them.
POINT_COLUMNS: Final = (
    ("kind", "TEXT", "kind"),
    ("success", "INTEGER", "success"),
    ("ttft", "REAL", "ttft"),
    ("tps", "REAL", "tokens_per_second"),
    ("prefill", "REAL", "prompt_tokens_per_second"),
    ("load", "REAL", "load_duration"),
    ("prompt_set", "TEXT", "prompt_set"),
    ("num_predict", "INTEGER", "num_predict"),
    ("think", "TEXT", "think"),
    ("url", "TEXT", "url"),
    ("version", "TEXT", "ollama_version"),
)
_POINT_NAMES: Final = ", ".join(name for name, _, _ in POINT_COLUMNS)
# An embedding model's "TTFT" is its request time and its rate the input rate, as every view
# shows them (``views.rows``): its points hold those.
_EMBEDDING_FIELDS: Final = {"ttft": "request_duration", "tps": "prompt_tokens_per_second"}


def point_values(record: Record) -> tuple[Any, ...]:
    """The point columns of a record, in ``POINT_COLUMNS`` order."""
    embedding = record.kind == "embedding"
    return tuple(
        getattr(record, _EMBEDDING_FIELDS.get(name, field) if embedding else field)
        for name, _, field in POINT_COLUMNS
    )


# One point of a model's history: finished_at, then the columns above in their order.
PointRow = tuple[Any, ...]


class Database:
    """SQLite file; every method runs in a worker thread. Failures are logged, never raised."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS results ("
        " target TEXT NOT NULL, model TEXT NOT NULL, finished_at REAL NOT NULL,"
        " benchmark TEXT NOT NULL, inventory TEXT)",
        "CREATE INDEX IF NOT EXISTS results_by_model ON results (target, model, finished_at)",
        "CREATE INDEX IF NOT EXISTS results_by_time ON results (finished_at)",
        # The load sweeps (``store.capacity``): one row per published sweep.
        "CREATE TABLE IF NOT EXISTS capacity ("
        " target TEXT NOT NULL, model TEXT NOT NULL, finished_at REAL NOT NULL,"
        " record TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS capacity_by_model ON capacity (target, model, finished_at)",
    )

    def __init__(self, path: Path, retention: float) -> None:
        self.path = path
        self.retention = retention
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self.rows_skipped = 0  # stored rows refused when read (``ometer_store_rows_skipped``)

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is not None or self._broken:
            return self._conn
        try:
            prepare(self.path)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            for statement in self._SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
            if "inventory" not in columns:  # a file written before inventories were kept
                conn.execute("ALTER TABLE results ADD COLUMN inventory TEXT")
            if "version" not in columns:  # a file written before the point columns
                _add_point_columns(conn, columns)
            # Covers ``points``: its rows are read from the index, never from the table.
            conn.execute(
                "CREATE INDEX IF NOT EXISTS results_points ON results "
                f"(target, model, finished_at, {_POINT_NAMES})"
            )
            conn.commit()
        except UnsafePath as exc:
            log.error("storage unusable: %s; results are kept in memory only", exc)
            self._broken = True
            return None
        except (sqlite3.Error, OSError) as exc:
            log.warning("storage %s unusable (%s); results are kept in memory only", self.path, exc)
            self._broken = True
            return None
        self._conn = conn
        return conn

    def write(self, target: str, model: str, record: Record, inventory: Inventory | None) -> None:
        conn = self._connect()
        if conn is None:
            return
        try:
            inv = json.dumps(asdict(inventory), allow_nan=False) if inventory else None
            with conn:
                conn.execute(
                    "INSERT INTO results (target, model, finished_at, benchmark, inventory, "
                    f"{_POINT_NAMES}) VALUES (?, ?, ?, ?, ?{', ?' * len(POINT_COLUMNS)})",
                    (target, model, record.finished_at, record.to_json(), inv,
                     *point_values(record)),
                )  # fmt: skip
                conn.execute(
                    "DELETE FROM results WHERE finished_at < ?", (time.time() - self.retention,)
                )
        except (sqlite3.Error, OSError, ValueError) as exc:
            log.warning("could not store the result of %s on %s: %s", model, target, exc)

    def write_capacity(self, target: str, model: str, record: CapacityRecord) -> None:
        conn = self._connect()
        if conn is None:
            return
        try:
            with conn:
                conn.execute(
                    "INSERT INTO capacity (target, model, finished_at, record) VALUES (?, ?, ?, ?)",
                    (target, model, record.finished_at, record.to_json()),
                )
                conn.execute(
                    "DELETE FROM capacity WHERE finished_at < ?", (time.time() - self.retention,)
                )
        except (sqlite3.Error, OSError, ValueError) as exc:
            log.warning("could not store the sweep of %s on %s: %s", model, target, exc)

    def latest_capacity(self) -> list[tuple[str, str, CapacityRecord]]:
        """Each model's newest stored sweep; a bad row is skipped, logged and counted."""
        conn = self._connect()
        if conn is None:
            return []
        try:
            rows = conn.execute(
                "SELECT target, model, record FROM capacity c WHERE finished_at = (SELECT "
                "MAX(finished_at) FROM capacity WHERE target = c.target AND model = c.model)"
            ).fetchall()
        except sqlite3.Error as exc:
            log.warning("could not read stored sweeps from %s: %s", self.path, exc)
            return []
        out: list[tuple[str, str, CapacityRecord]] = []
        for target, model, text in rows:
            try:
                _check_names(target, model)
                if not isinstance(text, str):
                    raise ValueError("record: not JSON text")
                out.append((target, model, CapacityRecord.from_json(text)))
            except (ValueError, TypeError) as exc:
                self.rows_skipped += 1
                log.warning("skipping a stored sweep of %s on %s: %s",
                            ascii(model)[:120], ascii(target)[:120], exc)  # fmt: skip
        return out

    def latest(self) -> list[Stored]:
        return self._select(
            "SELECT target, model, benchmark, inventory FROM results r WHERE finished_at = "
            "(SELECT MAX(finished_at) FROM results WHERE target = r.target AND model = r.model)",
            (),
        )

    def history(self, target: str | None) -> list[Stored]:
        columns = "SELECT target, model, benchmark, inventory FROM results"
        if target is None:
            return self._select(f"{columns} ORDER BY finished_at", ())
        return self._select(f"{columns} WHERE target = ? ORDER BY finished_at", (target,))

    def points(
        self, keys: Sequence[tuple[str, str]], since: float, limit: int
    ) -> list[list[PointRow]]:
        """Per (target, model), its newest ``limit`` rows since ``since``, oldest first: each
        ``(finished_at, kind, success, ttft, …)`` as ``POINT_COLUMNS``, unchecked (the caller
        checks). One indexed query per model: a few rows each, however long the history."""
        conn = self._connect()
        if conn is None:
            return [[] for _ in keys]
        sql = (
            f"SELECT finished_at, {_POINT_NAMES} FROM results WHERE target = ? AND model = ?"
            " AND finished_at >= ? ORDER BY finished_at DESC LIMIT ?"
        )
        out: list[list[PointRow]] = []
        try:
            for target, model in keys:
                rows = conn.execute(sql, (target, model, since, limit)).fetchall()
                rows.reverse()
                out.append(rows)
        except sqlite3.Error as exc:
            log.warning("could not read the history from %s: %s", self.path, exc)
            return [[] for _ in keys]
        return out

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[Stored]:
        conn = self._connect()
        if conn is None:
            return []
        try:
            rows = conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            log.warning("could not read stored results from %s: %s", self.path, exc)
            return []
        out: list[Stored] = []
        skipped = 0
        for target, model, text, inventory in rows:
            try:
                out.append(_stored(target, model, text, inventory))
            except (ValueError, TypeError) as exc:
                skipped += 1
                if skipped <= _LOGGED_SKIPS:
                    log.warning("skipping a stored result of %s on %s: %s",
                                ascii(model)[:120], ascii(target)[:120], exc)  # fmt: skip
        if skipped > _LOGGED_SKIPS:
            log.warning("skipped %d stored results in all (%d more not shown)",
                        skipped, skipped - _LOGGED_SKIPS)  # fmt: skip
        self.rows_skipped += skipped
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _add_point_columns(conn: sqlite3.Connection, columns: set[str]) -> None:
    """Add the point columns and fill them from each row's JSON (rows whose JSON is broken
    stay empty: reading them skips them, as ``latest`` skips them)."""
    for name, kind, _ in POINT_COLUMNS:
        if name not in columns:
            conn.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")

    def value(name: str, field: str) -> str:
        if name not in _EMBEDDING_FIELDS:
            return f"json_extract(benchmark, '$.{field}')"
        return (
            "CASE json_extract(benchmark, '$.kind') WHEN 'embedding' THEN "
            f"json_extract(benchmark, '$.{_EMBEDDING_FIELDS[name]}') "
            f"ELSE json_extract(benchmark, '$.{field}') END"
        )

    assignments = ", ".join(f"{name} = {value(name, field)}" for name, _, field in POINT_COLUMNS)
    conn.execute(f"UPDATE results SET {assignments} WHERE json_valid(benchmark)")


def _stored(target: Any, model: Any, text: Any, inventory: Any) -> Stored:
    """One row, checked: names are text, the JSON columns are checked by ``from_json``."""
    _check_names(target, model)
    if not isinstance(text, str) or not (inventory is None or isinstance(inventory, str)):
        raise ValueError("benchmark/inventory: not JSON text")
    record = Record.from_json(text)
    inv = Inventory.from_json(inventory) if inventory else None
    return target, model, record, inv


def _check_names(target: Any, model: Any) -> None:
    for what, value in (("target", target), ("model", model)):
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            raise ValueError(f"{what}: not a name")

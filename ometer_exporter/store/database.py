"""The SQLite file behind the store: one row per model cycle, kept for the retention period."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ometer_exporter.store.records import Inventory, Record, Stored

log = logging.getLogger(__name__)


class Database:
    """SQLite file; every method runs in a worker thread. Failures are logged, never raised."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS results ("
        " target TEXT NOT NULL, model TEXT NOT NULL, finished_at REAL NOT NULL,"
        " benchmark TEXT NOT NULL, inventory TEXT)",
        "CREATE INDEX IF NOT EXISTS results_by_model ON results (target, model, finished_at)",
        "CREATE INDEX IF NOT EXISTS results_by_time ON results (finished_at)",
    )

    def __init__(self, path: Path, retention: float) -> None:
        self.path = path
        self.retention = retention
        self._conn: sqlite3.Connection | None = None
        self._broken = False

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is not None or self._broken:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
            for statement in self._SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
            if "inventory" not in columns:  # a file written before inventories were kept
                conn.execute("ALTER TABLE results ADD COLUMN inventory TEXT")
            conn.commit()
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
                    "INSERT INTO results (target, model, finished_at, benchmark, inventory)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (target, model, record.finished_at, record.to_json(), inv),
                )
                conn.execute(
                    "DELETE FROM results WHERE finished_at < ?", (time.time() - self.retention,)
                )
        except (sqlite3.Error, OSError, ValueError) as exc:
            log.warning("could not store the result of %s on %s: %s", model, target, exc)

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
        for target, model, text, inventory in rows:
            try:
                record = Record.from_json(text)
                inv = Inventory.from_json(inventory) if inventory else None
            except (ValueError, TypeError) as exc:
                log.warning("skipping an unreadable stored result of %s: %s", model, exc)
                continue
            out.append((str(target), str(model), record, inv))
        return out

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

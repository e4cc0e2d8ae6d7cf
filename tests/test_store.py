"""Store: atomic snapshots, SQLite persistence, retention, restore."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

import pytest
from factories import entry

from ometer_exporter.store.records import Method, TargetState
from ometer_exporter.store.store import Store

METHOD = Method("default", 128, "auto")


def target(name: str = "local") -> TargetState:
    return TargetState(name, cloud=False, interval=600.0, method=METHOD)


async def test_persist_restore_and_retention(tmp_path) -> None:
    store = Store(tmp_path, retention=3600)
    store.set_targets([target()])
    bench = entry("local", "llama3.2:latest").benchmark
    assert bench is not None
    old = dataclasses.replace(bench, finished_at=time.time() - 7200, ttft=9.0)
    await store.persist("local", "llama3.2:latest", old)
    await store.persist("local", "llama3.2:latest", bench)  # this write prunes the old row
    await store.close()
    with sqlite3.connect(tmp_path / "ometer.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone() == (1,)

    restored = Store(tmp_path, retention=3600)
    restored.set_targets([target(), target("other")])
    await restored.restore()
    got = restored.snapshot.models[("local", "llama3.2:latest")]
    assert got.benchmark == bench
    assert got.last_success == bench.finished_at
    await restored.close()


async def test_snapshot_is_swapped_not_mutated(tmp_path) -> None:
    store = Store(None)
    store.set_targets([target()])
    before = store.snapshot
    store.update_target("local", up=True, version="0.33.0")
    after = store.snapshot
    assert before.targets["local"].up is None  # the old snapshot never changes
    assert after.targets["local"].up is True
    assert after.generation == before.generation + 1


async def test_unwritable_storage_keeps_serving_from_memory(tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = Store(blocker / "sub")
    store.set_targets([target()])
    bench = entry("local", "m:latest").benchmark
    assert bench is not None
    await store.persist("local", "m:latest", bench)  # logged, not raised
    assert "kept in memory only" in caplog.text
    await store.restore()
    await store.close()


async def test_corrupt_database_is_left_alone_and_memory_serves(tmp_path, caplog) -> None:
    db = tmp_path / "ometer.sqlite3"
    garbage = b"this is not an SQLite database" * 100
    db.write_bytes(garbage)
    store = Store(tmp_path)
    store.set_targets([target()])
    await store.restore()  # warns, restores nothing
    assert "unusable" in caplog.text and "kept in memory only" in caplog.text
    bench = entry("local", "m:latest").benchmark
    assert bench is not None
    await store.persist("local", "m:latest", bench)
    await store.close()
    assert db.read_bytes() == garbage  # the user's file is not overwritten


def test_full_disk_logs_and_keeps_results_in_memory(tmp_path) -> None:
    """A real write failure: the file-size limit (RLIMIT_FSIZE) makes the disk 'full'."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio, dataclasses, logging, resource, sys
        sys.path.insert(0, "tests")
        from factories import entry
        from ometer_exporter.store.records import Method, TargetState
        from ometer_exporter.store.store import Store
        logging.basicConfig(level=logging.WARNING)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

        async def main():
            store = Store(sys.argv[1])
            store.set_targets([TargetState("local", False, 600.0, Method("default", 128, "auto"))])
            bench = entry("local", "m:latest").benchmark
            for i in range(200):
                at = bench.finished_at + i
                big = dataclasses.replace(bench, error="x" * 2000, finished_at=at)
                await store.persist("local", f"m{i}:latest", big)
            await store.close()
            print("finished", len(store.snapshot.targets))

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, cwd=os.getcwd())  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "finished 1" in done.stdout
    assert "could not store the result" in done.stderr
    assert "of m199:latest" in done.stderr  # every later write was tried, none crashed
    assert any(text in done.stderr for text in ("disk I/O error", "database or disk is full"))
    # What was written before the disk filled up is intact.
    with sqlite3.connect(tmp_path / "ometer.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] >= 5


async def test_inventory_is_stored_with_each_result(tmp_path) -> None:
    import sqlite3 as sql

    from factories import snapshot

    store = Store(tmp_path)
    store.set_targets([target()])
    e = entry("local", "llama3.2:latest")
    store._snapshot = snapshot([e])  # the store as the loop left it
    assert e.benchmark is not None and e.inventory is not None
    await store.persist("local", "llama3.2:latest", e.benchmark)
    await store.close()

    restored = Store(tmp_path)
    restored.set_targets([target()])
    await restored.restore()
    got = restored.snapshot.models[("local", "llama3.2:latest")].inventory
    assert got is not None
    assert got.parameters == e.inventory.parameters
    assert got.capabilities == e.inventory.capabilities
    assert got.loaded is None and got.vram_bytes is None  # for /api/ps to say, not the disk
    history = await restored.history()
    assert history[0][3] is not None and history[0][3].context_length == 131072
    await restored.close()

    # A file from before inventories were stored gains the column and still reads.
    old = tmp_path / "old"
    old.mkdir()
    with sql.connect(old / "ometer.sqlite3") as db:
        db.execute("CREATE TABLE results (target TEXT NOT NULL, model TEXT NOT NULL, "
                   "finished_at REAL NOT NULL, benchmark TEXT NOT NULL)")  # fmt: skip
        row = ("local", "m:latest", e.benchmark.finished_at, e.benchmark.to_json())
        db.execute("INSERT INTO results VALUES (?, ?, ?, ?)", row)
    migrated = Store(old)
    migrated.set_targets([target()])
    await migrated.restore()
    assert migrated.snapshot.models[("local", "m:latest")].benchmark == e.benchmark
    await migrated.persist("local", "m:latest", e.benchmark)
    await migrated.close()
    with sql.connect(old / "ometer.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone() == (2,)


async def test_a_record_keeps_the_target_url_without_credentials(tmp_path) -> None:
    from ometer_exporter.measure.results import ModelResult

    def result(model: str) -> ModelResult:  # a cycle without a good run: nothing carried over
        now = time.time()
        return ModelResult(model, "chat", now - 1, now, ())

    store = Store(tmp_path)
    store.set_targets([target()])
    assert store.record("local", result("a:latest"), METHOD).url == ""  # not given: unknown
    bench = store.record("local", result("b:latest"), METHOD, url="http://gpu-box:11434")
    assert bench.url == "http://gpu-box:11434"
    hidden = store.record(
        "local", result("c:latest"), METHOD, url="https://user:s3cret@gpu-box:443/ollama"
    )
    assert hidden.url == "https://gpu-box:443/ollama" and "s3cret" not in hidden.to_json()
    await store.persist("local", "b:latest", bench)
    await store.close()
    restored = Store(tmp_path)
    restored.set_targets([target()])
    [(_, _, stored, _)] = await restored.history()
    assert stored.url == "http://gpu-box:11434"
    await restored.close()


# -- stored rows are input too: checked on restore ----------------------------------------------

BAD_BENCHMARKS: dict[str, dict[str, object]] = {
    "wrong type": {"finished_at": "yesterday"},
    "huge integer": {"started_at": 10**400},
    "year 10000": {"finished_at": 253_402_300_800.0 + 86400},
    "negative ttft": {"ttft": -1.0},
    "not a bool": {"success": "yes"},
    "unknown kind": {"kind": "video"},
    "runs not a list": {"run_ttft": "0.1,0.2"},
    "nan in runs": {"run_tokens_per_second": [1.0, float("nan")]},
}
BAD_INVENTORIES: dict[str, dict[str, object]] = {
    "huge size": {"size_bytes": 10**400},
    "negative parameters": {"parameters": -5},
    "float vram": {"vram_bytes": 1.5},
    "capability not text": {"capabilities": ["tools", 7]},
    "too many capabilities": {"capabilities": [f"c{i}" for i in range(50_000)]},
    "year 10000": {"modified_at": 1e12},
}


def _rows(e, bad_benchmark=None, bad_inventory=None) -> tuple[str, str]:
    import json

    bench = json.loads(e.benchmark.to_json())
    bench.update(bad_benchmark or {})
    inventory = json.loads(json.dumps(dataclasses.asdict(e.inventory)))
    inventory.update(bad_inventory or {})
    # Python's json writes 10**400 as digits and NaN as NaN: what a tampered file can hold.
    return json.dumps(bench), json.dumps(inventory)


async def test_bad_stored_rows_are_skipped_and_never_reach_a_view(tmp_path, caplog) -> None:
    from factories import snapshot

    from ometer_exporter.views.exposition import Exposition
    from ometer_exporter.views.page import render
    from ometer_exporter.views.query import Query
    from ometer_exporter.views.rows import rows, to_json

    good = entry("local", "good:latest")
    store = Store(tmp_path)
    store.set_targets([target()])
    store._snapshot = snapshot([good])
    assert good.benchmark is not None
    await store.persist("local", "good:latest", good.benchmark)
    await store.close()
    Case = tuple[str, dict[str, object] | None, dict[str, object] | None]
    cases: list[Case] = [
        (f"b-{i}:latest", bad, None) for i, bad in enumerate(BAD_BENCHMARKS.values())
    ]
    cases += [(f"i-{i}:latest", None, bad) for i, bad in enumerate(BAD_INVENTORIES.values())]
    with sqlite3.connect(tmp_path / "ometer.sqlite3") as db:
        for model, bad_benchmark, bad_inventory in cases:
            bench, inventory = _rows(entry("local", model), bad_benchmark, bad_inventory)
            db.execute("INSERT INTO results (target, model, finished_at, benchmark, inventory)"
            " VALUES (?, ?, ?, ?, ?)",
                       ("local", model, time.time(), bench, inventory))  # fmt: skip
        db.execute(
            "INSERT INTO results (target, model, finished_at, benchmark, inventory)"
            " VALUES ('local', 'blob:latest', 1, X'00', NULL)"
        )

    restored = Store(tmp_path)
    restored.set_targets([target()])
    await restored.restore()
    snap = restored.snapshot
    assert set(snap.models) == {("local", "good:latest")}
    assert snap.rows_skipped == len(cases) + 1
    assert "finished_at: str, not a number" in caplog.text
    assert "started_at: too large for a float" in caplog.text
    assert "run_tokens_per_second: nan is out of range" in caplog.text
    assert (
        "size_bytes: 1000000000000000000000000000000000000000… (401 characters) is out of "
        "range" in caplog.text
    )
    # Ten rows are logged one by one, the rest summed up: a tampered file cannot flood the log.
    assert caplog.text.count("skipping a stored result") == 10
    assert f"skipped {len(cases) + 1} stored results in all (5 more not shown)" in caplog.text
    body = await Exposition().render(snap, openmetrics=False, gzip=False)
    assert f"ometer_store_rows_skipped_total {len(cases) + 1}\n".encode() in body
    assert [r["model"] for r in rows(snap, Query())] == ["good:latest"]
    to_json(rows(snap, Query()))
    assert "good:latest" in render(snap, version="t")
    await restored.close()


async def test_database_and_directory_are_private(tmp_path) -> None:
    import os
    import stat

    data = tmp_path / "data"
    store = Store(data)
    store.set_targets([target()])
    bench = entry("local", "m:latest").benchmark
    assert bench is not None
    old = os.umask(0o022)  # the usual umask: files 0644, directories 0755 unless made otherwise
    try:
        await store.persist("local", "m:latest", bench)
    finally:
        os.umask(old)
    await store.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "ometer.sqlite3").stat().st_mode) == 0o600
    # An older file, readable by everyone, is made private on the next start.
    (data / "ometer.sqlite3").chmod(0o644)
    again = Store(data)
    again.set_targets([target()])
    await again.restore()
    await again.close()
    assert stat.S_IMODE((data / "ometer.sqlite3").stat().st_mode) == 0o600


async def test_journal_files_are_private_too(tmp_path) -> None:
    """SQLite gives its journal the database file's mode: seen while a write is open."""
    import os
    import stat

    store = Store(tmp_path)
    store.set_targets([target()])
    bench = entry("local", "m:latest").benchmark
    assert bench is not None
    await store.persist("local", "m:latest", bench)
    db = store._db
    assert db is not None and db._conn is not None
    db._conn.execute("BEGIN IMMEDIATE")
    db._conn.execute("DELETE FROM results")
    journal = tmp_path / "ometer.sqlite3-journal"
    assert journal.exists()
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    db._conn.rollback()
    await store.close()


@pytest.mark.parametrize("where", ["directory", "file"])
async def test_a_symlink_in_the_data_directory_is_refused(tmp_path, caplog, where) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = tmp_path / "data"
    if where == "directory":
        data.symlink_to(elsewhere, target_is_directory=True)
        pointed = data
    else:
        data.mkdir()
        pointed = data / "ometer.sqlite3"
        pointed.symlink_to(elsewhere / "victim")
    store = Store(data)
    store.set_targets([target()])
    await store.restore()
    bench = entry("local", "m:latest").benchmark
    assert bench is not None
    await store.persist("local", "m:latest", bench)
    await store.close()
    assert f"{pointed} is a symlink; refusing to follow it" in caplog.text
    assert "kept in memory only" in caplog.text
    assert list(elsewhere.iterdir()) == []  # nothing was written where the link points


def test_every_stored_field_has_a_restore_rule() -> None:
    """A field without a rule would be dropped on restore: every one is checked and kept."""
    from ometer_exporter.store.records import INVENTORY_RULES, RECORD_RULES, Inventory, Record

    assert set(RECORD_RULES) == {f.name for f in dataclasses.fields(Record)}
    assert set(INVENTORY_RULES) == {f.name for f in dataclasses.fields(Inventory)}


def test_every_stored_capacity_field_has_a_restore_rule() -> None:
    from ometer_exporter.store.capacity import (
        CAPACITY_RULES,
        LEVEL_RULES,
        CapacityLevel,
        CapacityRecord,
    )

    assert set(CAPACITY_RULES) == {f.name for f in dataclasses.fields(CapacityRecord)}
    assert set(LEVEL_RULES) == {f.name for f in dataclasses.fields(CapacityLevel)}


async def test_a_sweep_survives_a_restart_and_a_bad_stored_sweep_is_skipped(tmp_path) -> None:
    from factories import capacity

    record = capacity(slots=4)
    store = Store(tmp_path)
    store.set_targets([target()])
    await store.restore()
    await store.persist_capacity("local", "m:latest", record)
    await store.persist_capacity("local", "bad:latest", record)
    await store.close()
    with sqlite3.connect(tmp_path / "ometer.sqlite3") as conn:  # a level with attainment 2
        bad = record.to_json().replace('"attainment":1.0', '"attainment":2.0', 1)
        conn.execute("UPDATE capacity SET record = ? WHERE model = 'bad:latest'", (bad,))
    again = Store(tmp_path)
    again.set_targets([target()])
    await again.restore()
    await again.close()
    models = again.snapshot.models
    assert models[("local", "m:latest")].capacity == record
    assert ("local", "bad:latest") not in models
    assert again.snapshot.rows_skipped == 1

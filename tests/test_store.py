"""Store: atomic snapshots, SQLite persistence, retention, restore."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

from factories import entry

from ometer_exporter.store import Method, Store, TargetState

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

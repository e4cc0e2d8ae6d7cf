"""Store: atomic snapshots, SQLite persistence, retention, restore."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

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

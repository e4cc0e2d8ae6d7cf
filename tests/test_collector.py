"""The cached exposition against prometheus_client's own rendering, and promtool on both."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess
from dataclasses import replace

import pytest
from factories import capacity, entry, snapshot
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from ometer_exporter.store.records import Inventory, ModelEntry, Snapshot
from ometer_exporter.views.exposition import Exposition
from ometer_exporter.views.reference import full_render


def samples(families) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in families
        for s in f.samples
        if not s.name.startswith(("process_", "python_"))
    }


NASTY = 'evil"model\\with\nnewline<script>:latest'


@pytest.fixture
def snap() -> Snapshot:
    return snapshot([entry("local", "llama3.2:latest"), entry("local", NASTY, ttft=0.5),
                     entry("cloud", "gpt-oss:120b", ttft=1.0)])  # fmt: skip


async def test_cached_text_equals_prometheus_client(snap: Snapshot) -> None:
    body = await Exposition().render(snap, openmetrics=False, gzip=False)
    ours = samples(parse_text(body.decode()))
    reference = samples(parse_text(full_render(snap).decode()))
    assert ours == reference
    names = {name for name, _, _ in ours}
    assert "ometer_time_to_first_token_seconds" in names
    assert "ometer_benchmark_time_to_first_token_seconds_bucket" in names
    assert ("ometer_time_to_first_token_seconds",
            (("model", NASTY), ("target", "local")), 0.5) in ours  # fmt: skip


async def test_cached_openmetrics_equals_prometheus_client(snap: Snapshot) -> None:
    body = await Exposition().render(snap, openmetrics=True, gzip=False)
    assert body.endswith(b"# EOF\n")
    ours = samples(parse_openmetrics(body.decode()))
    reference = samples(parse_openmetrics(full_render(snap, openmetrics=True).decode()))
    assert ours == reference


async def test_gzip_body_is_the_text_body(snap: Snapshot) -> None:
    exposition = Exposition()
    plain = await exposition.render(snap, openmetrics=False, gzip=False)
    zipped = await exposition.render(snap, openmetrics=False, gzip=True)
    unzipped = gzip.decompress(zipped)
    # The live part (process metrics) differs between two scrapes; the snapshot part must not.
    cut = plain.index(b"# HELP process_")
    assert unzipped[:cut] == plain[:cut]
    assert b"process_cpu_seconds_total" in unzipped


async def test_a_change_recompresses_only_the_families_whose_lines_changed(monkeypatch) -> None:
    import ometer_exporter.views.exposition as collector

    entries = [replace(entry("local", f"m{i}:latest"), capacity=capacity()) for i in range(3)]
    exposition = Exposition()
    await exposition.render(snapshot(entries), openmetrics=False, gzip=True)
    deflated: list[bytes] = []
    original = collector._deflate

    def recording(pieces, level):
        pieces = list(pieces)
        deflated.extend(p for p in pieces if p)
        return original(pieces, level)

    monkeypatch.setattr(collector, "_deflate", recording)
    entries[1] = replace(entries[1], benchmark=entry("local", "m1:latest", ttft=0.75).benchmark)
    changed = snapshot(entries, generation=2)
    zipped = await exposition.render(changed, openmetrics=False, gzip=True)
    plain = await exposition.render(changed, openmetrics=False, gzip=False)
    recompressed = b"".join(deflated)
    assert b'ometer_time_to_first_token_seconds{target="local",model="m1:latest"} 0.75' in (
        recompressed)  # fmt: skip
    assert b"ometer_capacity_" not in recompressed  # the load sweeps' lines did not change
    unzipped = gzip.decompress(zipped)  # checks the CRC-32 and length of the whole body
    cut = plain.index(b"# HELP process_")
    assert unzipped[:cut] == plain[:cut]
    assert b'model="m1:latest"} 0.75\n' in unzipped


async def test_unchanged_snapshot_is_not_rerendered(snap: Snapshot, monkeypatch) -> None:
    exposition = Exposition()
    await exposition.render(snap, openmetrics=False, gzip=True)
    calls = []
    original = exposition._build

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(exposition, "_build", counting)
    for _ in range(5):
        await exposition.render(snap, openmetrics=False, gzip=True)
    assert calls == []
    changed = snapshot([*snap.models.values()], generation=2)
    await exposition.render(changed, openmetrics=False, gzip=True)
    assert calls == [1]


async def test_only_changed_models_are_rerendered(snap: Snapshot, monkeypatch) -> None:
    import ometer_exporter.views.exposition as collector

    exposition = Exposition()
    await exposition.render(snap, openmetrics=False, gzip=False)
    rendered: list[str] = []
    original = collector._model_lines

    def counting(e):
        rendered.append(e.model)
        return original(e)

    monkeypatch.setattr(collector, "_model_lines", counting)
    entries = [*snap.models.values()]
    entries[0] = entry(entries[0].target, entries[0].model, ttft=0.75)
    await exposition.render(snapshot(entries, generation=2), openmetrics=False, gzip=False)
    assert rendered == [entries[0].model]


async def test_vanished_model_leaves_every_series(snap: Snapshot) -> None:
    exposition = Exposition()
    await exposition.render(snap, openmetrics=False, gzip=False)
    rest = [e for e in snap.models.values() if e.model != "llama3.2:latest"]
    body = await exposition.render(snapshot(rest, generation=2), openmetrics=False, gzip=False)
    assert b'model="llama3.2:latest"' not in body
    assert b'model="gpt-oss:120b"' in body


def test_never_measured_series_are_absent() -> None:
    inventory_only = ModelEntry("local", "new:latest", inventory=Inventory(family="llama"))
    names = {name for name, _, _ in samples(parse_text(full_render(snapshot([inventory_only]))
                                                        .decode()))}  # fmt: skip
    assert "ometer_model_info" in names
    assert "ometer_time_to_first_token_seconds" not in names
    assert "ometer_benchmark_success" not in names
    assert "ometer_model_parameters" not in names


def test_promtool_accepts_the_exposition(snap: Snapshot) -> None:
    assert shutil.which("promtool"), "promtool is missing: scripts/test installs it"
    body = asyncio.run(Exposition().render(snap, openmetrics=False, gzip=False))
    done = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          check=False)  # fmt: skip
    problems = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, problems
    assert problems.strip() == ""

"""Shared fixtures: the Ollama emulator on loopback (see tests/ollama_emulator)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import settings
from ollama_emulator import EmulatedModel, EmulatorFactory, OllamaEmulator, default_models
from service import start_exporter  # noqa: F401  (fixture: the exporter in-process)


@pytest.fixture
async def emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """``await make(models, **kwargs)`` → a started :class:`OllamaEmulator` on 127.0.0.1:0
    (``models=None`` → a chat, a thinking and an embedding model); all closed at teardown."""
    created: list[OllamaEmulator] = []

    async def make(
        models: list[EmulatedModel] | None = None, *, port: int = 0, **kwargs: Any
    ) -> OllamaEmulator:
        emu = OllamaEmulator(default_models() if models is None else models, **kwargs)
        await emu.start(port=port)
        created.append(emu)
        return emu

    yield make
    for emu in reversed(created):
        await emu.close()


# Property tests: a bounded profile keeps CI fast; HYPOTHESIS_PROFILE=thorough digs deeper.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=False)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

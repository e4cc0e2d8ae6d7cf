"""The seam between the client and the stages above it: what a benchmark needs of a server,
whichever API it speaks, and the client a target's ``api`` setting picks."""

from __future__ import annotations

from typing import Any, Protocol

from ometer_exporter.client.ollama import OllamaClient
from ometer_exporter.client.openai import OpenAIClient
from ometer_exporter.client.replies import (
    ChatStream,
    EmbedResponse,
    LoadedModel,
    ShowInfo,
    TagModel,
)
from ometer_exporter.config.settings import TargetSettings


class EngineClient(Protocol):
    """One server's client: :class:`OllamaClient` or :class:`OpenAIClient`.

    ``ps`` and ``unload`` matter only where the target watches what is loaded (Ollama's
    ``/api/ps``, ``TargetSettings.watches_loaded``); an OpenAI-compatible client lists nothing
    and unloads nothing.
    """

    api: str
    engine: str | None  # known after ``version``: "ollama", "llama.cpp", "vllm", … or "openai"
    slots: int | None
    reconnects: int  # requests sent again after the server closed their kept-alive connection
    loaded_now: frozenset[str] | None  # in memory at the last tags(), where told without ps

    async def version(self) -> str: ...

    async def tags(self) -> list[TagModel]: ...

    async def show(self, model: str) -> ShowInfo: ...

    async def ps(self) -> list[LoadedModel]: ...

    async def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        options: dict[str, Any],
        think: bool | None = None,
        keep_alive: float | None = None,
    ) -> ChatStream: ...

    async def embed(
        self, model: str, inputs: list[str], *, keep_alive: float | None = None
    ) -> EmbedResponse: ...

    async def unload(self, model: str, *, embedding: bool = False) -> None: ...

    async def busy(self) -> bool | None: ...  # a request in progress now (None: not told)

    async def aclose(self) -> None: ...


def client_for(target: TargetSettings) -> EngineClient:
    """The client of the API the target speaks."""
    kind = OpenAIClient if target.api == "openai" else OllamaClient
    capacity = target.benchmark.capacity
    # A load sweep needs a kept-alive connection per concurrent user of its largest level.
    connections = max(capacity.concurrency) if capacity.enabled else 4
    return kind(
        target.url, api_key=target.api_key, timeouts=target.benchmark.timeouts,
        connections=connections,
    )  # fmt: skip

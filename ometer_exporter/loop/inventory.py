"""A model's inventory, from what discovery read: ``/api/tags``, ``/api/show`` and ``/api/ps``."""

from __future__ import annotations

import logging

from ometer_exporter.client.engine import EngineClient
from ometer_exporter.client.errors import OllamaError
from ometer_exporter.client.replies import ShowInfo, TagModel
from ometer_exporter.config.settings import TargetSettings
from ometer_exporter.names import parse_parameter_size
from ometer_exporter.store.records import Inventory
from ometer_exporter.store.store import Store

log = logging.getLogger(__name__)


class ShowCache:
    """``/api/show`` per model digest: asked once per digest, again after a failure."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._shown: dict[tuple[str, str], ShowInfo | None] = {}

    async def get(self, client: EngineClient, tag: TagModel) -> ShowInfo | None:
        key = (tag.name, tag.digest)
        if key not in self._shown:
            try:
                self._shown[key] = await client.show(tag.name)
            except OllamaError as exc:
                log.warning("target %s: /api/show %s failed: %s", self.target, tag.name, exc)
                return None  # not cached: asked again next cycle
        return self._shown[key]


def known_cold(store: Store, target: TargetSettings, name: str) -> bool:
    """Not in memory by what a server without /api/ps said at discovery (LM Studio's model
    state): its first request would load the model. False where it is not known so (and on
    Ollama, whose /api/ps the idle tracker follows)."""
    entry = store.snapshot.models.get((target.name, name))
    inventory = entry.inventory if entry is not None else None
    return not target.watches_loaded and inventory is not None and inventory.loaded is False


def inventory_of(
    tag: TagModel,
    show: ShowInfo | None,
    loaded: dict[str, int | None] | None,
    *,
    wanted: bool,
    select_all: bool,
) -> Inventory:
    """What the store keeps of a model: tags, refined by show (capabilities, parameter count,
    context), and whether ps lists it (None: the target has no ps)."""
    caps = tag.capabilities if tag.capabilities is not None else (show.capabilities if show else ())
    parameters = show.parameter_count if show and show.parameter_count else None
    if parameters is None:
        parameters = parse_parameter_size(tag.parameter_size)
    context = show.context_length if show and show.context_length else tag.context_length
    is_loaded = None if loaded is None else tag.name in loaded
    return Inventory(
        family=tag.family,
        parameter_size=tag.parameter_size,
        quantization_level=tag.quantization_level,
        format=tag.format,
        parameters=parameters,
        context_length=context,
        size_bytes=tag.size,
        modified_at=tag.modified_at.timestamp() if tag.modified_at else None,
        capabilities=tuple(caps),
        loaded=is_loaded,
        vram_bytes=loaded.get(tag.name) if loaded is not None and is_loaded else None,
        wanted=wanted,
        select_all=select_all,
    )

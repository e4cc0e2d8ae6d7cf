"""A model's inventory, from what discovery read: ``/api/tags``, ``/api/show`` and ``/api/ps``."""

from __future__ import annotations

from ometer_exporter.client.replies import ShowInfo, TagModel
from ometer_exporter.names import parse_parameter_size
from ometer_exporter.store.records import Inventory


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

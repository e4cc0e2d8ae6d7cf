"""A wire-faithful Ollama emulator for the test suite (see ``docs/ollama-protocol.md``).

>>> from ollama_emulator import OllamaEmulator, chat_model  # doctest: +SKIP
>>> async with OllamaEmulator([chat_model(load_seconds=120)], time_scale=0.001) as emu:
...     ...  # a 120 s cold load takes ~120 ms real, and load_duration says ~120 s
"""

from .models import (
    EmulatedModel,
    Fault,
    LoadedState,
    RequestRecord,
    chat_model,
    cloud_stub_model,
    default_models,
    embedding_model,
    thinking_model,
)
from .server import BUSY_MESSAGE, USAGE_LIMIT_MESSAGE, EmulatorFactory, OllamaEmulator

__all__ = [
    "BUSY_MESSAGE",
    "USAGE_LIMIT_MESSAGE",
    "EmulatedModel",
    "EmulatorFactory",
    "Fault",
    "LoadedState",
    "OllamaEmulator",
    "RequestRecord",
    "chat_model",
    "cloud_stub_model",
    "default_models",
    "embedding_model",
    "thinking_model",
]

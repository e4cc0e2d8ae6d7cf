"""ometer-exporter: a Prometheus exporter that continuously benchmarks Ollama models."""

from __future__ import annotations

__version__ = "0.1.0"

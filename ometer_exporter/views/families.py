"""What a metric family is (:class:`Spec`) and how a sample is written: shared by the
families of ``views.series`` and ``views.capacity_series``, and by both renderers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from prometheus_client.utils import floatToGoString as _go_float

from ometer_exporter.store.records import Histogram

CACHED: Final = " Cached: the value comes from the background benchmark loop."
MODEL_LABELS: Final = ("target", "model")


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family. ``name`` is the family name (counters without ``_total``)."""

    name: str
    type: str  # gauge | counter | histogram | info | summary (quantiles only)
    help: str
    labels: tuple[str, ...]


def gauge(name: str, help: str, labels: tuple[str, ...] = MODEL_LABELS) -> Spec:
    return Spec(name, "gauge", help, labels)


def sample_text(value: float) -> str:
    """Sample value: integers without a fraction, others in shortest round-trip form."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def bucket_label(bound: float) -> str:
    """Bucket bound as prometheus_client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return cast(str, _go_float(bound))


Sample = tuple[Spec, tuple[str, ...], float]
HistSample = tuple[Spec, tuple[str, ...], Histogram]


Put = Callable[..., None]  # put(spec, value, labels=(target, model))

"""The settings every stage reads: plain frozen values, validated once by ``config.load``.

Nothing here reads a file or the environment; downstream stages import these types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

ThinkMode = Literal["auto", "true", "false"]
SelectMode = Literal["loaded", "all"]
GradingMode = Literal["absolute", "relative"]
# The API a target speaks: Ollama's own, or the OpenAI-compatible one (llama.cpp's llama-server,
# vLLM, SGLang, LM Studio, LocalAI, and Ollama's /v1 too).
ApiMode = Literal["ollama", "openai"]

# Each prompt asks for several sentences so a run produces enough tokens for a stable decode
# rate (runs under 8 output tokens are discarded as "short").
DEFAULT_PROMPTS: tuple[str, ...] = (
    "Explain in five or six sentences why the sky is blue, as you would to a curious student.",
    "Describe in several sentences how a bicycle stays upright while it is moving.",
    "Write a short paragraph of at least five sentences about the history of the printing press.",
)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Phased deadlines of one Ollama request, in seconds."""

    connect: float = 10.0
    # Headers arrive only with the first token, after any model load: minutes on a big model.
    first_byte: float = 300.0
    idle: float = 60.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class Slo:
    """What a request must meet to count for a capacity sweep's attainment and goodput."""

    ttft: float = 1.0  # seconds to the first token
    tpot: float = 0.1  # seconds per output token after the first
    attainment: float = 0.95  # share of a level's requests that must meet both


@dataclass(frozen=True, slots=True)
class CapacitySettings:
    """The load sweep (opt-in: it puts real load on the server): concurrent users per level."""

    enabled: bool = False
    interval: float = 86400.0  # one sweep per model per interval
    window: str = ""  # "HH:MM-HH:MM" local time in which a sweep may start; "" any time
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests_per_level: int = 16  # completed requests per level (at least the level itself)
    num_predict: int = 128
    slo: Slo = Slo()
    refine: bool = False  # bisect between the last passing and the first failing level


@dataclass(frozen=True, slots=True)
class BenchmarkSettings:
    """How one target's models are benchmarked (defaults, overridable per target)."""

    interval: float = 600.0
    jitter: float = 0.10
    # A loaded model is measured once its /api/ps expires_at has not moved for this long (no
    # request of anyone else finished meanwhile); 0 measures at once, without waiting.
    idle_before: float = 10.0
    runs: int = 3
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    num_predict: int = 128
    temperature: float = 0.0
    seed: int = 42
    think: ThinkMode = "auto"
    unload_after: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    # The prompt-length axis (opt-in): prompt sizes in tokens, each measured after the regular
    # runs with ``prompt_num_predict`` output tokens (this axis measures prefill).
    prompt_tokens: tuple[int, ...] = ()
    prompt_num_predict: int = 16
    capacity: CapacitySettings = CapacitySettings()
    # Models of one target reported on at most (the first ones /api/tags lists): a server
    # listing 100,000 would cost 100,000 /api/show calls and their series.
    max_models: int = 1000


@dataclass(frozen=True, slots=True)
class TargetSettings:
    """One server to benchmark, with the `benchmark` defaults merged with its overrides."""

    name: str
    url: str  # http(s)://host[:port][/path], no trailing slash, no credentials; openai: up to /v1
    cloud: bool  # no /api/ps, no warmup, no load metric
    # The secret itself: kept out of repr (and so of str and of every log line made from them).
    api_key: str | None = field(default=None, repr=False)
    api_key_source: str | None = None  # where the key came from: "env NAME" or "file PATH"
    select: SelectMode = "loaded"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    benchmark: BenchmarkSettings = BenchmarkSettings()
    api: ApiMode = "ollama"

    @property
    def watches_loaded(self) -> bool:
        """Whether the target tells what is loaded (``/api/ps``): a local Ollama server. Only
        there are models loaded, warmed up, unloaded, and checked for idleness and contention."""
        return not self.cloud and self.api == "ollama"


# Defaults shared by the dataclasses and the loader: a slots dataclass keeps no class default.
DEFAULT_LOCAL_URL = "http://localhost:11434"
DEFAULT_STORAGE_PATH = "./ometer-data"
DEFAULT_RETENTION = 7 * 24 * 3600.0
DEFAULT_LISTEN_ADDRESS = ":9877"
DEFAULT_LOG_LEVEL = "info"
DEFAULT_LOG_FORMAT = "text"
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")


@dataclass(frozen=True, slots=True)
class IntRange:
    """The integers a knob allows, with why the bounds are there when it is not obvious."""

    low: int
    high: int
    why: str = ""

    @property
    def allowed(self) -> str:
        return f"an integer from {self.low} to {self.high}{self.why}"


# Each knob's range, defined once: the config file, the environment and the flags all use these.
RUNS_RANGE: Final = IntRange(1, 100)  # benchmark.runs
NUM_PREDICT_RANGE: Final = IntRange(
    8,
    100_000,
    " (fewer than 8 output tokens never give a tokens/s figure: such runs are discarded)",
)
PROMPT_TOKENS_RANGE: Final = IntRange(16, 1_048_576)  # benchmark.prompt_tokens, each
PROMPT_NUM_PREDICT_RANGE: Final = IntRange(1, 1024)  # benchmark.prompt_num_predict
MAX_MODELS_RANGE: Final = IntRange(
    1, 100_000, " (models a target lists beyond it are left out, with a warning)"
)  # benchmark.max_models
CONCURRENCY_RANGE: Final = IntRange(1, 256)  # benchmark.capacity.concurrency, each level
REQUESTS_PER_LEVEL_RANGE: Final = IntRange(1, 10_000)  # benchmark.capacity.requests_per_level
PARALLEL_RANGE: Final = IntRange(1, 10)  # bench --parallel, OMETER_PARALLEL
# bench --runs and OMETER_RUNS: a quick terminal check keeps OMeter's narrower 1-3.
ONESHOT_RUNS_RANGE: Final = IntRange(1, 3)


@dataclass(frozen=True, slots=True)
class StorageSettings:
    path: str = DEFAULT_STORAGE_PATH  # a directory; the SQLite file lives inside it
    retention: float = DEFAULT_RETENTION  # seconds of per-run history kept


@dataclass(frozen=True, slots=True)
class DisplaySettings:
    """How the page, the terminal table and the dashboard colour TTFT and tokens/s.

    ``absolute``: a chat model's TTFT below ``ttft[0]`` is good, below ``ttft[1]`` fair, else
    poor; its tokens/s at least ``tokens_per_second[0]`` is good, at least ``[1]`` fair, else
    poor (Grafana's step rule: a value at a threshold takes the next colour). ``relative``: the
    thirds of the table (33rd/66th percentiles). Embedding models are always graded by thirds
    among themselves: their "TTFT" is a whole request and their rate counts input tokens.
    """

    grading: GradingMode = "absolute"
    ttft: tuple[float, float] = (0.5, 2.0)  # seconds: good below the first, poor from the second
    tokens_per_second: tuple[float, float] = (50.0, 20.0)  # good from the first, poor below 2nd


DEFAULT_DISPLAY: Final = DisplaySettings()


@dataclass(frozen=True, slots=True)
class Settings:
    storage: StorageSettings
    benchmark: BenchmarkSettings  # the file's `benchmark` section: defaults for every target
    targets: tuple[TargetSettings, ...]
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    log_level: str = DEFAULT_LOG_LEVEL  # debug | info | warning | error
    log_format: str = DEFAULT_LOG_FORMAT  # text | json
    config_file: str | None = None
    web_config_file: str | None = None
    display: DisplaySettings = DEFAULT_DISPLAY


@dataclass(frozen=True, slots=True)
class Overrides:
    """Values from command-line flags; None means the flag was not given."""

    config_file: str | None = None
    listen_address: str | None = None
    storage_path: str | None = None
    log_level: str | None = None
    log_format: str | None = None
    web_config_file: str | None = None

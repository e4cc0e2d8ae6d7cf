"""The one-shot's flags and environment (OMeter's), checked into :class:`Options`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TextIO
from urllib.parse import urlsplit

from ometer_exporter.cli.oneshot.screen import isatty
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import Overrides, Settings, TargetSettings
from ometer_exporter.views import query as queries

EXIT_OK: Final = 0
EXIT_NOTHING: Final = 1  # nothing matched, or no target could be reached
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

DEFAULT_CLOUD_URL: Final = "https://ollama.com"
CLOUD_TARGET: Final = "cloud"
DOTENV_FILES: Final = (".env", "~/.env", "~/.config/ometer/.env")
RUNS_RANGE: Final = (1, 3)
PARALLEL_RANGE: Final = (1, 10)
NUM_PREDICT_RANGE: Final = (8, 100_000)  # as benchmark.num_predict in the config file

ENVIRONMENT_HELP: Final = """\
environment (also read from ./.env, ~/.env, ~/.config/ometer/.env; the real one wins):
  OLLAMA_LOCAL_BASE_URL  the local server (else OLLAMA_HOST, else http://localhost:11434)
  OLLAMA_CLOUD_BASE_URL  the cloud server (default https://ollama.com)
  OLLAMA_CLOUD_API_KEY   a cloud target exists only with a key (or when --config.file names one)
  OMETER_RUNS            runs per model, 1-3
  OMETER_PARALLEL        models at once per target, 1-10
  NO_COLOR               no colours

exit codes: 0 ok, 1 nothing matched or no target reachable, 2 usage or configuration error"""

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A bad flag, environment value or combination: exit 2 with this message."""


# -- command line ----------------------------------------------------------------------------


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low}-{high})")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ometer-exporter bench",
        description="One benchmark cycle in the terminal (OMeter mode). Without --ttft or\n"
        "--tps it lists the models; with them it measures them and fills the table in as\n"
        "each model finishes.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_argument_group("which models")
    which.add_argument("--local", action="store_true", help="local targets only")
    which.add_argument("--cloud", action="store_true", help="cloud targets only")
    which.add_argument("--model", nargs="+", action="extend", default=[], metavar="NAME",
                       help="exact name or family (llama3.2 matches llama3.2:1b)")  # fmt: skip
    what = parser.add_argument_group("what to measure")
    what.add_argument("--ttft", action="store_true", help="measure and show time to first token")
    what.add_argument("--tps", action="store_true", help="measure and show tokens per second")
    what.add_argument("-v", "--verbose", action="store_true",
                      help="per-run columns (with --history: every stored result)")  # fmt: skip
    what.add_argument("--runs", type=_int_in(*RUNS_RANGE), metavar="N",
                      help="runs per model, 1-3 (env OMETER_RUNS; default 3)")  # fmt: skip
    what.add_argument("--prompts", metavar="TEXT|FILE",
                      help="a prompt, or a file with one prompt per line")  # fmt: skip
    what.add_argument("--parallel", type=_int_in(*PARALLEL_RANGE), metavar="N",
                      help="models at once per target, 1-10 (default 1)")  # fmt: skip
    what.add_argument("--num-predict", type=_int_in(*NUM_PREDICT_RANGE), metavar="N",
                      help="output tokens per run (default 128)")  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--sort", choices=tuple(queries.SORT_KEYS),
                     help="sort best first: name A-Z, size/ctx largest, modified newest, "
                     "ttft lowest, tps highest")  # fmt: skip
    out.add_argument("--reverse", action="store_true", help="reverse --sort")
    out.add_argument("--json", nargs="?", const="-", metavar="PATH",
                     help="write JSON (to stdout without PATH)")  # fmt: skip
    out.add_argument("--csv", nargs="?", const="-", metavar="PATH",
                     help="write CSV (to stdout without PATH)")  # fmt: skip
    out.add_argument("--history", action="store_true",
                     help="show stored results instead of measuring")  # fmt: skip
    conf = parser.add_argument_group("configuration (as serve)")
    conf.add_argument("--config.file", dest="config_file", metavar="PATH",
                      help="YAML configuration: its targets replace the environment's")  # fmt: skip
    conf.add_argument("--storage.path", dest="storage_path", metavar="DIR",
                      help="where results are stored (default ./ometer-data)")  # fmt: skip
    return parser


@dataclass(frozen=True, slots=True)
class Options:
    """Validated flags and environment of one bench invocation."""

    local: bool
    cloud: bool
    models: tuple[str, ...]
    measure: bool
    ttft: bool
    tps: bool
    verbose: bool
    runs: int | None
    prompts: tuple[str, ...] | None
    parallel: int
    num_predict: int | None
    sort: str | None
    reverse: bool
    json_path: str | None
    csv_path: str | None
    history: bool
    color: bool
    settings: Settings
    local_targets: tuple[TargetSettings, ...]
    cloud_targets: tuple[TargetSettings, ...]

    @property
    def to_stdout(self) -> bool:
        return "-" in (self.json_path, self.csv_path)


def parse_options(args: argparse.Namespace, env: Mapping[str, str], stdout: TextIO) -> Options:
    if args.json == "-" and args.csv == "-":
        raise UsageError("--json and --csv cannot both write to stdout; give one a PATH")
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        if path not in (None, "-"):
            parent = Path(path).expanduser().parent
            if not parent.is_dir():
                raise UsageError(f"{flag} {path!r}: directory {str(parent)!r} does not exist")
    settings = load_settings(
        Overrides(config_file=args.config_file, storage_path=args.storage_path), env
    )
    runs = args.runs if args.runs is not None else _env_int(env, "OMETER_RUNS", RUNS_RANGE)
    parallel = args.parallel
    if parallel is None:
        parallel = _env_int(env, "OMETER_PARALLEL", PARALLEL_RANGE) or 1
    local = tuple(t for t in settings.targets if not t.cloud)
    cloud = tuple(t for t in settings.targets if t.cloud)
    if settings.config_file is None:
        cloud += _env_cloud_target(env, settings)
    no_color = bool(env.get("NO_COLOR"))
    return Options(
        local=args.local,
        cloud=args.cloud,
        models=tuple(m for m in args.model if m.strip()),
        measure=args.ttft or args.tps,
        ttft=args.ttft,
        tps=args.tps,
        verbose=args.verbose,
        runs=runs,
        prompts=read_prompts(args.prompts) if args.prompts is not None else None,
        parallel=parallel,
        num_predict=args.num_predict,
        sort=args.sort,
        reverse=args.reverse,
        json_path=args.json,
        csv_path=args.csv,
        history=args.history,
        color=isatty(stdout) and not no_color,
        settings=settings,
        local_targets=local,
        cloud_targets=cloud,
    )


def _env_int(env: Mapping[str, str], name: str, bounds: tuple[int, int]) -> int | None:
    text = (env.get(name) or "").strip()
    if not text:
        return None
    low, high = bounds
    if not text.isdigit() or not low <= int(text) <= high:
        raise UsageError(f"env {name}: {text[:20]!r} is not allowed; allowed: an integer "
                         f"from {low} to {high}")  # fmt: skip
    return int(text)


def _env_cloud_target(env: Mapping[str, str], settings: Settings) -> tuple[TargetSettings, ...]:
    """OMeter's cloud target: only when ``OLLAMA_CLOUD_API_KEY`` holds a key."""
    key = (env.get("OLLAMA_CLOUD_API_KEY") or "").strip()
    if not key:
        return ()
    if not re.fullmatch(r"[\x21-\x7e]+", key):  # the key itself is never echoed
        raise UsageError("env OLLAMA_CLOUD_API_KEY contains spaces or non-ASCII characters "
                         "(value not shown); allowed: one line of printable ASCII")  # fmt: skip
    raw = (env.get("OLLAMA_CLOUD_BASE_URL") or "").strip() or DEFAULT_CLOUD_URL
    parts = urlsplit(raw)
    plain_url = not ("@" in parts.netloc or parts.query or parts.fragment)
    if parts.scheme not in ("http", "https") or not parts.hostname or not plain_url:
        raise UsageError(
            f"env OLLAMA_CLOUD_BASE_URL: {raw[:60]!r} is not allowed; allowed: an http(s) "
            "URL without credentials or query, e.g. https://ollama.com"
        )
    return (
        TargetSettings(
            name=CLOUD_TARGET,
            url=raw.rstrip("/"),
            cloud=True,
            api_key=key,
            api_key_source="env OLLAMA_CLOUD_API_KEY",
            select="all",
            benchmark=settings.benchmark,
        ),
    )


def no_target_message(opts: Options, *, cloud_only: bool) -> str:
    if cloud_only and opts.settings.config_file is None:
        return "no cloud target: set OLLAMA_CLOUD_API_KEY (or name a cloud target in --config.file)"
    kind = "cloud" if cloud_only else "local"
    return f"{opts.settings.config_file} has no {kind} target"


def for_oneshot(target: TargetSettings, opts: Options) -> TargetSettings:
    """bench selects like OMeter: every model (``select: all``), or the ``--model`` ones."""
    bench = target.benchmark
    bench = replace(
        bench,
        runs=opts.runs if opts.runs is not None else bench.runs,
        prompts=opts.prompts if opts.prompts is not None else bench.prompts,
        num_predict=opts.num_predict if opts.num_predict is not None else bench.num_predict,
    )
    if opts.models:  # named models win over the file's include/exclude
        return replace(target, select="all", include=opts.models, exclude=(), benchmark=bench)
    return replace(target, select="all", benchmark=bench)


def read_prompts(value: str) -> tuple[str, ...]:
    """``--prompts``: a file with one prompt per line (blank lines skipped), else the text."""
    path = Path(value).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--prompts {value!r}: cannot read it ({exc})") from None
    else:
        text = value
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not prompts:
        raise UsageError(f"--prompts {value!r}: no prompt in it (blank lines are skipped)")
    return prompts


# -- .env ------------------------------------------------------------------------------------

_DOTENV_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments; values optionally in single or double quotes."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _DOTENV_LINE.fullmatch(line)
        if match is None:
            continue
        key, value = match[1], match[2].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        out[key] = value
    return out


def with_dotenv(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` over ``./.env`` over ``~/.env`` over ``~/.config/ometer/.env``."""
    home = env.get("HOME") or str(Path.home())
    merged: dict[str, str] = {}
    for name in reversed(DOTENV_FILES):
        path = Path(home, name[2:]) if name.startswith("~/") else Path.cwd() / name
        with contextlib.suppress(OSError, UnicodeDecodeError):
            merged.update(parse_dotenv(path.read_text(encoding="utf-8")))
    merged.update(env)
    return merged

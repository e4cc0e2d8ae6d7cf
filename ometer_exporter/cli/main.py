"""Command line: ``serve`` (the default) runs the exporter; ``--config.check`` validates;
``bench`` runs one benchmark cycle in the terminal with OMeter's flags (see ``oneshot``).

Flags follow Prometheus conventions (``--config.file``, ``--web.listen-address``), are never
abbreviated, and a flag of the other command gets a hint saying where it goes (``flags``). Both
commands see the same environment: the real one over the ``.env`` files (``environment``).
Exit codes: 0 ok, 2 bad configuration or usage (``bench`` has its own: ``bench --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from ometer_exporter import __version__
from ometer_exporter.cli.environment import with_dotenv
from ometer_exporter.cli.flags import Elsewhere, Parser
from ometer_exporter.config.checks import ConfigError
from ometer_exporter.config.describe import describe
from ometer_exporter.config.load import load_settings
from ometer_exporter.config.settings import LOG_FORMATS, LOG_LEVELS, Overrides
from ometer_exporter.config.web_file import load_web_config


def _bench_parser() -> argparse.ArgumentParser:
    from ometer_exporter.cli.oneshot.options import build_parser as bench_parser

    return bench_parser()


def build_parser() -> Parser:
    parser = Parser(
        prog="ometer-exporter",
        elsewhere=Elsewhere("ometer-exporter bench", _bench_parser),
        description="Prometheus exporter that continuously benchmarks Ollama models: "
        "time to first token, tokens/s, prefill rate and load time per model.",
        epilog="With no configuration file it benchmarks the models loaded on "
        "http://localhost:11434 (OLLAMA_LOCAL_BASE_URL or OLLAMA_HOST override it; also read "
        "from ./.env, ~/.env, ~/.config/ometer/.env, the real environment winning). "
        "`ometer-exporter bench --help`: one benchmark cycle in the terminal (OMeter mode).",
    )
    parser.add_argument("command", nargs="?", choices=("serve", "bench"), default="serve",
                        help="serve (default): run the exporter; bench: one cycle in the "
                        "terminal (give it first, then its flags)")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"ometer-exporter {__version__}")
    parser.add_argument("--config.file", dest="config_file", metavar="PATH",
                        help="YAML configuration file (env OMETER_CONFIG_FILE)")  # fmt: skip
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration and exit 0, or 2 listing every problem",
    )
    parser.add_argument("--web.listen-address", dest="listen_address", metavar="ADDR",
                        help="address to listen on (default :9877)")  # fmt: skip
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="PATH",
                        help="exporter-toolkit web configuration (TLS, basic auth)")  # fmt: skip
    parser.add_argument("--web.enable-lifecycle", dest="enable_lifecycle", action="store_true",
                        help="allow POST /-/reload (off by default, as in Prometheus; SIGHUP "
                        "always reloads)")  # fmt: skip
    parser.add_argument("--storage.path", dest="storage_path", metavar="DIR",
                        help="directory for stored results (default ./ometer-data)")  # fmt: skip
    parser.add_argument("--log.level", dest="log_level", choices=LOG_LEVELS,
                        help="log level (default info)")  # fmt: skip
    parser.add_argument("--log.format", dest="log_format", choices=LOG_FORMATS,
                        help="log format (default text)")  # fmt: skip
    return parser


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Request lines of the HTTP libraries would drown the exporter's own messages.
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = with_dotenv(os.environ if env is None else env)
    if argv[:1] == ["bench"]:
        from ometer_exporter.cli.oneshot.options import EXIT_INTERRUPTED
        from ometer_exporter.cli.oneshot.run import main as bench

        try:
            return bench(argv[1:], environ)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    parser = build_parser()
    if "bench" not in argv:  # with it, "give bench first" says more than a flag's hint
        parser.misplaced(argv)
    args, extras = parser.parse_known_args(argv)
    if args.command == "bench":
        parser.error("give bench first: ometer-exporter bench [flags] (see bench --help)")
    if extras:
        parser.unknown(extras)
    overrides = Overrides(
        config_file=args.config_file,
        listen_address=args.listen_address,
        storage_path=args.storage_path,
        log_level=args.log_level,
        log_format=args.log_format,
        web_config_file=args.web_config_file,
    )
    try:
        settings = load_settings(overrides, environ)
        load_web_config(settings.web_config_file)
    except ConfigError as exc:
        print(f"ometer-exporter: {exc}", file=sys.stderr)
        return 2
    if args.config_check:
        print(describe(settings))
        return 0
    setup_logging(settings.log_level, settings.log_format)
    from ometer_exporter.web.app import serve

    try:
        asyncio.run(serve(settings, overrides=overrides, env=environ,
                          enable_lifecycle=args.enable_lifecycle))  # fmt: skip
    except OSError as exc:  # e.g. the listen address is taken
        logging.getLogger("ometer_exporter").error("cannot serve: %s", exc)
        return 1
    return 0

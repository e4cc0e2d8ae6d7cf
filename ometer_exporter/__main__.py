"""``python -m ometer_exporter``."""

from __future__ import annotations

from ometer_exporter.cli.main import main

raise SystemExit(main())

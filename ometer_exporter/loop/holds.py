"""Usage-limit holds, per cloud account: a spent Ollama Cloud window stops that account's models.

Ollama Cloud answers a spent session or weekly window with a 429 and no ``Retry-After``; every
further request would be refused. The hold belongs to the account, not to the target that met it:
the cloud models of every target using the same account wait, and the local models of a local
target keep being measured. An account is the API key of a cloud target (hashed, never kept) or,
for a local server's cloud pass-through models, the account that server is signed in with.
"""

from __future__ import annotations

import hashlib
import time
from typing import Final

from ometer_exporter.config.settings import TargetSettings

# No Retry-After comes with the usage-limit 429: its session window is hours long.
USAGE_LIMIT_PAUSE: Final = 3600.0


def account_of(target: TargetSettings) -> str:
    """The cloud account a target's cloud models are billed to."""
    if target.cloud and target.api_key:
        return "key:" + hashlib.sha256(target.api_key.encode()).hexdigest()[:16]
    return "server:" + target.url


class UsageHolds:
    """Shared by every worker of a scheduler: account -> Unix time the hold ends."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def hold(self, account: str, retry_after: float | None) -> float:
        """Hold the account for the window (at least :data:`USAGE_LIMIT_PAUSE`); its end."""
        until = time.time() + max(retry_after or 0.0, USAGE_LIMIT_PAUSE)
        self._until[account] = max(until, self._until.get(account, 0.0))
        return self._until[account]

    def until(self, account: str | None) -> float | None:
        """When the account's hold ends, or None when it is not held (or no account: a local
        model)."""
        if account is None:
            return None
        end = self._until.get(account)
        if end is None or end <= time.time():
            self._until.pop(account, None)
            return None
        return end

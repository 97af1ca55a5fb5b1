"""The one place where this program writes environment variables while it runs: Prefect's own settings.

Prefect reads its settings from the environment once, when it is first imported in a process, so the CLI decides
them before that import — which Prefect server to use (the local one ``local_prefect`` starts) and how loud its
console is. A write after the import would be silently ignored; ``_set`` refuses it instead, so the ordering rule
is enforced rather than remembered.
"""

from __future__ import annotations

import os
import sys


class PrefectAlreadyImported(RuntimeError):
    """A Prefect setting was written after Prefect read its settings: it would have had no effect."""


def quiet_console() -> None:
    """Only our own lines on the terminal: the progress, the final table, each failed subtask's last log lines.
    Prefect's lines (its task-run ERRORs repeat our subtask logs, plus "Finished in state NotReady" per node that
    never ran) still reach its API and UI; ``--verbose`` shows them here too. Values the user set win."""
    _set("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL", keep_existing=True)
    # Prefect's throwaway server logs tracebacks while it drops its event backlog at exit.
    _set("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL", keep_existing=True)


def use_api(url: str) -> None:
    """Flows of this process report to the Prefect server at ``url``."""
    _set("PREFECT_API_URL", url)


def _set(name: str, value: str, *, keep_existing: bool = False) -> None:
    current = os.environ.get(name)
    if current == value or (keep_existing and current is not None):
        return
    if "prefect" in sys.modules:
        raise PrefectAlreadyImported(
            f"{name}={value!r} must be set before Prefect is imported (it was imported "
            f"with {name}={current!r}, which it keeps)"
        )
    os.environ[name] = value

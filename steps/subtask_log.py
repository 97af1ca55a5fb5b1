"""A subtask's log in OCP's logback-like layout, kept in the task store.

Lines are buffered and written in one transaction at the next remote command (so the log shows what is running
while it runs) and with the subtask's final status: one or two store writes per round trip instead of one per
line (a 100-host run wrote 3,200 single-line transactions).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime

from flows.models import format_time, now
from flows.store import TaskStore


def separator(operation: str, when: datetime) -> str:
    """OCP's run separator: ``############{EXECUTE}{2021-09-03T14:20:26.243+08:00}############``."""
    return f"############{{{operation}}}{{{format_time(when)}}}############"


class SubtaskLog:
    def __init__(self, store: TaskStore, subtask_id: int, source: str) -> None:
        self.store, self.subtask_id, self.source = store, subtask_id, source
        self._pending: list[str] = []

    def _write(self, level: str, message: str) -> None:
        stamp = now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        prefix = f"{stamp} {level:>5} {os.getpid()} --- [{threading.current_thread().name}] {self.source} : "
        lines = message.rstrip("\n").split("\n")
        self._pending.append(prefix + lines[0] + "".join(f"\n    {line}" for line in lines[1:]))

    def info(self, message: str) -> None:
        self._write("INFO", message)

    def warning(self, message: str) -> None:
        self._write("WARN", message)

    def error(self, message: str) -> None:
        self._write("ERROR", message)

    def flush(self) -> None:
        """Write the buffered lines now."""
        if self._pending:
            self.store.append_logs(self.subtask_id, self.take())

    def take(self) -> list[str]:
        """The buffered lines, removed from the buffer: for the caller to write with the subtask's final status."""
        lines, self._pending = self._pending, []
        return lines

"""Times and log lines as OCP shows them: ISO-8601 with milliseconds and offset; logback-like subtask lines."""

from __future__ import annotations

import os
import threading
from datetime import datetime


def now() -> datetime:
    """The current local time with its UTC offset, as OCP reports times."""
    return datetime.now().astimezone()


def format_time(value: datetime) -> str:
    """ISO-8601 with milliseconds and offset: ``2021-09-03T14:20:26.243+08:00``."""
    return value.isoformat(timespec="milliseconds")


def separator(operation: str, when: datetime) -> str:
    """OCP's run separator: ``############{EXECUTE}{2021-09-03T14:20:26.243+08:00}############``."""
    return f"############{{{operation}}}{{{format_time(when)}}}############"


def log_line(level: str, source: str, message: str) -> str:
    """``2021-09-03 14:20:26.243  INFO 4242 --- [thread] source : message``; continuation lines indented."""
    stamp = now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    prefix = f"{stamp} {level:>5} {os.getpid()} --- [{threading.current_thread().name}] {source} : "
    lines = message.rstrip("\n").split("\n")
    return prefix + lines[0] + "".join(f"\n    {line}" for line in lines[1:])

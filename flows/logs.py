"""Subtask logs in OCP's logback-like layout, written to the task store in the background.

A 100-host run logs ~3,200 lines. One transaction per line (or per command) was the task store's biggest cost,
so a run has one ``LogWriter``: it writes every subtask's new lines in one transaction every 0.25 s, and a
subtask's last lines go with its final status. Readers (the API, ``status``) see a line at most 0.25 s late; a
crashed process loses at most that much.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from steps.logline import log_line

from .errors import StaleWriteError
from .store import TaskStore

log = logging.getLogger(__name__)

WRITE_INTERVAL = 0.25
_LEVELS = {"INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}


class LogWriter:
    """Buffers log lines of one run's subtasks and writes them to the store in batches. A context manager."""

    def __init__(
        self,
        store: TaskStore,
        interval: float = WRITE_INTERVAL,
        *,
        task_id: int | None = None,
        runner: str | None = None,
    ) -> None:
        """With ``runner``, lines are written only while the task ``task_id`` is that runner's; once it is not,
        they are dropped (a runner that lost its task must not write into the log of whoever took it)."""
        self.store, self.interval, self.task_id, self.runner = store, interval, task_id, runner
        self._pending: list[tuple[int, str]] = []
        self._buffer_lock = threading.Lock()  # guards _pending
        self._write_lock = threading.Lock()  # held while a batch is written: keeps each subtask's lines in order
        self._stop = threading.Event()
        self._failing = False  # the last write failed (the store is down): warned once
        self._thread = threading.Thread(target=self._loop, name="subtask-logs", daemon=True)

    def __enter__(self) -> LogWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()

    def add(self, subtask_id: int, line: str) -> None:
        with self._buffer_lock:
            self._pending.append((subtask_id, line))

    def take(self, subtask_id: int) -> list[str]:
        """The subtask's lines not written yet, removed from the buffer: for the caller to write with its final
        status. Waits for a batch being written, so that these lines come after it."""
        with self._write_lock, self._buffer_lock:
            mine = [line for sid, line in self._pending if sid == subtask_id]
            if mine:
                self._pending = [(sid, line) for sid, line in self._pending if sid != subtask_id]
            return mine

    def flush(self) -> None:
        """Write every buffered line now."""
        with self._write_lock:
            with self._buffer_lock:
                batch, self._pending = self._pending, []
            try:
                self.store.append_logs(batch, task_id=self.task_id, runner=self.runner)
            except StaleWriteError as exc:
                log.warning("dropped %d subtask log line(s): %s", len(batch), exc)
            except Exception as exc:  # keep them for the next attempt; the store's error says what is wrong
                if not self._failing:  # once per outage, not every 0.25 s
                    log.warning("could not write %d subtask log line(s) yet (kept for later): %s", len(batch), exc)
                self._failing = True
                with self._buffer_lock:
                    self._pending = batch + self._pending
            else:
                self._failing = False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


class SubtaskLog:
    """One subtask's log: formats lines and hands them to the run's LogWriter. ``mirror`` (the Prefect task run's
    logger) gets the same messages as one record when the subtask ends (``publish``), so that Prefect's Logs tab
    shows what the subtask log shows: one record per subtask, not one per line (a 1,000-host run has ~32,000
    lines, and Prefect ships its log records one by one to its API before the process may exit)."""

    def __init__(self, writer: LogWriter, subtask_id: int, source: str, mirror: Any = None) -> None:
        self.writer, self.subtask_id, self.source, self.mirror = writer, subtask_id, source, mirror
        self._mirrored: list[str] = []
        self._level = logging.INFO

    def _write(self, level: str, message: str) -> None:
        self.writer.add(self.subtask_id, log_line(level, self.source, message))
        if self.mirror is not None:
            self._mirrored.append(message if level == "INFO" else f"{level}: {message}")
            self._level = max(self._level, _LEVELS[level])

    def publish(self) -> None:
        """Hand the messages so far to ``mirror`` as one record, at the highest level among them."""
        if self.mirror is not None and self._mirrored:
            self.mirror.log(self._level, "\n".join(self._mirrored))
            self._mirrored, self._level = [], logging.INFO

    def info(self, message: str) -> None:
        self._write("INFO", message)

    def warning(self, message: str) -> None:
        self._write("WARN", message)

    def error(self, message: str) -> None:
        self._write("ERROR", message)

    def take(self) -> list[str]:
        """The lines not written yet: for the caller to write with the subtask's final status."""
        return self.writer.take(self.subtask_id)

"""Ansible callback plugin for the benchmark: appends {"event", "name", "t"} JSON lines (epoch seconds) to the
file named by $BENCH_ANSIBLE_TIMES at each play's start and at the end of the run."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_timer
type: aggregate
short_description: play start times for bench/run.py
description: Writes play start times and the end of the run to $BENCH_ANSIBLE_TIMES.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def _mark(self, event: str, name: str = "") -> None:
        path = os.environ.get("BENCH_ANSIBLE_TIMES")
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"event": event, "name": name, "t": time.time()}) + "\n")

    def v2_playbook_on_play_start(self, play) -> None:
        self._mark("play", play.get_name())

    def v2_playbook_on_stats(self, stats) -> None:
        self._mark("end")

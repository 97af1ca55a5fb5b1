"""Run a sandbox by hand: ``python -m deployments.sandbox N [--base-dir DIR] [--stop-seconds S] [--start-seconds S]
[--generation ID=SETTING ...]``.

Prints the inventory path and keeps the hosts up until Ctrl-C / SIGTERM, then stops everything.
"""

from __future__ import annotations

import argparse
import signal
import sys

from .hosts import Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("n_hosts", type=int)
    parser.add_argument("--base-dir")
    parser.add_argument("--first-host-id", type=int, default=1001)
    parser.add_argument("--stop-seconds", type=float, default=0.0)
    parser.add_argument("--start-seconds", type=float, default=0.0)
    parser.add_argument(
        "--generation",
        action="append",
        default=[],
        metavar="ID=SETTING",
        help="a host's agent: 4, 3 (declared in the inventory), auto:4, auto:3 (left to detection; default auto:4)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Sandbox(
        args.n_hosts,
        args.base_dir,
        first_host_id=args.first_host_id,
        stop_seconds=args.stop_seconds,
        start_seconds=args.start_seconds,
        generations={int(k): v for k, _, v in (g.partition("=") for g in args.generation)},
    ) as sb:
        print(f"{len(sb.hosts)} hosts up; inventory: {sb.inventory_path}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The API's routes by resource, in the order the app includes them."""

from . import hosts, probes, restart, tasks

__all__ = ["hosts", "probes", "restart", "tasks"]

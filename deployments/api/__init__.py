"""The OCP-compatible HTTP API (FastAPI): batchRestartAgents, task queries and operations, hosts and their agent,
OCP's probes; HTTP Basic or OCP access-key authentication with OCP's roles.

Every response is OCP's envelope: ``{data?, successful, timestamp, duration, status, traceId, server}``, errors
with ``error{code, message}`` — except OCP's probes, which answer bare as OCP does (``/api/v2/time`` the time as
text, ``/api/v2/info`` an object).

    app.py       create_app: the factory that wires the rest, and the server's lifespan
    state.py     ApiState (settings, store, inventory, users, throttle, launcher) and the dependencies reading it
    security.py  who is asking: HTTP Basic or an access-key signature, the login throttle, roles
    envelope.py  OCP's envelope, error answers, ApiFailure
    params.py    the query and path parameters the routes share
    models.py    wire shapes beyond flows.models
    reaper.py    lapsed leases reaped in the background
    routers/     the routes: restart (batchRestartAgents), tasks, hosts, probes
"""

from .app import create_app
from .envelope import ApiFailure
from .security import current_user, require
from .state import ApiState, get_inventory, get_launcher, get_state, get_store

__all__ = [
    "ApiFailure",
    "ApiState",
    "create_app",
    "current_user",
    "get_inventory",
    "get_launcher",
    "get_state",
    "get_store",
    "require",
]

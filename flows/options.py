"""The options of a restart run: the flow's typed parameters beyond the host ids."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .plan import Kind


class RestartOptions(BaseModel):
    """How to run a batch restart. The defaults give OCP's DAG and timeouts unchanged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_workers: Annotated[int, Field(ge=1, le=256, description="How many subtasks run at once (thread pool size).")] = 32
    timeouts: Annotated[
        dict[Kind, Annotated[int, Field(gt=0, le=86400)]],
        Field(description="Per-stage timeout overrides in seconds, e.g. {'stop_all': 120}. OCP's defaults otherwise."),
    ] = {}
    accept_new_host_keys: Annotated[
        bool,
        Field(description="Trust and record host keys not yet in known_hosts (logged). Changed keys are always refused."),
    ] = False

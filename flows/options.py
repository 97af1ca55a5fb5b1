"""The options of a restart run: the flow's typed parameters beyond the host ids."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from .plan import Kind


class RestartOptions(BaseModel):
    """How to run a batch restart. The defaults give OCP's DAG and timeouts unchanged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_workers: Annotated[
        int, Field(ge=1, le=256, description="How many subtasks run at once (thread pool size).")
    ] = 32
    timeouts: Annotated[
        dict[Kind, Annotated[int, Field(gt=0, le=86400)]],
        Field(description="Per-stage timeout overrides in seconds, e.g. {'stop_all': 120}. OCP's defaults otherwise."),
    ] = {}
    batch_size: Annotated[
        int | None,
        Field(
            ge=1,
            description="Rolling restart: hosts in consecutive batches of this size; a batch starts when the "
            "previous one is done. Off (one batch, OCP's DAG) by default.",
        ),
    ] = None
    max_failed_hosts: Annotated[
        int | None,
        Field(
            ge=0,
            description="Failure threshold: a failed host is isolated and the others go on; the task FAILs "
            "only when more hosts than this fail. Off (any failure stops the stage) by default.",
        ),
    ] = None
    max_failed_percent: Annotated[
        float | None,
        Field(ge=0, le=100, description="Failure threshold as a percentage of the task's hosts (rounded down)."),
    ] = None
    ask_on_failure_seconds: Annotated[
        int | None,
        Field(
            ge=10,
            le=86400,
            description="When the task FAILS, pause the flow run and ask the operator in the "
            "Prefect UI (retry / skip / rollback / stop) for up to this many seconds; "
            "then it stays FAILED. Off by default.",
        ),
    ] = None
    min_free_disk_mb: Annotated[
        int,
        Field(
            ge=0,
            le=1_048_576,
            description="Prepare refuses a host whose agent home's filesystem has less free space (MB) than this, "
            "before anything is stopped.",
        ),
    ] = 64
    min_free_memory_mb: Annotated[
        int,
        Field(
            ge=0,
            le=1_048_576,
            description="Prepare refuses a host with less available memory (MB, MemAvailable) than this, before "
            "anything is stopped.",
        ),
    ] = 64
    accept_new_host_keys: Annotated[
        bool,
        Field(
            description="Trust and record host keys not yet in known_hosts (logged). Changed keys are always refused."
        ),
    ] = False

    @property
    def isolates_failures(self) -> bool:
        return self.max_failed_hosts is not None or self.max_failed_percent is not None

    def failure_threshold(self, n_hosts: int) -> int | None:
        """How many hosts may fail before the task does; None when failures are not isolated."""
        limits = []
        if self.max_failed_hosts is not None:
            limits.append(self.max_failed_hosts)
        if self.max_failed_percent is not None:
            limits.append(int(n_hosts * self.max_failed_percent / 100))
        return min(limits) if limits else None

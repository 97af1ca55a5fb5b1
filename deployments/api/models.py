"""Wire shapes of the API beyond flows.models: hosts, their page, a subtask's log, OCP's ``/api/v2/info``."""

from __future__ import annotations

from pydantic import BaseModel


class ServiceSummary(BaseModel):
    name: str
    version: str | None = None
    type: str
    softwarePackageId: int | None = None


class HostView(BaseModel):
    id: int
    name: str
    innerIpAddress: str
    sshPort: int
    status: str
    hostAgentStatus: str | None
    services: list[ServiceSummary]


class PageModel(BaseModel):
    number: int
    size: int
    totalElements: int
    totalPages: int


class HostPage(BaseModel):
    contents: list[HostView]
    page: PageModel


class SubtaskLog(BaseModel):
    log: str


class Info(BaseModel):
    """OCP's ``/api/v2/info`` (bare, not in the envelope). The Java fields are null: this is not a Java build."""

    name: str
    group: str
    artifact: str
    buildTime: str | None
    buildVersion: str
    buildJavaVersion: str | None = None
    springBootVersion: str | None = None
    server: str


AGENT_SERVICE = ServiceSummary(name="ocp_agent", type="OCP_AGENT")  # the one service of ours a host runs

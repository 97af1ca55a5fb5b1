"""The task store's tables (SQLAlchemy Core) as of the newest revision in ``migrations/versions`` (which create
them; a test checks the two agree). Times are OCP's ISO-8601 strings; id lists are JSON text."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("operation", sa.String(20), nullable=False),
    sa.Column("creator", sa.String(200), nullable=False),
    sa.Column("executor", sa.String(200), nullable=False),
    sa.Column("host_ids", sa.Text, nullable=False),  # JSON list of ints, request order
    sa.Column("prohibit_rollback", sa.Boolean, nullable=False, default=False),
    sa.Column("options", sa.Text, nullable=False, default="{}"),  # JSON: the flow options it was created with
    sa.Column("inventory", sa.Text, nullable=False, default=""),  # the inventory file it was created from
    sa.Column("create_time", sa.String(40), nullable=False),
    sa.Column("start_time", sa.String(40), nullable=False),
    sa.Column("finish_time", sa.String(40)),
    # The lease: the runner (a unique id per run) renews it; once it lapses, any process may reap the task.
    sa.Column("lease_until", sa.Float, nullable=False, default=0.0),
    sa.Column("runner", sa.String(200), nullable=False, default=""),
    # Which of OCP's agent operations (flows/plan.py TEMPLATES); revision 0002, older rows are batch restarts.
    sa.Column("template", sa.String(40), nullable=False, server_default="batch_restart"),
    sqlite_autoincrement=True,
)

subtasks = sa.Table(
    "subtasks",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.BigInteger, sa.ForeignKey("tasks.id"), nullable=False, index=True),
    sa.Column("seq", sa.Integer, nullable=False),  # position in the plan: a topological order
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("host_id", sa.BigInteger),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("class_name", sa.String(300), nullable=False),
    sa.Column("operation", sa.String(20), nullable=False),
    sa.Column("parallel_idx", sa.Integer, nullable=False),
    sa.Column("prohibit_rollback", sa.Boolean, nullable=False),
    sa.Column("run_time", sa.Integer, nullable=False),
    sa.Column("series_id", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("timeout", sa.Integer, nullable=False),
    sa.Column("upstreams", sa.Text, nullable=False, default="[]"),
    sa.Column("downstreams", sa.Text, nullable=False, default="[]"),
    sa.Column("start_time", sa.String(40)),
    sa.Column("finish_time", sa.String(40)),
    sqlite_autoincrement=True,
)

# The task list's host filter (GET /api/v2/tasks/instances?hostId=): tasks that have a subtask on that host.
subtasks_host_index = sa.Index("ix_subtasks_host_id", subtasks.c.host_id)

subtask_logs = sa.Table(
    "subtask_logs",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("subtask_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
)

host_locks = sa.Table(
    "host_locks",
    metadata,
    sa.Column("host_id", sa.BigInteger, primary_key=True),
    sa.Column("task_id", sa.BigInteger, nullable=False),
    sa.Column("acquired", sa.String(40), nullable=False),
)

host_snapshots = sa.Table(
    "host_snapshots",
    metadata,  # the agent's pids before (Prepare) and after (Finish) the restart
    sa.Column("task_id", sa.BigInteger, primary_key=True),
    sa.Column("host_id", sa.BigInteger, primary_key=True),
    sa.Column("phase", sa.String(10), primary_key=True),  # "before" | "after" pids; "starts": start times at Stop
    sa.Column("pids", sa.Text, nullable=False),
)

host_agent_status = sa.Table(
    "host_agent_status",
    metadata,
    sa.Column("host_id", sa.BigInteger, primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),  # OCP's hostAgentStatus: AVAILABLE, OFFLINE, ...
    sa.Column("updated", sa.String(40), nullable=False),
)

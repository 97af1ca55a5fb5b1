"""The schema of ocp-restart 0.1.0, the last made without migrations.

Its six tables and three indexes exactly, as its ``metadata.create_all`` made them. A store made then has these
tables and no version table; it is stamped with this revision. Frozen: written out here rather than read from
``schema.py``, which follows the newest revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _id() -> sa.Column[int]:
    # BIGINT on PostgreSQL (a sequence); SQLite's INTEGER PRIMARY KEY AUTOINCREMENT (ids never reused).
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "tasks",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("operation", sa.String(20), nullable=False),
        sa.Column("creator", sa.String(200), nullable=False),
        sa.Column("executor", sa.String(200), nullable=False),
        sa.Column("host_ids", sa.Text, nullable=False),
        sa.Column("prohibit_rollback", sa.Boolean, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("inventory", sa.Text, nullable=False),
        sa.Column("create_time", sa.String(40), nullable=False),
        sa.Column("start_time", sa.String(40), nullable=False),
        sa.Column("finish_time", sa.String(40)),
        sa.Column("lease_until", sa.Float, nullable=False),
        sa.Column("runner", sa.String(200), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "subtasks",
        _id(),
        sa.Column("task_id", sa.BigInteger, sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
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
        sa.Column("upstreams", sa.Text, nullable=False),
        sa.Column("downstreams", sa.Text, nullable=False),
        sa.Column("start_time", sa.String(40)),
        sa.Column("finish_time", sa.String(40)),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_subtasks_task_id", "subtasks", ["task_id"])
    op.create_index("ix_subtasks_host_id", "subtasks", ["host_id"])  # the task list's host filter
    op.create_table(
        "subtask_logs",
        _id(),
        sa.Column("subtask_id", sa.BigInteger, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_index("ix_subtask_logs_subtask_id", "subtask_logs", ["subtask_id"])
    # A lone integer primary key is a BIGSERIAL on PostgreSQL, as create_all made it (unused: host ids are given).
    op.create_table(
        "host_locks",
        sa.Column("host_id", sa.BigInteger, primary_key=True),
        sa.Column("task_id", sa.BigInteger, nullable=False),
        sa.Column("acquired", sa.String(40), nullable=False),
    )
    op.create_table(
        "host_snapshots",
        sa.Column("task_id", sa.BigInteger, primary_key=True),
        sa.Column("host_id", sa.BigInteger, primary_key=True),
        sa.Column("phase", sa.String(10), primary_key=True),
        sa.Column("pids", sa.Text, nullable=False),
    )
    op.create_table(
        "host_agent_status",
        sa.Column("host_id", sa.BigInteger, primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("updated", sa.String(40), nullable=False),
    )


def downgrade() -> None:
    for table in ("host_agent_status", "host_snapshots", "host_locks", "subtask_logs", "subtasks", "tasks"):
        op.drop_table(table)

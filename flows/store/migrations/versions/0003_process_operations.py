"""Per-process operations (restart or stop of one agent process): who, when, outcome, the command's output.

While one runs, it holds its host in ``host_locks`` as a task does, with ``task_id`` = minus its id (task ids are
positive), so a task and a process operation exclude each other through the same primary key.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "process_operations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("host_id", sa.BigInteger, nullable=False),
        sa.Column("alias", sa.String(40), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("creator", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("start_time", sa.String(40), nullable=False),
        sa.Column("finish_time", sa.String(40)),
        sa.Column("lease_until", sa.Float, nullable=False),
        sa.Column("pid_before", sa.BigInteger),
        sa.Column("pid_after", sa.BigInteger),
        sa.Column("output", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_process_operations_host_id", "process_operations", ["host_id"])


def downgrade() -> None:
    op.drop_index("ix_process_operations_host_id", "process_operations")
    op.drop_table("process_operations")

"""Each task records its template (flows/plan.py TEMPLATES): which of OCP's agent operations it is.

Tasks recorded before this revision were all batch restarts, the only operation then: they get "batch_restart".
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    # ALTER TABLE ADD COLUMN on both SQLite and PostgreSQL: existing rows take the server default.
    op.add_column("tasks", sa.Column("template", sa.String(40), nullable=False, server_default="batch_restart"))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("template")

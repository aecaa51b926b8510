"""job.dispatch_count: how many task messages were sent since the job was last queued

The reconciler backs off exponentially on re-sends; existing rows start at 0.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 18:19:18.033997
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dispatch_count", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("dispatch_count")

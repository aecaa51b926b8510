"""job.latest_metrics: the latest finished epoch's metrics, written with the progress;
an index on (tenant, status)

A job's poll then reads one row instead of also searching its metrics table; existing
rows start empty and show their latest epoch from the next write on. The index makes the
queued-jobs quota, counted at every submit, independent of the tenant's history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latest_metrics", sa.JSON(), nullable=True))
        batch_op.create_index("ix_job_tenant_status", ["tenant", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_tenant_status")
        batch_op.drop_column("latest_metrics")

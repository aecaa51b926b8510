"""ix_job_waiting: the queued jobs that wait without a task message

Every job's end looks for its tenant's oldest queued job without a task message (held back
by the running-jobs limit) to send it. Through ix_job_tenant_status that read every queued
job of the tenant (0.3 ms at 1,000 queued on PostgreSQL); the partial index holds only the
waiting ones, which are few.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "status = 'queued' AND dispatched_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_job_waiting",
        "job",
        ["tenant", "created_at"],
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_job_waiting", table_name="job")

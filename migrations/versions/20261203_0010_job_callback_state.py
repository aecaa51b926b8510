"""job.callback_state, job.callback_at, sweep.callback_at: a job's callback kept on its row

A job's callback is "waiting" from submit (with a callback_url) until it is queued after
the job ended, then "delivered" or "failed", as a sweep's is (store/callbacks.py); the
reconciler queues one a crash or the broker left waiting. callback_at is when it was last
queued or attempted. Queued and running jobs with a callback_url start waiting; ended ones
are taken as settled, and a sweep's callback_at starts from its updated_at.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("callback_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_job_callback_state", ["callback_state"])
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_at", sa.DateTime(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        has_url = "json_typeof(spec -> 'callback_url') = 'string'"
    else:
        has_url = "json_extract(spec, '$.callback_url') IS NOT NULL"
    op.execute(
        "UPDATE job SET callback_state = 'waiting' "
        f"WHERE status IN ('queued', 'running') AND {has_url}"
    )
    op.execute("UPDATE sweep SET callback_at = updated_at WHERE callback_state IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.drop_column("callback_at")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_callback_state")
        batch_op.drop_column("callback_at")
        batch_op.drop_column("callback_state")

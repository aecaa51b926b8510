"""sweep.callback_state and sweep.callbacks: a sweep's own callback, when it ends

callback_state is "waiting" from submit until the sweep ends, "queued" once its delivery
was queued (the reconciler queues the ones a crash left waiting), then "delivered" or
"failed"; callbacks lists the delivery attempts. Existing sweeps have no callback.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 08:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.add_column(sa.Column("callback_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("callbacks", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.drop_column("callbacks")
        batch_op.drop_column("callback_state")

"""epoch_metric.learning_rate: the rate of an epoch's last step, after its schedule

Rows of epochs trained before it was kept have none (NULL).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("epoch_metric", schema=None) as batch_op:
        batch_op.add_column(sa.Column("learning_rate", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("epoch_metric", schema=None) as batch_op:
        batch_op.drop_column("learning_rate")

"""sweep_dataset: the data sets a sweep searches (data.dataset_id), kept while it runs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep_dataset",
        sa.Column("sweep_id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"]),
        sa.ForeignKeyConstraint(["sweep_id"], ["sweep.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sweep_id", "dataset_id"),
    )
    op.create_index(op.f("ix_sweep_dataset_dataset_id"), "sweep_dataset", ["dataset_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sweep_dataset_dataset_id"), table_name="sweep_dataset")
    op.drop_table("sweep_dataset")

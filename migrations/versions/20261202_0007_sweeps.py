"""sweep: hyperparameter searches; a job may be a sweep's trial

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 16:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("released", sa.Integer(), nullable=False),
        sa.Column("best_job_id", sa.String(length=36), nullable=True),
        sa.Column("dataset_id", sa.String(length=36), nullable=True),
        sa.Column("val_dataset_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"]),
        sa.ForeignKeyConstraint(["val_dataset_id"], ["dataset.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sweep_tenant_created", "sweep", ["tenant", "created_at", "id"])
    op.create_index(op.f("ix_sweep_dataset_id"), "sweep", ["dataset_id"])
    op.create_index(op.f("ix_sweep_val_dataset_id"), "sweep", ["val_dataset_id"])
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("trial", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rungs", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("stopped_early", sa.Boolean(), server_default="0", nullable=False)
        )
        batch.create_foreign_key("fk_job_sweep_id_sweep", "sweep", ["sweep_id"], ["id"])
        batch.create_index("ix_job_sweep_trial", ["sweep_id", "trial"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_index("ix_job_sweep_trial")
        batch.drop_constraint("fk_job_sweep_id_sweep", type_="foreignkey")
        for column in ("stopped_early", "rungs", "params", "trial", "sweep_id"):
            batch.drop_column(column)
    op.drop_index(op.f("ix_sweep_val_dataset_id"), table_name="sweep")
    op.drop_index(op.f("ix_sweep_dataset_id"), table_name="sweep")
    op.drop_index("ix_sweep_tenant_created", table_name="sweep")
    op.drop_table("sweep")

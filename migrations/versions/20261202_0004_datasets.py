"""datasets: a tenant's stored data sets (metadata and raw chunks), and the jobs that train
on them (job.dataset_id, job.val_dataset_id)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dataset",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dataset_tenant_sha256", "dataset", ["tenant", "sha256"], unique=True)
    op.create_index(
        "ix_dataset_tenant_created", "dataset", ["tenant", "created_at", "id"], unique=False
    )
    op.create_table(
        "dataset_chunk",
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("member", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dataset_id", "member", "seq"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # chunks are arrays of floats: pglz compression gains little on them and costs most
        # of an upload's time (about 30 MB/s instead of 100); keep them out of line, raw
        op.execute("ALTER TABLE dataset_chunk ALTER COLUMN data SET STORAGE EXTERNAL")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("val_dataset_id", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_job_dataset_id", ["dataset_id"], unique=False)
        batch_op.create_index("ix_job_val_dataset_id", ["val_dataset_id"], unique=False)
        batch_op.create_foreign_key("fk_job_dataset_id", "dataset", ["dataset_id"], ["id"])
        batch_op.create_foreign_key("fk_job_val_dataset_id", "dataset", ["val_dataset_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_constraint("fk_job_val_dataset_id", type_="foreignkey")
        batch_op.drop_constraint("fk_job_dataset_id", type_="foreignkey")
        batch_op.drop_index("ix_job_val_dataset_id")
        batch_op.drop_index("ix_job_dataset_id")
        batch_op.drop_column("val_dataset_id")
        batch_op.drop_column("dataset_id")
    op.drop_table("dataset_chunk")
    op.drop_index("ix_dataset_tenant_created", table_name="dataset")
    op.drop_index("ix_dataset_tenant_sha256", table_name="dataset")
    op.drop_table("dataset")

"""tenant_usage: what each tenant's jobs store, kept by triggers on blob

A submit's storage quota summed the sizes of every blob of the tenant's jobs, a join that
grew with the tenant's history (2 ms at 1,000 jobs, 4 ms at 2,000 on PostgreSQL, on every
submit). The sum is now one row per tenant, which the database keeps: blob gains the
tenant (filled in from its job when an insert leaves it out, and from the jobs for the
blobs there are), and triggers add each blob's size when it is written, the change when
it grows, and subtract it when it is deleted, however that happens (a statement of the
service's or a cascade).

On PostgreSQL the counting trigger is a constraint trigger deferred to the commit: the
tenant's row is locked only while a transaction commits, after every other lock the
transaction takes, so two writers of one tenant never wait on each other in a cycle. On
SQLite, whose writers take turns on the whole database, the triggers run at once.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 17:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRESQL = [
    """
CREATE FUNCTION blob_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.tenant IS NULL THEN
    SELECT tenant INTO NEW.tenant FROM job WHERE id = NEW.job_id;
  END IF;
  RETURN NEW;
END $$
""",
    """
CREATE TRIGGER blob_tenant BEFORE INSERT ON blob
FOR EACH ROW EXECUTE FUNCTION blob_tenant()
""",
    """
CREATE FUNCTION tenant_job_bytes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  who text;
  change bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    who := NEW.tenant; change := NEW.size;
  ELSIF TG_OP = 'DELETE' THEN
    who := OLD.tenant; change := -OLD.size;
  ELSE
    who := NEW.tenant; change := NEW.size - OLD.size;
  END IF;
  IF who IS NOT NULL AND change <> 0 THEN
    INSERT INTO tenant_usage AS usage (tenant, job_bytes) VALUES (who, change)
    ON CONFLICT (tenant) DO UPDATE SET job_bytes = usage.job_bytes + excluded.job_bytes;
  END IF;
  RETURN NULL;
END $$
""",
    """
CREATE CONSTRAINT TRIGGER tenant_job_bytes AFTER INSERT OR DELETE OR UPDATE OF size ON blob
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tenant_job_bytes()
""",
]

SQLITE = [
    """
CREATE TRIGGER tenant_job_bytes_insert AFTER INSERT ON blob
BEGIN
  UPDATE blob SET tenant = (SELECT tenant FROM job WHERE id = NEW.job_id)
  WHERE id = NEW.id AND tenant IS NULL;
  INSERT INTO tenant_usage (tenant, job_bytes)
  SELECT tenant, size FROM blob WHERE id = NEW.id AND tenant IS NOT NULL
  ON CONFLICT (tenant) DO UPDATE SET job_bytes = job_bytes + excluded.job_bytes;
END
""",
    """
CREATE TRIGGER tenant_job_bytes_update AFTER UPDATE OF size ON blob
WHEN NEW.tenant IS NOT NULL AND NEW.size <> OLD.size
BEGIN
  UPDATE tenant_usage SET job_bytes = job_bytes + NEW.size - OLD.size
  WHERE tenant = NEW.tenant;
END
""",
    """
CREATE TRIGGER tenant_job_bytes_delete AFTER DELETE ON blob
WHEN OLD.tenant IS NOT NULL
BEGIN
  UPDATE tenant_usage SET job_bytes = job_bytes - OLD.size WHERE tenant = OLD.tenant;
END
""",
]


def upgrade() -> None:
    op.create_table(
        "tenant_usage",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("job_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    with op.batch_alter_table("blob", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tenant", sa.String(length=64), nullable=True))
    op.execute("UPDATE blob SET tenant = (SELECT tenant FROM job WHERE job.id = blob.job_id)")
    op.execute(
        "INSERT INTO tenant_usage (tenant, job_bytes) "
        "SELECT tenant, sum(size) FROM blob WHERE tenant IS NOT NULL GROUP BY tenant"
    )
    for statement in POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER tenant_job_bytes ON blob")
        op.execute("DROP FUNCTION tenant_job_bytes()")
        op.execute("DROP TRIGGER blob_tenant ON blob")
        op.execute("DROP FUNCTION blob_tenant()")
    else:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER tenant_job_bytes_{name}")
    with op.batch_alter_table("blob", schema=None) as batch_op:
        batch_op.drop_column("tenant")
    op.drop_table("tenant_usage")

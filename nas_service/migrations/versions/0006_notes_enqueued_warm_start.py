"""Working with results: Markdown notes on jobs and candidates, blocks added by hand, warm
starts.

`enqueued` holds the specs a person added to a job (`POST /jobs/{id}/candidates`) until its
runner trains them next: the runner, not the API, gives them a birth, so the designer's
births stay the consecutive ones it replays from. `jobs.warm_start` holds the specs a warm
start took from earlier jobs, resolved once when the job was submitted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("warm_start", sa.JSON(), nullable=True))
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
    op.create_table(
        "enqueued",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("candidate_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidates.id"], ondelete="SET NULL"),
        sa.UniqueConstraint("job_id", "spec_hash", name="uq_enqueued_job_spec"),
    )
    op.create_index("ix_enqueued_job_candidate", "enqueued", ["job_id", "candidate_id"])


def downgrade() -> None:
    op.drop_index("ix_enqueued_job_candidate", table_name="enqueued")
    op.drop_table("enqueued")
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("note")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("warm_start")
        batch.drop_column("note")

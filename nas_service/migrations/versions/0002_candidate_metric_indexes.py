"""Indexes for the API's common sorts: perplexity, step time and finishing order per job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_candidates_job_perplexity": ["job_id", "perplexity"],
    "ix_candidates_job_step_time": ["job_id", "step_time_ms"],
    "ix_candidates_job_finished": ["job_id", "finished_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "candidates", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="candidates")

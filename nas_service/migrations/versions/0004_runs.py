"""Runs: several evaluations of one candidate (rung of the fidelity ladder, seed, attempt).

A candidate's own row stays its rung-0 run with the job's seed, so every result stored
before this revision is kept as it was; the new `runs` table holds the other evaluations
(higher rungs, the baseline's noise seeds, confirmation), and `candidates.rung` the highest
rung a candidate was promoted to (0 for every existing row).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RESULT_COLUMNS = (
    ("reason", sa.Text()),
    ("traceback", sa.Text()),
    ("val_loss", sa.Float()),
    ("val_loss_inference", sa.Float()),
    ("perplexity", sa.Float()),
    ("bits_per_byte", sa.Float()),
    ("steps", sa.Integer()),
    ("tokens", sa.BigInteger()),
    ("train_s", sa.Float()),
    ("compile_s", sa.Float()),
    ("data_s", sa.Float()),
    ("eval_s", sa.Float()),
    ("reference_s", sa.Float()),
    ("step_time_ms", sa.Float()),
    ("step_time_p90_ms", sa.Float()),
    ("reference_step_time_ms", sa.Float()),
    ("step_time_ratio", sa.Float()),
    ("tokens_per_s", sa.Float()),
    ("params_total", sa.BigInteger()),
    ("params_activated", sa.BigInteger()),
    ("flops_per_token", sa.BigInteger()),
    ("mfu", sa.Float()),
    ("moe", sa.JSON()),
    ("device", sa.JSON()),
    ("smoothed_loss_at", sa.JSON()),
    ("val_loss_at", sa.JSON()),
    ("curve", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("rung", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "candidate_id",
            sa.Integer(),
            sa.ForeignKey("candidates.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("budget", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(64)),
        sa.Column("slot", sa.Integer()),
        sa.Column("device_kind", sa.String(200)),
        *(sa.Column(name, kind, nullable=True) for name, kind in RESULT_COLUMNS),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("candidate_id", "stage", "rung", "seed", name="uq_runs_key"),
    )
    op.create_index("ix_runs_candidate_id", "runs", ["candidate_id"])
    op.create_index("ix_runs_job_stage_rung", "runs", ["job_id", "stage", "rung"])


def downgrade() -> None:
    op.drop_index("ix_runs_job_stage_rung", table_name="runs")
    op.drop_index("ix_runs_candidate_id", table_name="runs")
    op.drop_table("runs")
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("rung")

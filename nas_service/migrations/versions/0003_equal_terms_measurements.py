"""Measurements on equal terms: the step-time ratio to the baseline timed on the same slot,
the device kind, validation loss at fractions of the budget and with inference routing.

Rows trained before this revision have no same-slot reference: their ratio is their step
time over their job's baseline's (the comparison those jobs made), and their device kind is
read from their fingerprint.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = {
    "device_kind": sa.String(200),
    "val_loss_inference": sa.Float(),
    "reference_s": sa.Float(),
    "reference_step_time_ms": sa.Float(),
    "step_time_ratio": sa.Float(),
    "val_loss_at": sa.JSON(),
}


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        for name, kind in COLUMNS.items():
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_index(
        "ix_candidates_job_step_time_ratio", "candidates", ["job_id", "step_time_ratio"]
    )
    candidates = sa.table(
        "candidates",
        sa.column("id", sa.Integer),
        sa.column("job_id", sa.Integer),
        sa.column("is_baseline", sa.Boolean),
        sa.column("step_time_ms", sa.Float),
        sa.column("step_time_ratio", sa.Float),
        sa.column("device", sa.JSON),
        sa.column("device_kind", sa.String),
    )
    base = candidates.alias("base")
    reference = (
        sa.select(base.c.step_time_ms)
        .where(base.c.job_id == candidates.c.job_id, base.c.is_baseline.is_(True))
        .limit(1)
        .scalar_subquery()
    )
    op.execute(
        candidates.update()
        .where(candidates.c.step_time_ms.is_not(None))
        .values(step_time_ratio=candidates.c.step_time_ms / reference)
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(candidates.c.id, candidates.c.device).where(candidates.c.device.is_not(None))
    ).all()
    for row_id, device in rows:
        kind = _device_kind(device)
        if kind:
            connection.execute(
                candidates.update().where(candidates.c.id == row_id).values(device_kind=kind)
            )


def _device_kind(device: dict | None) -> str | None:
    # A copy of nas_service.measurements.device_kind as of this revision (migrations are frozen).
    if not device or not device.get("platform"):
        return None
    kind = device.get("device_kind") or ""
    if device["platform"] == "cpu":
        kind = device.get("host_cpu") or kind
    return f"{device['platform']}:{kind}"[:200]


def downgrade() -> None:
    op.drop_index("ix_candidates_job_step_time_ratio", table_name="candidates")
    with op.batch_alter_table("candidates") as batch:
        for name in COLUMNS:
            batch.drop_column(name)

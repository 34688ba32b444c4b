"""Precision: the matmul precision of each trial and run (float32, or bfloat16 with float32
parameters). Every trial before this revision trained in float32, so rows that trained
(steps recorded) say so.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("candidates", "runs")


def upgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name) as batch:
            batch.add_column(sa.Column("precision", sa.String(16), nullable=True))
        table = sa.table(
            name,
            sa.column("precision", sa.String),
            sa.column("steps", sa.Integer),
        )
        op.execute(table.update().where(table.c.steps.is_not(None)).values(precision="float32"))


def downgrade() -> None:
    for name in TABLES:
        with op.batch_alter_table(name) as batch:
            batch.drop_column("precision")

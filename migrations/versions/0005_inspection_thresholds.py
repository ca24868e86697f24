"""inspections.thresholds and inspections.candidate_words: every stored verdict explains itself

``thresholds`` = ``{warn, reject, source, region, region_source}`` (the pair that decided, where it
came from: ``setting`` / ``calibrated:<prompt version>`` / ``global``, and the region threshold);
``candidate_words`` = the product's defect words in that prompt version. Rows written before this
revision keep NULL in both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on both dialects (no table copy on SQLite; on Postgres
    # the partitioned parent passes it to every day partition).
    op.add_column("inspections", sa.Column("thresholds", sa.JSON(), nullable=True))
    op.add_column("inspections", sa.Column("candidate_words", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("inspections", "candidate_words")
    op.drop_column("inspections", "thresholds")

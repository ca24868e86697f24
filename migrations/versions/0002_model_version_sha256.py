"""model_versions.sha256: the digest of a prompt version's files, recorded at registration

Workers swap only to a registered version whose files still hash to this value. Rows that exist
before this revision get NULL, which workers treat as "not verifiable": the registry fills it from
the files the next time it syncs with disk (``qc-stream models list`` / ``activate``, a refresh).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("sha256")

"""Review station: retained_frames (frame store pointers), reviews (append-only decisions), users,
defect_proposals

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "retained_frames",
        sa.Column("frame_id", sa.String(128), nullable=False),
        sa.Column("captured_at", TS, nullable=False),
        sa.Column("stored_at", TS, nullable=False),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("overlay_path", sa.String(512), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("frame_id", name="pk_retained_frames"),
    )
    op.create_index("ix_retained_frames_stored_at", "retained_frames", ["stored_at"])
    op.create_table(
        "reviews",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("frame_id", sa.String(128), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("reviewed_at", TS, nullable=False),
        sa.Column("line_id", sa.String(128), nullable=False),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("original_verdict", sa.String(8), nullable=False),
        sa.Column("original_type", sa.String(64), nullable=True),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("defect_type", sa.String(64), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("agrees", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
    )
    op.create_index("ix_reviews_frame_id", "reviews", ["frame_id", "id"])
    op.create_index("ix_reviews_reviewed_at", "reviews", ["reviewed_at"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "defect_proposals",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.Column("proposed_by", sa.String(64), nullable=False),
        sa.Column("proposed_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_defect_proposals"),
        sa.UniqueConstraint("product", "name_key", name="uq_defect_proposals_product_name_key"),
    )


def downgrade() -> None:
    op.drop_table("defect_proposals")
    op.drop_table("users")
    op.drop_index("ix_reviews_reviewed_at", table_name="reviews")
    op.drop_index("ix_reviews_frame_id", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_retained_frames_stored_at", table_name="retained_frames")
    op.drop_table("retained_frames")

"""initial schema: defect_types, model_versions, inspections, defect_counts

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "defect_types",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("root_cause", sa.Text(), nullable=True),
        sa.Column("corrective_action", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("retired_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_defect_types"),
        sa.UniqueConstraint("product", "name_key", name="uq_defect_types_product_name_key"),
    )
    op.create_table(
        "model_versions",
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("backbone", sa.String(256), nullable=False),
        sa.Column("vocabulary", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parent_version", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("prompt_version", name="pk_model_versions"),
    )
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("frame_id", sa.String(128), nullable=False),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("line_id", sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("captured_at", TS, nullable=False),
        sa.Column("processed_at", TS, nullable=False),
        sa.Column("verdict", sa.String(8), nullable=False),
        sa.Column("anomaly_score", sa.Float(), nullable=False),
        sa.Column("defect_type", sa.String(64), nullable=True),
        sa.Column("defect_probs", sa.JSON(), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(256), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inspections"),
        sa.UniqueConstraint("frame_id", name="uq_inspections_frame_id"),
    )
    op.create_index("ix_inspections_processed_at", "inspections", ["processed_at"])
    op.create_index(
        "ix_inspections_line_product_processed",
        "inspections",
        ["line_id", "product", "processed_at"],
    )
    op.create_index("ix_inspections_camera_processed", "inspections", ["camera_id", "processed_at"])
    op.create_table(
        "defect_counts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("bucket_start", TS, nullable=False),
        sa.Column("line_id", sa.String(128), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("defect_type", sa.String(64), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("warn", sa.Integer(), nullable=False),
        sa.Column("reject", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_defect_counts"),
        sa.UniqueConstraint(
            "bucket_start",
            "line_id",
            "product",
            "defect_type",
            name="uq_defect_counts_bucket_start_line_id_product_defect_type",
        ),
    )


def downgrade() -> None:
    op.drop_table("defect_counts")
    op.drop_index("ix_inspections_camera_processed", table_name="inspections")
    op.drop_index("ix_inspections_line_product_processed", table_name="inspections")
    op.drop_index("ix_inspections_processed_at", table_name="inspections")
    op.drop_table("inspections")
    op.drop_table("model_versions")
    op.drop_table("defect_types")

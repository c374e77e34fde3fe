"""Prediction records and lab results.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("model", sa.String(253), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("predicted_ppb", sa.Float(), nullable=False),
        sa.Column("spectrum_sha256", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("caller", sa.String(200)),
        sa.Column("sample_id", sa.String(200)),
        sa.Column("outlier_score", sa.Float()),
        sa.Column("out_of_distribution", sa.Boolean()),
        sa.Column("spectrum", sa.JSON()),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("model", "version", "request_id", "row", name="uq_predictions_request_row"),
    )
    op.create_index("ix_predictions_sample_id", "predictions", ["sample_id"])
    op.create_index("ix_predictions_time", "predictions", ["time"])
    op.create_table(
        "lab_results",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(200), nullable=False),
        sa.Column("vomitoxin_ppb", sa.Float(), nullable=False),
        sa.Column("method", sa.String(100), nullable=False),
        sa.Column("measured_at", sa.DateTime(), nullable=False),
        sa.Column("imported_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("sample_id", "method", "measured_at", name="uq_lab_results_measurement"),
    )
    op.create_index("ix_lab_results_sample_id", "lab_results", ["sample_id"])


def downgrade() -> None:
    op.drop_table("lab_results")
    op.drop_table("predictions")

"""predictions.shadow: true for a shadow's answer to a mirrored copy of a request.

Rows from before the column existed were all served answers, hence the server default false. And
an index on (request_id, row), which pairs a served answer with its shadow's.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Pairing a served answer with its shadow's joins on the request (ops/recorder/pairs.py).
    op.create_index("ix_predictions_request_row", "predictions", ["request_id", "row"])


def downgrade() -> None:
    op.drop_index("ix_predictions_request_row", "predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("shadow")

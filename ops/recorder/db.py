"""The recorder's database: SQLAlchemy tables, Alembic migrations, inserts, retention.

PostgreSQL in a cluster, SQLite as the embedded default. Times are stored as naive UTC. The
schema is owned by the Alembic migrations in `migrations/` (the tables below mirror them; a test
checks that a migrated database matches these definitions). The `predictions` columns are the
prediction record's fields (don_core.records), plus an id and the time of arrival.
"""
from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from don_core.records import FIELD_TYPES, RECORD_FIELDS, REQUIRED_FIELDS, TEXT_LIMITS

DEFAULT_URL = "sqlite:///don-recorder.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
HEAD = "0002"  # the newest migration (a test checks it is Alembic's head)

metadata = sa.MetaData()

_SQL_TYPES = {int: sa.Integer, float: sa.Float, bool: sa.Boolean, list: sa.JSON}


def _record_column(name: str) -> sa.Column:
    """A prediction record field's column (don_core.records): text as wide as its limit, the
    record's RFC 3339 time as a DateTime, NOT NULL where the record requires the field."""
    kind = FIELD_TYPES[name]
    if name == "time":
        type_ = sa.DateTime()
    elif kind is str:
        type_ = sa.String(TEXT_LIMITS[name])
    else:
        type_ = _SQL_TYPES[kind]()
    if name == "shadow":
        # A shadow's answer to a mirrored copy (never returned to the caller): kept apart from
        # what was served (migration 0002); a record without the field is a served answer.
        return sa.Column(name, type_, nullable=False, server_default=sa.false())
    return sa.Column(name, type_, nullable=name not in REQUIRED_FIELDS)


predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    *(_record_column(name) for name in RECORD_FIELDS),
    sa.Column("received_at", sa.DateTime(), nullable=False),
    # A retried event (CloudEvents delivery is at-least-once) must not count twice.
    sa.UniqueConstraint("model", "version", "request_id", "row", name="uq_predictions_request_row"),
    sa.Index("ix_predictions_sample_id", "sample_id"),
    sa.Index("ix_predictions_time", "time"),
    sa.Index("ix_predictions_request_row", "request_id", "row"),
)

# The longest text of a lab result (its columns' widths; labresults checks imports against them).
LAB_TEXT_LIMITS = {"sample_id": TEXT_LIMITS["sample_id"], "method": 100}

lab_results = sa.Table(
    "lab_results", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("sample_id", sa.String(LAB_TEXT_LIMITS["sample_id"]), nullable=False),
    sa.Column("vomitoxin_ppb", sa.Float(), nullable=False),
    sa.Column("method", sa.String(LAB_TEXT_LIMITS["method"]), nullable=False),
    sa.Column("measured_at", sa.DateTime(), nullable=False),
    sa.Column("imported_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("sample_id", "method", "measured_at", name="uq_lab_results_measurement"),
    sa.Index("ix_lab_results_sample_id", "sample_id"),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def create_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        # One file shared by the HTTP threads and the retention job; WAL lets readers run beside
        # the writer, busy_timeout makes writers wait for each other instead of failing.
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record):
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic (idempotent; safe from several replicas on
    PostgreSQL, which runs each migration in a transaction)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _insert_new(engine: sa.Engine, table: sa.Table, rows: list[dict]) -> int:
    """Insert rows, ignoring those already there (the table's unique constraint); returns how
    many were new."""
    if not rows:
        return 0
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with engine.begin() as conn:
        result = conn.execute(dialect.insert(table).on_conflict_do_nothing().returning(table.c.id), rows)
        return len(result.all())


def insert_predictions(engine: sa.Engine, rows: list[dict]) -> int:
    """Insert validated prediction rows; returns how many were new (duplicates are ignored)."""
    return _insert_new(engine, predictions, rows)


def insert_lab_results(engine: sa.Engine, rows: list[dict]) -> int:
    return _insert_new(engine, lab_results, rows)


@dataclass(frozen=True)
class Limits:
    retention_days: float = 90.0
    max_rows: int = 10_000_000  # per table


def enforce_limits(engine: sa.Engine, limits: Limits, now: dt.datetime | None = None) -> dict[str, int]:
    """Delete what is older than the retention period, then the oldest rows beyond max_rows.
    Returns the deleted counts by reason."""
    cutoff = (now or utcnow()) - dt.timedelta(days=limits.retention_days)
    deleted = {"retention": 0, "size": 0}
    with engine.begin() as conn:
        for table, column in ((predictions, predictions.c.time), (lab_results, lab_results.c.measured_at)):
            deleted["retention"] += conn.execute(sa.delete(table).where(column < cutoff)).rowcount
            # Ids grow with arrival: everything at or below the (max_rows+1)-th newest id goes.
            edge = conn.execute(sa.select(table.c.id).order_by(table.c.id.desc())
                                .offset(limits.max_rows).limit(1)).scalar()
            if edge is not None:
                deleted["size"] += conn.execute(sa.delete(table).where(table.c.id <= edge)).rowcount
    return deleted


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


class RetentionJob:
    """Runs enforce_limits every `interval` seconds in a daemon thread."""

    def __init__(self, engine: sa.Engine, limits: Limits, interval: float, on_result=None, on_error=None):
        self.engine, self.limits, self.interval = engine, limits, interval
        self.on_result, self.on_error = on_result, on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                result = enforce_limits(self.engine, self.limits)
                if self.on_result:
                    self.on_result(result)
            except sa.exc.SQLAlchemyError as exc:  # database away: try again next round
                if self.on_error:
                    self.on_error(exc)
            if self._stop.wait(self.interval):
                return

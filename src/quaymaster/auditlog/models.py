"""The action log table (Quay's LogEntry3 shape: plain ids, no foreign keys, so logs outlive rows)."""

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from quaymaster.db.base import Base, utcnow


class LogEntry(Base):
    __tablename__ = "logentry"
    __table_args__ = (
        Index("ix_logentry_account_id_datetime", "account_id", "datetime"),
        Index("ix_logentry_performer_id_datetime", "performer_id", "datetime"),
        Index("ix_logentry_repository_id_datetime_kind", "repository_id", "datetime", "kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    performer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    repository_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    datetime: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metadata_json: Mapped[dict] = mapped_column(JSON, default=dict)

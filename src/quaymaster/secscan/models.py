"""Tables of the secscan domain: one index status per manifest, and digests whose index reports
the scanner should forget."""

from datetime import datetime
from enum import IntEnum

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from quaymaster.db.base import Base, utcnow


class IndexStatus(IntEnum):
    """Quay's values, so a status reads the same in both."""

    SCAN_RETRIES_EXHAUSTED = -4
    MANIFEST_LAYER_TOO_LARGE = -3
    MANIFEST_UNSUPPORTED = -2
    FAILED = -1
    IN_PROGRESS = 1
    COMPLETED = 2


class ManifestSecurityStatus(Base):
    """How far the scanner got with one manifest. Vulnerabilities are not stored: they are asked
    of the scanner when someone looks, as Quay does, so they follow feed updates for free."""

    __tablename__ = "manifestsecuritystatus"
    __table_args__ = (
        Index("ix_manifestsecuritystatus_index_status_last_indexed", "index_status", "last_indexed"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # CASCADE: garbage collection deletes manifests and repositories without knowing this table.
    manifest_id: Mapped[int] = mapped_column(ForeignKey("manifest.id", ondelete="CASCADE"), unique=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id", ondelete="CASCADE"), index=True)
    index_status: Mapped[int] = mapped_column(Integer)
    error_json: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    last_indexed: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    indexer_hash: Mapped[str] = mapped_column(String(128), default="")
    indexer_version: Mapped[int] = mapped_column(Integer, default=4)
    metadata_json: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class SecscanIndexDeletion(Base):
    """A manifest digest garbage collection removed; the worker asks the scanner to delete its
    index report (SECURITY_SCANNER_V4_MANIFEST_CLEANUP) once no repository holds the digest."""

    __tablename__ = "secscanindexdeletion"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(255), index=True)
    queued: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

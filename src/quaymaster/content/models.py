"""Tables of the content domain, in Quay's shape: blobs are global, links make them per-repository."""

from datetime import datetime
from enum import IntEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from quaymaster.db.base import Base, utcnow


class RepositoryState(IntEnum):
    NORMAL = 0
    READ_ONLY = 1
    MIRROR = 2
    MARKED_FOR_DELETION = 3


class Repository(Base):
    __tablename__ = "repository"
    __table_args__ = (UniqueConstraint("namespace_user_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(16), default="private")  # public | private
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="image")
    state: Mapped[int] = mapped_column(Integer, default=RepositoryState.NORMAL)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Blob(Base):
    """A verified, content-addressed blob (Quay's ImageStorage), shared by every repository."""

    __tablename__ = "blob"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(255), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class BlobPlacement(Base):
    """Which configured storage locations hold a blob."""

    __tablename__ = "blobplacement"
    __table_args__ = (UniqueConstraint("blob_id", "location"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id", ondelete="CASCADE"), index=True)
    location: Mapped[str] = mapped_column(String(255))


class Manifest(Base):
    """Exact manifest bytes per repository (the same digest in two repositories is two rows)."""

    __tablename__ = "manifest"
    __table_args__ = (
        UniqueConstraint("repository_id", "digest"),
        Index("ix_manifest_repository_id_subject", "repository_id", "subject"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"))
    digest: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(255))
    manifest_bytes: Mapped[bytes] = mapped_column(LargeBinary)
    config_media_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    artifact_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    annotations: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    layers_compressed_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ManifestChild(Base):
    __tablename__ = "manifestchild"
    __table_args__ = (UniqueConstraint("manifest_id", "child_manifest_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"), index=True)
    manifest_id: Mapped[int] = mapped_column(ForeignKey("manifest.id"), index=True)
    child_manifest_id: Mapped[int] = mapped_column(ForeignKey("manifest.id"), index=True)


class ManifestBlob(Base):
    __tablename__ = "manifestblob"
    __table_args__ = (
        UniqueConstraint("manifest_id", "blob_id"),
        Index("ix_manifestblob_repository_id_blob_id", "repository_id", "blob_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"))
    manifest_id: Mapped[int] = mapped_column(ForeignKey("manifest.id"), index=True)
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), index=True)


class UploadedBlob(Base):
    """A repository's temporary claim on a blob no manifest references yet (protects it from GC)."""

    __tablename__ = "uploadedblob"
    __table_args__ = (Index("ix_uploadedblob_repository_id_blob_id", "repository_id", "blob_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"))
    blob_id: Mapped[int] = mapped_column(ForeignKey("blob.id"), index=True)
    uploaded_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class BlobUpload(Base):
    """An upload session in progress: how many bytes arrived and where the driver keeps them."""

    __tablename__ = "blobupload"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"), index=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    byte_count: Mapped[int] = mapped_column(BigInteger, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    location: Mapped[str] = mapped_column(String(255))
    storage_metadata: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Tag(Base):
    """One lifetime of a tag name; history is the series of rows (lifetime_end_ms NULL = alive)."""

    __tablename__ = "tag"
    __table_args__ = (
        UniqueConstraint("repository_id", "name", "lifetime_end_ms"),
        Index("ix_tag_repository_id_name", "repository_id", "name"),
        Index("ix_tag_manifest_id_lifetime_end_ms", "manifest_id", "lifetime_end_ms"),
        Index("ix_tag_repository_id_lifetime_end_ms", "repository_id", "lifetime_end_ms"),
        Index("ix_tag_lifetime_end_ms", "lifetime_end_ms"),  # garbage collection looks across repositories
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"))
    name: Mapped[str] = mapped_column(String(255))
    manifest_id: Mapped[int] = mapped_column(ForeignKey("manifest.id"))
    lifetime_start_ms: Mapped[int] = mapped_column(BigInteger)
    lifetime_end_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    reversion: Mapped[bool] = mapped_column(Boolean, default=False)
    immutable: Mapped[bool] = mapped_column(Boolean, default=False)


class LabelSource:
    """Where a label came from: the image itself, the API (the only mutable kind), or the registry."""

    MANIFEST = "manifest"
    API = "api"
    INTERNAL = "internal"


class Label(Base):
    """A key/value annotation on a manifest, as Quay shows and filters them."""

    __tablename__ = "label"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    key: Mapped[str] = mapped_column(String(255), index=True)
    value: Mapped[str] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(String(64))
    source_type: Mapped[str] = mapped_column(String(16))


class ManifestLabel(Base):
    """Links a label to the manifest (and repository) it annotates."""

    __tablename__ = "manifestlabel"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repository.id"), index=True)
    manifest_id: Mapped[int] = mapped_column(ForeignKey("manifest.id"), index=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("label.id"), unique=True)


class BlobDeletion(Base):
    """A blob garbage collection is removing from storage right now (its row is already gone).

    While this marker exists no push may record the digest again: the bytes it would rely on
    are being deleted. The push gets a retryable error instead of a broken image."""

    __tablename__ = "blobdeletion"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(255), unique=True)
    started: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class DeletedNamespace(Base):
    """A user or organization queued for deletion: its repositories go first, then the account."""

    __tablename__ = "deletednamespace"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("user.id"), unique=True)
    original_name: Mapped[str] = mapped_column(String(255))
    queued: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Quota(Base):
    """A namespace's storage quota (Quay's UserOrganizationQuota)."""

    __tablename__ = "quota"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("user.id"), unique=True)
    limit_bytes: Mapped[int] = mapped_column(BigInteger)


class QuotaLimit(Base):
    """A threshold of a quota: Warning or Reject at a percentage of its limit."""

    __tablename__ = "quotalimit"
    __table_args__ = (UniqueConstraint("quota_id", "kind", "percent"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    quota_id: Mapped[int] = mapped_column(ForeignKey("quota.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # Warning | Reject
    percent: Mapped[int] = mapped_column(Integer)

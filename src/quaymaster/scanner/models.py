"""The scanner's own tables: indexer (reports, layer results), matcher (feeds), notifier."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 1
metadata = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER keys

schema_version = Table(
    "scanner_schema_version", metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

# --- indexer ---------------------------------------------------------------------------------
index_report = Table(
    "scanner_index_report", metadata,
    Column("manifest_hash", String(200), primary_key=True),
    Column("state", String(40), nullable=False),
    Column("indexer_state", String(64), nullable=False),  # index_state this report was made under
    Column("body", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Per-layer scan results, shared by every manifest that holds the layer.
layer_result = Table(
    "scanner_layer_result", metadata,
    Column("layer_hash", String(200), primary_key=True),
    Column("indexer_state", String(64), primary_key=True),
    Column("body", JSON, nullable=False),
)

# Which package names an indexed manifest holds: the notifier's reverse lookup.
manifest_package = Table(
    "scanner_manifest_package", metadata,
    Column("manifest_hash", String(200), ForeignKey("scanner_index_report.manifest_hash", ondelete="CASCADE"),
           primary_key=True),
    Column("package_name", String(255), primary_key=True),
    Index("ix_scanner_manifest_package_name", "package_name"),
)

# --- matcher ---------------------------------------------------------------------------------
update_operation = Table(
    "scanner_update_operation", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("ref", String(36), nullable=False, unique=True),
    Column("updater", String(200), nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("date", DateTime(timezone=True), nullable=False),
    Column("kind", String(20), nullable=False),  # vulnerability | enrichment
    Index("ix_scanner_uo_updater", "updater", "id"),
)

vulnerability = Table(
    "scanner_vulnerability", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("uo_id", _ID, ForeignKey("scanner_update_operation.id", ondelete="CASCADE"), nullable=False),
    Column("updater", String(200), nullable=False),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("issued", String(40), nullable=False, default=""),
    Column("links", Text, nullable=False, default=""),
    Column("severity", String(100), nullable=False, default=""),
    Column("normalized_severity", String(20), nullable=False, default="Unknown"),
    Column("package_name", String(255), nullable=False),
    Column("package_kind", String(20), nullable=False, default="binary"),
    Column("dist_did", String(50), nullable=False, default=""),
    Column("dist_name", String(100), nullable=False, default=""),
    Column("dist_version_id", String(50), nullable=False, default=""),
    Column("dist_version_code_name", String(50), nullable=False, default=""),
    Column("dist_pretty_name", String(200), nullable=False, default=""),
    Column("repo_name", String(100), nullable=False, default=""),
    Column("repo_uri", String(255), nullable=False, default=""),
    Column("version_kind", String(20), nullable=False),  # dpkg | apk | pep440 | semver
    Column("introduced", String(200), nullable=False, default=""),
    Column("fixed", String(200), nullable=False, default=""),
    Column("last_affected", String(200), nullable=False, default=""),
    Column("fixed_in_version", String(400), nullable=False, default=""),
    Index("ix_scanner_vuln_lookup", "uo_id", "package_name"),
)

enrichment = Table(
    "scanner_enrichment", metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("uo_id", _ID, ForeignKey("scanner_update_operation.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(100), nullable=False),  # a CVE id
    Column("data", JSON, nullable=False),
    Index("ix_scanner_enrichment_tag", "uo_id", "tag"),
)

# --- notifier --------------------------------------------------------------------------------
notifier_seen = Table(  # update operations the notifier has already diffed
    "scanner_notifier_seen", metadata,
    Column("uo_ref", String(36), primary_key=True),
)

notification_set = Table(
    "scanner_notification_set", metadata,
    Column("id", String(36), primary_key=True),
    Column("uo_ref", String(36), nullable=False),
    Column("updater", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered", Boolean, nullable=False, default=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0),
)

notification = Table(
    "scanner_notification", metadata,
    Column("id", String(36), primary_key=True),  # uuid; pages are keyset over this column
    Column("set_id", String(36), ForeignKey("scanner_notification_set.id", ondelete="CASCADE"), nullable=False),
    Column("manifest", String(200), nullable=False),
    Column("reason", String(20), nullable=False),
    Column("body", JSON, nullable=False),
    UniqueConstraint("set_id", "manifest", "reason"),
    Index("ix_scanner_notification_page", "set_id", "id"),
)

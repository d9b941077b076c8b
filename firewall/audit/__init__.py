"""The tamper-evident audit log: write records (rotated, fsynced as configured), read and
query them (through an incremental SQLite index, a cache that `verify` does not rely on),
verify the chain across files."""

from __future__ import annotations

from firewall.audit.index import AuditIndex, IndexUnavailable, Refresh, default_index_path
from firewall.audit.reader import query, read_records
from firewall.audit.verify import FileReport, VerifyReport, verify
from firewall.audit.writer import AuditLogError, AuditWriter, log_files

__all__ = [
    "AuditIndex",
    "AuditLogError",
    "AuditWriter",
    "FileReport",
    "IndexUnavailable",
    "Refresh",
    "VerifyReport",
    "default_index_path",
    "log_files",
    "query",
    "read_records",
    "verify",
]

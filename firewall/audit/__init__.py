"""The tamper-evident audit log: write records (rotated, fsynced as configured), read and
query them, verify the chain across files."""

from __future__ import annotations

from firewall.audit.reader import query, read_records
from firewall.audit.verify import FileReport, VerifyReport, verify
from firewall.audit.writer import AuditLogError, AuditWriter, log_files

__all__ = ["AuditLogError", "AuditWriter", "FileReport", "VerifyReport", "log_files", "query", "read_records", "verify"]

"""The tamper-evident audit log: write records, read and query them, verify the chain."""

from __future__ import annotations

from firewall.audit.reader import query, read_records
from firewall.audit.verify import VerifyReport, verify
from firewall.audit.writer import AuditLogError, AuditWriter

__all__ = ["AuditLogError", "AuditWriter", "VerifyReport", "query", "read_records", "verify"]

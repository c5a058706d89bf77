"""The audit trail: every access to patient data, append-only and hash-chained."""

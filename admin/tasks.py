"""Celery shims of the back-office (none yet: complaints' refunds leave through the
outbox event `complaint.refund_due`)."""

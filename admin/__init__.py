"""Back-office services: KYC documents and decisions, complaints, the audit trail,
account activation. No HTTP (api/routers/admin*.py is the edge)."""

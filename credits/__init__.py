"""Credits: lesson packs, monthly plans, a credit wallet per payer, spent on bookings.

Rooms as every domain (DESIGN §2): `models`, `schemas`, `repository` (the only SQL),
`service` (rules, never commits), `errors`, `billing` (the Stripe Billing adapter),
`ledger` (the double-entry lines of credit sales, spends, refunds and expiries), `jobs`
(the units of work of webhooks and beat jobs) and `tasks` (Celery shims).
"""

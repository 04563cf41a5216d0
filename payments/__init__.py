"""Payments: the payment provider port and its Stripe adapter, the webhook inbox, refunds,
the double-entry ledger, payouts and the finance report (DESIGN §6)."""

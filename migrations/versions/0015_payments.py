"""Payments: payments, refunds, the webhook inbox, the double-entry ledger and payouts.

- `payments`: one per booking (`booking_id` unique), the gateway's intent id unique per
  gateway. `captured_minor` is what the gateway took; `refunded_minor` is the sum of the
  payment's pending or succeeded refunds, kept by a trigger on `refunds`, and the CHECK
  `refunded_minor <= captured_minor` is the database's refusal of a refund above what was
  captured (the UPDATE also row-locks the payment, so concurrent refunds queue).
- `refunds`: numbered per payment (`seq`, the gateway idempotency key is
  `re:{booking_id}:{seq}`), in the payment's currency (composite foreign key).
- `webhook_events(source, event_id)` unique: the inbox; a delivery is stored once
  (INSERT … ON CONFLICT DO NOTHING) and processed by the drain task, which claims rows
  (`claimed_until`, SKIP LOCKED); `processed_at`, `attempts`, `next_attempt_at` (backoff)
  and `last_error` keep the state, so an event failing every attempt stays as a dead
  letter.
- `ledger_transactions` (one per business event, `key` unique so a replay posts nothing)
  and `ledger_entries` (signed amounts: positive = credit, negative = debit). A
  DEFERRABLE INITIALLY DEFERRED constraint trigger checks at commit that every
  transaction touched sums to zero per currency; entries are append-only.
- `payouts`: pending → approved → paid | rejected, gross = fee + net.
- `provider_profiles.stripe_account_id`: the provider's Stripe connected account.

Revision ID: 0015_payments
Revises: 0014_booking
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0015_payments"
down_revision = "0014_booking"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE provider_profiles ADD COLUMN stripe_account_id text"
        " CHECK (stripe_account_id ~ '^acct_[A-Za-z0-9]{1,64}$')"
    )
    op.execute(
        """
        CREATE TABLE payments (
            id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            booking_id          uuid NOT NULL UNIQUE REFERENCES bookings(id),
            payer_id            uuid NOT NULL REFERENCES users(id),
            provider_id         uuid NOT NULL REFERENCES users(id),
            gateway             text NOT NULL CHECK (gateway IN ('stripe')),
            gateway_ref         text NOT NULL,
            status              text NOT NULL DEFAULT 'requires_payment' CHECK (status IN
                                ('requires_payment', 'processing', 'succeeded', 'failed', 'canceled')),
            price_minor         bigint NOT NULL CHECK (price_minor > 0),
            service_fee_minor   bigint NOT NULL DEFAULT 0 CHECK (service_fee_minor >= 0),
            amount_minor        bigint NOT NULL CHECK (amount_minor > 0),
            currency            char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            captured_minor      bigint NOT NULL DEFAULT 0 CHECK (captured_minor >= 0),
            refunded_minor      bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
            failure_code        text,
            failure_message     text,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now(),
            succeeded_at        timestamptz,
            UNIQUE (gateway, gateway_ref),
            UNIQUE (id, currency),
            CHECK (amount_minor = price_minor + service_fee_minor),
            CHECK (captured_minor <= amount_minor),
            CONSTRAINT payments_refunds_within_capture CHECK (refunded_minor <= captured_minor),
            CHECK ((status = 'succeeded') = (succeeded_at IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX payments_created_idx ON payments (created_at)")
    op.execute("CREATE INDEX payments_payer_idx ON payments (payer_id, created_at)")
    op.execute(
        """
        CREATE TABLE refunds (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            payment_id      uuid NOT NULL,
            booking_id      uuid NOT NULL REFERENCES bookings(id),
            seq             integer NOT NULL CHECK (seq >= 1),
            gateway_ref     text UNIQUE,
            amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
            currency        char(3) NOT NULL,
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
            reason          text NOT NULL,
            failure_reason  text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            UNIQUE (payment_id, seq),
            FOREIGN KEY (payment_id, currency) REFERENCES payments (id, currency)
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION refunds_reserve() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            delta bigint := 0;
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.status IN ('pending', 'succeeded') THEN
                delta := delta - OLD.amount_minor;
            END IF;
            IF NEW.status IN ('pending', 'succeeded') THEN
                delta := delta + NEW.amount_minor;
            END IF;
            IF delta <> 0 THEN
                UPDATE payments SET refunded_minor = refunded_minor + delta, updated_at = now()
                 WHERE id = NEW.payment_id;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER refunds_reserve AFTER INSERT OR UPDATE OF status, amount_minor"
        " ON refunds FOR EACH ROW EXECUTE FUNCTION refunds_reserve()"
    )

    op.execute(
        """
        CREATE TABLE webhook_events (
            id              bigserial PRIMARY KEY,
            source          text NOT NULL,
            event_id        text NOT NULL,
            type            text NOT NULL,
            object_kind     text NOT NULL,
            object_ref      text,
            payload         jsonb NOT NULL,
            received_at     timestamptz NOT NULL DEFAULT now(),
            processed_at    timestamptz,
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            claimed_until   timestamptz,
            last_error      text,
            UNIQUE (source, event_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX webhook_events_unprocessed_idx ON webhook_events (received_at)"
        " WHERE processed_at IS NULL"
    )

    op.execute(
        """
        CREATE TABLE payouts (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            provider_id     uuid NOT NULL REFERENCES users(id),
            currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            gross_minor     bigint NOT NULL CHECK (gross_minor > 0),
            fee_minor       bigint NOT NULL CHECK (fee_minor >= 0),
            net_minor       bigint NOT NULL CHECK (net_minor > 0),
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'approved', 'paid', 'rejected')),
            method          text CHECK (method IN ('stripe_transfer', 'manual')),
            reference       text,
            transfer_ref    text UNIQUE,
            reject_reason   text,
            requested_at    timestamptz NOT NULL DEFAULT now(),
            decided_by      uuid REFERENCES users(id),
            decided_at      timestamptz,
            paid_at         timestamptz,
            updated_at      timestamptz NOT NULL DEFAULT now(),
            CHECK (gross_minor = fee_minor + net_minor),
            CHECK ((status = 'paid') = (paid_at IS NOT NULL AND method IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX payouts_status_idx ON payouts (status, requested_at)")
    op.execute("CREATE INDEX payouts_provider_idx ON payouts (provider_id, requested_at DESC)")

    op.execute(
        """
        CREATE TABLE ledger_transactions (
            id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            kind        text NOT NULL CHECK (kind IN ('payment', 'refund', 'payout_request',
                        'payout_paid', 'payout_rejected')),
            key         text NOT NULL UNIQUE,
            created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE ledger_entries (
            id              bigserial PRIMARY KEY,
            txn_id          uuid NOT NULL REFERENCES ledger_transactions(id),
            account         text NOT NULL,
            amount_minor    bigint NOT NULL CHECK (amount_minor <> 0),
            currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            booking_id      uuid,
            payment_id      uuid REFERENCES payments(id),
            refund_id       uuid REFERENCES refunds(id),
            payout_id       uuid REFERENCES payouts(id),
            created_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ledger_entries_txn_idx ON ledger_entries (txn_id)")
    op.execute("CREATE INDEX ledger_entries_account_idx ON ledger_entries (account, currency)")
    op.execute("CREATE INDEX ledger_entries_created_idx ON ledger_entries (created_at)")
    op.execute(
        """
        CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            bad record;
        BEGIN
            SELECT currency, sum(amount_minor) AS total INTO bad
              FROM ledger_entries WHERE txn_id = NEW.txn_id
             GROUP BY currency HAVING sum(amount_minor) <> 0 LIMIT 1;
            IF FOUND THEN
                RAISE EXCEPTION 'ledger transaction % does not balance: % % off',
                    NEW.txn_id, bad.total, bad.currency
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced()"
    )
    op.execute(
        """
        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger entries are append-only (post a reversing transaction)'
                USING ERRCODE = 'check_violation';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries"
        " FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS ledger_entries")
    op.execute("DROP FUNCTION IF EXISTS ledger_append_only()")
    op.execute("DROP FUNCTION IF EXISTS ledger_check_balanced()")
    op.execute("DROP TABLE IF EXISTS ledger_transactions")
    op.execute("DROP TABLE IF EXISTS payouts")
    op.execute("DROP TABLE IF EXISTS webhook_events")
    op.execute("DROP TABLE IF EXISTS refunds")
    op.execute("DROP FUNCTION IF EXISTS refunds_reserve()")
    op.execute("DROP TABLE IF EXISTS payments")
    op.execute("ALTER TABLE provider_profiles DROP COLUMN IF EXISTS stripe_account_id")

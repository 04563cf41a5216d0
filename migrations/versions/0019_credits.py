"""Credits: plans and packs, credit costs, pack purchases, subscriptions, grants and spends.

- `credit_plans` (+ `credit_plan_prices`, one price per currency): the catalogue, managed by
  admins. `kind = plan` is a monthly subscription granting `credits` each paid period
  (`ACCES_PLATEFORME`, `HYBRIDE` with 4 credits, `IMMERSION`); `kind = pack` is bought once.
  `validity_months` (12 by default) is the life of the credits it grants. The Stripe
  Product and Price ids are filled in lazily (`stripe_product_ref`, `stripe_price_ref`).
- `credit_costs`: what one seat costs in credits, per service type (`online`, `in_person`,
  `group`) and slot duration: the row of the type with the smallest `max_minutes` at or
  above the slot's length.
- `billing_customers`: the gateway customer of a user (one Stripe Customer per payer).
- `credit_purchases`: a pack bought through a PaymentIntent (`gateway_ref` unique);
  credits are granted when the intent succeeds, once (`credit_grants.source_key`).
- `credit_subscriptions`: a plan held by a payer (a parent, or the student) for a student,
  mirrored from the Stripe Subscription; one live subscription per student.
- `credit_grants`: credits given to a wallet (`owner_id`: the payer), of a transaction type
  `MONTHLY_ALLOCATION | PURCHASE | REFUND`, with `expires_at`, `remaining` (CHECK between 0
  and `credits`: never negative), their money value (`value_minor` in `currency`, what the
  payer paid for them: the liability) and a unique `source_key` (`invoice:{in_…}`,
  `purchase:{id}`, `refund:{spend_id}`) so a redelivered event grants nothing twice.
- `credit_spends`: credits taken from one grant, `USAGE` (a booking) or `EXPIRATION` (the
  nightly job; at most one per grant, a unique index); `refunded` counts the credits of a
  usage given back by a cancellation (CHECK ≤ `credits`).
- `ledger_transactions.kind` gains the credit postings (`credit_sale`, `credit_spend`,
  `credit_refund`, `credit_expiry`, `subscription_fee`).

Revision ID: 0019_credits
Revises: 0015_payments (in the credits branch; the final chain is 0018_reviews)
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0019_credits"
down_revision = "0018_reviews"
branch_labels = None
depends_on = None

_LEDGER_KINDS = "'payment', 'refund', 'payout_request', 'payout_paid', 'payout_rejected'"
_CREDIT_KINDS = (
    "'credit_sale', 'credit_spend', 'credit_refund', 'credit_expiry', 'subscription_fee'"
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE credit_plans (
            id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            code                text NOT NULL UNIQUE CHECK (code ~ '^[A-Z][A-Z0-9_]{1,39}$'),
            kind                text NOT NULL CHECK (kind IN ('plan', 'pack')),
            name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
            description         text,
            credits             integer NOT NULL CHECK (credits BETWEEN 0 AND 1000),
            billing_interval    text CHECK (billing_interval IN ('month')),
            validity_months     integer NOT NULL DEFAULT 12 CHECK (validity_months BETWEEN 1 AND 60),
            active              boolean NOT NULL DEFAULT true,
            stripe_product_ref  text,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now(),
            CHECK ((kind = 'plan') = (billing_interval IS NOT NULL)),
            CHECK (kind = 'plan' OR credits > 0)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE credit_plan_prices (
            plan_id          uuid NOT NULL REFERENCES credit_plans(id) ON DELETE CASCADE,
            currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            amount_minor     bigint NOT NULL CHECK (amount_minor > 0),
            stripe_price_ref text,
            PRIMARY KEY (plan_id, currency)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE credit_costs (
            service_type  text NOT NULL CHECK (service_type IN ('online', 'in_person', 'group')),
            max_minutes   integer NOT NULL CHECK (max_minutes BETWEEN 1 AND 1440),
            credits       integer NOT NULL CHECK (credits BETWEEN 1 AND 100),
            PRIMARY KEY (service_type, max_minutes)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE billing_customers (
            user_id       uuid PRIMARY KEY REFERENCES users(id),
            gateway       text NOT NULL CHECK (gateway IN ('stripe')),
            customer_ref  text NOT NULL UNIQUE,
            created_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE credit_purchases (
            id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            owner_id      uuid NOT NULL REFERENCES users(id),
            plan_id       uuid NOT NULL REFERENCES credit_plans(id),
            credits       integer NOT NULL CHECK (credits > 0),
            amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
            currency      char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            gateway       text NOT NULL CHECK (gateway IN ('stripe')),
            gateway_ref   text UNIQUE,
            status        text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now(),
            succeeded_at  timestamptz,
            CHECK ((status = 'succeeded') = (succeeded_at IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX credit_purchases_owner_idx ON credit_purchases (owner_id, created_at)")
    op.execute(
        """
        CREATE TABLE credit_subscriptions (
            id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            owner_id              uuid NOT NULL REFERENCES users(id),
            student_id            uuid NOT NULL REFERENCES users(id),
            plan_id               uuid NOT NULL REFERENCES credit_plans(id),
            currency              char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            amount_minor          bigint NOT NULL CHECK (amount_minor > 0),
            gateway               text NOT NULL CHECK (gateway IN ('stripe')),
            gateway_ref           text UNIQUE,
            customer_ref          text,
            status                text NOT NULL DEFAULT 'incomplete' CHECK (status IN (
                                      'incomplete', 'active', 'past_due', 'unpaid',
                                      'canceled', 'incomplete_expired')),
            current_period_start  timestamptz,
            current_period_end    timestamptz,
            cancel_at_period_end  boolean NOT NULL DEFAULT false,
            canceled_at           timestamptz,
            created_at            timestamptz NOT NULL DEFAULT now(),
            updated_at            timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX credit_subscriptions_one_live ON credit_subscriptions (student_id)"
        " WHERE status IN ('incomplete', 'active', 'past_due', 'unpaid')"
    )
    op.execute("CREATE INDEX credit_subscriptions_owner_idx ON credit_subscriptions (owner_id)")
    op.execute(
        """
        CREATE TABLE credit_grants (
            id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            owner_id            uuid NOT NULL REFERENCES users(id),
            type                text NOT NULL
                                CHECK (type IN ('MONTHLY_ALLOCATION', 'PURCHASE', 'REFUND')),
            credits             integer NOT NULL CHECK (credits > 0),
            remaining           integer NOT NULL,
            value_minor         bigint NOT NULL CHECK (value_minor >= 0),
            currency            char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            granted_at          timestamptz NOT NULL,
            expires_at          timestamptz NOT NULL,
            source_key          text NOT NULL UNIQUE,
            subscription_id     uuid REFERENCES credit_subscriptions(id),
            purchase_id         uuid REFERENCES credit_purchases(id),
            booking_id          uuid REFERENCES bookings(id),
            expiry_notified_at  timestamptz,
            CONSTRAINT credit_grants_remaining CHECK (remaining BETWEEN 0 AND credits),
            CHECK (expires_at > granted_at)
        )
        """
    )
    op.execute(
        "CREATE INDEX credit_grants_wallet_idx ON credit_grants (owner_id, expires_at, id)"
        " WHERE remaining > 0"
    )
    op.execute(
        "CREATE INDEX credit_grants_expiry_idx ON credit_grants (expires_at) WHERE remaining > 0"
    )
    op.execute(
        """
        CREATE TABLE credit_spends (
            id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            grant_id      uuid NOT NULL REFERENCES credit_grants(id),
            owner_id      uuid NOT NULL REFERENCES users(id),
            type          text NOT NULL CHECK (type IN ('USAGE', 'EXPIRATION')),
            credits       integer NOT NULL CHECK (credits > 0),
            value_minor   bigint NOT NULL CHECK (value_minor >= 0),
            currency      char(3) NOT NULL,
            booking_id    uuid REFERENCES bookings(id),
            refunded      integer NOT NULL DEFAULT 0,
            created_at    timestamptz NOT NULL,
            CONSTRAINT credit_spends_refunded CHECK (refunded BETWEEN 0 AND credits),
            CHECK ((type = 'USAGE') = (booking_id IS NOT NULL)),
            CHECK (type = 'USAGE' OR refunded = 0)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX credit_spends_one_expiry ON credit_spends (grant_id)"
        " WHERE type = 'EXPIRATION'"
    )
    op.execute("CREATE INDEX credit_spends_booking_idx ON credit_spends (booking_id)")
    op.execute("CREATE INDEX credit_spends_owner_idx ON credit_spends (owner_id, created_at)")
    op.execute("CREATE INDEX credit_grants_owner_idx ON credit_grants (owner_id, granted_at)")

    op.execute("ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check")
    op.execute(
        "ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check"
        f" CHECK (kind IN ({_LEDGER_KINDS}, {_CREDIT_KINDS}))"
    )

    # The catalogue the issue names, and default costs (admins change both).
    op.execute(
        """
        INSERT INTO credit_plans (code, kind, name, description, credits, billing_interval) VALUES
          ('ACCES_PLATEFORME', 'plan', 'Accès plateforme', 'Platform access, no lesson credits', 0, 'month'),
          ('HYBRIDE', 'plan', 'Hybride', '4 lesson credits a month', 4, 'month'),
          ('IMMERSION', 'plan', 'Immersion', '12 lesson credits a month', 12, 'month'),
          ('PACK_5', 'pack', 'Pack 5', '5 lesson credits', 5, NULL),
          ('PACK_10', 'pack', 'Pack 10', '10 lesson credits', 10, NULL)
        """
    )
    op.execute(
        """
        INSERT INTO credit_plan_prices (plan_id, currency, amount_minor)
        SELECT id, 'EUR', CASE code WHEN 'ACCES_PLATEFORME' THEN 990 WHEN 'HYBRIDE' THEN 9900
               WHEN 'IMMERSION' THEN 24900 WHEN 'PACK_5' THEN 12500 ELSE 23000 END
          FROM credit_plans
        """
    )
    op.execute(
        """
        INSERT INTO credit_costs (service_type, max_minutes, credits) VALUES
          ('online', 60, 1), ('online', 120, 2), ('online', 180, 3),
          ('in_person', 60, 1), ('in_person', 120, 2), ('in_person', 180, 3),
          ('group', 90, 1), ('group', 180, 2)
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
    op.execute(
        "DELETE FROM ledger_entries WHERE txn_id IN (SELECT id FROM ledger_transactions"
        f" WHERE kind IN ({_CREDIT_KINDS}))"
    )
    op.execute("ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_append_only")
    op.execute(f"DELETE FROM ledger_transactions WHERE kind IN ({_CREDIT_KINDS})")
    op.execute("ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_kind_check")
    op.execute(
        "ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_kind_check"
        f" CHECK (kind IN ({_LEDGER_KINDS}))"
    )
    for table in (
        "credit_spends", "credit_grants", "credit_subscriptions", "credit_purchases",
        "billing_customers", "credit_costs", "credit_plan_prices", "credit_plans",
    ):  # fmt: skip
        op.execute(f"DROP TABLE IF EXISTS {table}")

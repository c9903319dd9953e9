-- What each attempt cost (its GPU time at its provider's price, with the provider's billing
-- rounding) and what each execution cost in all, in US dollars.
ALTER TABLE attempts ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0;

-- A tenant's monthly spending limit; no row means no limit.
CREATE TABLE tenant_budgets (
    tenant     text PRIMARY KEY,
    limit_usd  double precision NOT NULL CHECK (limit_usd >= 0),
    updated_at timestamptz NOT NULL
);

-- What each tenant spent per calendar month (UTC), added to as attempts end.
CREATE TABLE tenant_spend (
    tenant    text NOT NULL,
    period    date NOT NULL,
    spent_usd double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, period)
);

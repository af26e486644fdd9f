-- Delivery-health routing: each provider's standing per destination country, shared by every
-- instance so that all of them route alike. `level` is how many places the provider has been
-- moved down its chains for that country; `changed_at` when it last moved, so that only
-- messages sent since count towards its next move. Written with a compare-and-set on
-- (level, changed_at): of several instances judging at once, one moves it.
CREATE TABLE provider_health (
    provider      text NOT NULL,
    -- The destination's ISO 3166 region, '' where there is none (email).
    country       text NOT NULL,
    level         integer NOT NULL CHECK (level >= 0),
    changed_at    timestamptz NOT NULL,
    -- The score that caused the last move, for /status and the alert.
    delivered     bigint NOT NULL,
    not_delivered bigint NOT NULL,
    p95_ms        double precision,
    PRIMARY KEY (provider, country)
);

-- The score reads the messages accepted within the window.
CREATE INDEX deliveries_sent_at ON deliveries (sent_at) WHERE sent_at IS NOT NULL;

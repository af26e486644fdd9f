-- Shared limiter state (issue 4, docs/limits.md): one row per rule and key, so that limits hold
-- across every otpd instance on this database. Each admission locks the rows of its keys,
-- decides in otpd, and writes them back in one transaction.
CREATE TABLE limit_counters (
    rule        text NOT NULL,
    -- The scope's key: an HMAC for phone numbers, addresses and IPs, else the account, country
    -- or prefix itself. Never a raw destination.
    key         text NOT NULL,
    -- GCRA's theoretical arrival time; null until the rule has a rate and was first taken.
    tat         timestamptz,
    hour_start  timestamptz,
    hour_used   bigint NOT NULL DEFAULT 0,
    day_start   timestamptz,
    day_used    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (rule, key)
);

-- Whether a challenge passed its limits. A worker that takes over a challenge whose owner
-- crashed before admission checks again; one that was admitted is never counted twice.
ALTER TABLE deliveries ADD COLUMN admitted boolean NOT NULL DEFAULT false;
-- The limit rule that refused the challenge and when it would have been allowed.
ALTER TABLE deliveries ADD COLUMN rule text;
ALTER TABLE deliveries ADD COLUMN retry_at timestamptz;
-- For conversion tracking: the destination's country and number range (a prefix of its
-- E.164 digits, never the whole number), and when the identity service reported the code
-- as verified.
ALTER TABLE deliveries ADD COLUMN country text;
ALTER TABLE deliveries ADD COLUMN prefix text;
ALTER TABLE deliveries ADD COLUMN verified_at timestamptz;
CREATE INDEX deliveries_prefix_created ON deliveries (prefix, created_at) WHERE prefix IS NOT NULL;

-- Number ranges whose conversion fell below the threshold, flagged until blocked_until
-- (shadow mode: only announced; enforce mode: no codes are sent to the range until then).
CREATE TABLE prefix_flags (
    prefix        text PRIMARY KEY,
    country       text,
    mode          text NOT NULL CHECK (mode IN ('shadow', 'enforce')),
    sent          integer NOT NULL,
    verified      integer NOT NULL,
    flagged_at    timestamptz NOT NULL DEFAULT now(),
    blocked_until timestamptz NOT NULL
);

-- One row per challenge: its current state. The code is never stored; the destination only
-- masked and as a keyed HMAC (for "all deliveries to this number" look-ups).
CREATE TABLE deliveries (
    challenge_id        text PRIMARY KEY,
    -- Nullable because a rejected job may not have had a readable account, channel or destination.
    account_id          text,
    channel             text CHECK (channel IN ('sms', 'voice', 'email')),
    destination_masked  text,
    destination_hmac    bytea,
    locale              text,
    template            text,
    expires_at          timestamptz,
    state               text NOT NULL CHECK (state IN
                          ('received', 'sending', 'sent', 'failed', 'expired', 'rate_limited', 'rejected')),
    attempt             integer NOT NULL DEFAULT 0,
    provider            text,
    provider_message_id text,
    reason              text,
    detail              text,
    -- While a worker owns a non-terminal challenge it holds a lease; a redelivered job only
    -- takes the challenge over once the lease has run out (the owner crashed or hung).
    lease_until         timestamptz,
    -- Set while a provider call is in flight. A worker that takes over a challenge whose call
    -- was in flight cannot know whether the code went out: that attempt is "in doubt".
    call_started_at     timestamptz,
    -- The terminal status event was confirmed by the broker; a redelivery republishes it if not.
    event_published     boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX deliveries_account_created ON deliveries (account_id, created_at);
CREATE INDEX deliveries_destination_hmac ON deliveries (destination_hmac);
CREATE INDEX deliveries_state_updated ON deliveries (state, updated_at);

-- Append-only audit trail: every state transition and every provider attempt.
CREATE TABLE delivery_events (
    id              bigserial PRIMARY KEY,
    challenge_id    text NOT NULL REFERENCES deliveries (challenge_id),
    at              timestamptz NOT NULL DEFAULT now(),
    -- 'state' (a transition to `state`), 'attempt' (a provider call that failed and will be
    -- followed by a retry or a terminal state) or 'duplicate' (a job for an already-recorded
    -- challenge arrived and was not sent again).
    kind            text NOT NULL CHECK (kind IN ('state', 'attempt', 'duplicate')),
    state           text,
    attempt         integer,
    provider        text,
    response_status integer,
    latency_ms      integer,
    reason          text,
    detail          text,
    in_doubt        boolean NOT NULL DEFAULT false
);

CREATE INDEX delivery_events_challenge ON delivery_events (challenge_id, id);

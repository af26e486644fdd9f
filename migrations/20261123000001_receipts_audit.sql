-- Issue 5: provider receipts, the hash-chained audit trail and audited retention.

-- A receipt from the provider moves a `sent` delivery on to `delivered` or `undelivered`.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN
    ('received', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'expired', 'rate_limited', 'rejected'));
-- When the provider accepted the message (the latency to `sent` is sent_at - created_at) and
-- when its final receipt arrived (send-to-delivered latency is receipt_at - sent_at).
ALTER TABLE deliveries ADD COLUMN sent_at timestamptz;
ALTER TABLE deliveries ADD COLUMN receipt_at timestamptz;
-- The carrier's or vendor's error code from an `undelivered` receipt (Twilio's ErrorCode).
ALTER TABLE deliveries ADD COLUMN carrier_error text;
-- The receipt's status event was confirmed by the broker; housekeeping republishes it if not.
ALTER TABLE deliveries ADD COLUMN receipt_published boolean NOT NULL DEFAULT true;
CREATE INDEX deliveries_provider_message ON deliveries (provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX deliveries_created ON deliveries (created_at);
CREATE INDEX deliveries_receipt_unpublished ON deliveries (receipt_at) WHERE NOT receipt_published;

-- A final receipt that arrived before otpd had recorded the message as sent (the provider can
-- answer the callback faster than otpd commits). Housekeeping applies it once the row is sent.
CREATE TABLE pending_receipts (
    provider_message_id text PRIMARY KEY,
    state               text NOT NULL CHECK (state IN ('delivered', 'undelivered')),
    carrier_error       text,
    received_at         timestamptz NOT NULL DEFAULT now()
);

-- The audit chain. Every event gets a place in the chain (`seq`, gap-free) and a hash over its
-- content and the previous event's hash, assigned by one sealer at a time shortly after the
-- insert, so that writers never queue on a chain head. `otpd audit verify` recomputes it.
ALTER TABLE delivery_events ADD COLUMN seq bigint UNIQUE;
ALTER TABLE delivery_events ADD COLUMN hash bytea;
CREATE INDEX delivery_events_unsealed ON delivery_events (id) WHERE seq IS NULL;
CREATE INDEX delivery_events_at ON delivery_events (at);

-- The chain's head: the last sealed event. Deleting the newest events shows as a mismatch here.
CREATE TABLE audit_chain (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint NOT NULL,
    hash      bytea NOT NULL
);

-- Every purge, itself an audit record: what was removed and the hash the remaining chain now
-- starts from (the last purged event's), so verification still closes over the gap.
CREATE TABLE audit_purges (
    id                 bigserial PRIMARY KEY,
    at                 timestamptz NOT NULL DEFAULT now(),
    older_than         timestamptz NOT NULL,
    trigger            text NOT NULL CHECK (trigger IN ('command', 'scheduled')),
    through_seq        bigint NOT NULL,
    anchor_hash        bytea,
    events_deleted     bigint NOT NULL,
    deliveries_deleted bigint NOT NULL
);

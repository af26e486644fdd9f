-- Fencing for leases: every claim draws a fresh token, and an owner's writes apply only while
-- its token is still the row's. A worker that stalled past its lease (and was taken over) can
-- therefore neither start another provider call nor overwrite the new owner's outcome.
ALTER TABLE deliveries ADD COLUMN lease_token bigint;

-- 'in_doubt': a provider call whose outcome is unknown, recorded when it is discovered (on
-- takeover after a crash, or when a call times out after the request was sent). Their count
-- bounds the duplicates otpd can have caused.
ALTER TABLE delivery_events DROP CONSTRAINT delivery_events_kind_check;
ALTER TABLE delivery_events ADD CONSTRAINT delivery_events_kind_check
    CHECK (kind IN ('state', 'attempt', 'duplicate', 'in_doubt'));

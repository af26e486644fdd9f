-- Fallback steps: a step that does not send ends `cancelled`, and a publisher's `cancel`
-- message is recorded on the challenge's first send, where a pending step looks for it (as it
-- does for `verified_at`). NOT VALID, then validated apart: no lock that blocks writers while
-- the existing rows are checked.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN
    ('received', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'expired', 'rate_limited',
     'rejected', 'cancelled')) NOT VALID;
ALTER TABLE deliveries VALIDATE CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD COLUMN cancelled_at timestamptz;

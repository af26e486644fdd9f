-- WhatsApp is a channel. The constraint is added NOT VALID and validated apart: every existing
-- row already satisfies it, and validating takes no lock that blocks writers, so a large
-- deliveries table is not locked while it is scanned.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_channel_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_channel_check
    CHECK (channel IN ('sms', 'voice', 'whatsapp', 'email')) NOT VALID;
ALTER TABLE deliveries VALIDATE CONSTRAINT deliveries_channel_check;

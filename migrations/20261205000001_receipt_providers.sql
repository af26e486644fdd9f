-- A receipt names a message by the vendor's id, and two vendors' ids can be the same string (an
-- SMSC's short numeric ids in particular). A receipt therefore matches a delivery on the
-- provider instance that heard it and the id together; a parked receipt keeps the instances it
-- may belong to. Receipts parked before this have none and expire unapplied within a day.
ALTER TABLE pending_receipts ADD COLUMN providers text[] NOT NULL DEFAULT '{}';
ALTER TABLE pending_receipts DROP CONSTRAINT pending_receipts_pkey;
ALTER TABLE pending_receipts ADD PRIMARY KEY (provider_message_id, providers);

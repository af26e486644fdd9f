-- Issue 6: the audit sealer was the largest statement per job (docs/performance.md). It
-- updated every event to set its `seq` and `hash`: a new, non-HOT row version through every
-- index of `delivery_events` and a dead one for vacuum, ~15 WAL records per job. Seals are now
-- rows of their own, inserted once; events are never updated after their insert.
--
-- The sealer finds new events by the transaction that wrote them instead of by `seq IS NULL`:
-- every event records its writer's 64-bit transaction id, and an event whose transaction id is
-- below the oldest transaction still running (`pg_snapshot_xmin`) is final: committed and
-- visible, or rolled back. Events are sealed in (xid, id) order up to that horizon, so a
-- cursor (the last sealed xid and id) is all the sealer needs, no event can appear behind it,
-- and writers still take no lock and never wait on the chain.
CREATE TABLE audit_seals (
    seq      bigint PRIMARY KEY,
    event_id bigint NOT NULL,
    hash     bytea NOT NULL
);

INSERT INTO audit_seals (seq, event_id, hash)
SELECT seq, id, hash FROM delivery_events WHERE seq IS NOT NULL;

-- Sealed events get xid 0 and sit behind the cursor set below; unsealed ones get this
-- migration's transaction id, so they are sealed, in id order, once it commits. xid8 has no
-- cast to bigint; its text form is the 64-bit number (epoch and xid), which never wraps.
ALTER TABLE delivery_events ADD COLUMN xid bigint NOT NULL DEFAULT 0;
UPDATE delivery_events SET xid = pg_current_xact_id()::text::bigint WHERE seq IS NULL;
ALTER TABLE delivery_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id()::text::bigint;
CREATE INDEX delivery_events_xid ON delivery_events (xid, id);

ALTER TABLE audit_chain
    ADD COLUMN cursor_xid bigint NOT NULL DEFAULT 0,
    ADD COLUMN cursor_id  bigint NOT NULL DEFAULT 0;
UPDATE audit_chain
   SET cursor_id = COALESCE((SELECT max(id) FROM delivery_events WHERE seq IS NOT NULL), 0);

-- Dropping the columns also makes an older sealer, should one still run during an upgrade,
-- fail loudly instead of chaining events a second time.
DROP INDEX delivery_events_unsealed;
DROP INDEX delivery_events_seq;
ALTER TABLE delivery_events DROP COLUMN seq, DROP COLUMN hash;

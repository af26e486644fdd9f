-- Issue 6: keep the per-job updates cheap.
--
-- A row update that changes no indexed column and finds room on its page is a HOT update: no
-- index gets a new entry. A job updates its `deliveries` row four times (admitted, attempt
-- started, finished, event published) and each of its limit counters once. No query reads
-- deliveries by (state, updated_at), and that index alone made the admission, start and
-- event-published updates rewrite all eight indexes of the table.
DROP INDEX deliveries_state_updated;

-- Room on every page for a row's next versions; the old ones are pruned as the page fills.
ALTER TABLE deliveries SET (fillfactor = 70);
ALTER TABLE limit_counters SET (fillfactor = 70);

-- When delivery health was last scored: every instance checks on its own timer, and the first
-- to find the last scoring a whole interval old scores for all of them, so that the cost of
-- scoring does not grow with the number of instances. The others only reload the standings.
CREATE TABLE provider_health_checks (
    id         smallint PRIMARY KEY CHECK (id = 1),
    checked_at timestamptz NOT NULL
);

-- Leases that hold across replicas and restarts: `stack:<docker.project>` (a deploy, /restart,
-- /scale, /restore) and `database:<target>` (a backup or restore). A row is a held lease. Its
-- holder renews heartbeat_at; one whose heartbeat is older than deploy.lock_stale_secs belongs
-- to a runbot that died and is taken over. Every time here comes from the database's clock,
-- never a runbot's, so two hosts whose clocks disagree still agree on what is stale.
CREATE TABLE locks (
    name           TEXT    PRIMARY KEY,
    -- Unique per acquisition: only it may renew or release the lease.
    owner          TEXT    NOT NULL,
    -- Who holds it, in words: "deploy #3 of v2 by Dana", "/restart backend by Bruno".
    holder         TEXT    NOT NULL,
    invocation_id  TEXT,
    taken_at       TEXT    NOT NULL,
    heartbeat_at   TEXT    NOT NULL
);

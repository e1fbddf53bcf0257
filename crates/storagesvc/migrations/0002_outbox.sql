-- Transactional outbox: every write inserts its book-changed event here in the write's own
-- transaction; the relay (src/relay.rs) publishes unsent rows with publisher confirms and then
-- marks them sent. Sent rows are kept only for OUTBOX_RETENTION and pruned by the relay: a
-- bloated outbox made the claim query ~10x slower.
CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    book_id     bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    routing_key text        NOT NULL,
    -- The exact bytes to publish (UTF-8 JSON), so what goes out is what was committed.
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);

-- The claim: oldest unsent rows first.
CREATE INDEX outbox_unsent_idx ON outbox (id) WHERE sent_at IS NULL;
-- Per-book order: "does this book have an earlier unsent row that another relay holds?"
CREATE INDEX outbox_unsent_book_idx ON outbox (book_id, id) WHERE sent_at IS NULL;
-- Pruning: sent rows past retention, oldest first.
CREATE INDEX outbox_sent_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- The table churns (insert, update, delete within a minute): vacuum it after a fixed number of
-- dead rows rather than a fraction of its size, so it stays small under load.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000
);

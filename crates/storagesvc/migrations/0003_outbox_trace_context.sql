-- The W3C trace context of the write that inserted the row (src/telemetry.rs), published with
-- the event as the AMQP headers `traceparent` and `tracestate`, so the consumer that applies
-- it continues the write's trace. NULL when the write had none (no telemetry set up). Adding
-- nullable columns without a default rewrites nothing.
ALTER TABLE outbox
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate  text;

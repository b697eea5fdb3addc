-- The W3C trace context (a `traceparent` value) of the span that queued the message, so a
-- delivery attempt made later, in any process, continues the message's trace. NULL when
-- tracing was off at enqueue.
ALTER TABLE queue_messages ADD COLUMN trace_context TEXT;

-- The fingerprint of a spawn request (without its idempotency key), kept beside the key so
-- that the key given again with a different request is refused instead of answered with
-- the first request's agent. NULL on requests recorded before it existed.
ALTER TABLE requests ADD COLUMN request_hash TEXT;

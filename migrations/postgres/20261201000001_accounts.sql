-- Accounts: several per provider, their credentials sealed (XChaCha20-Poly1305, a random
-- nonce per row, the account id as associated data) under the key in `secrets.*`. An agent
-- records the account it runs on; `account_held` is its reservation, counted against
-- `max_concurrent` and cleared when the agent's process ends.

CREATE TABLE accounts (
    id              UUID PRIMARY KEY,
    provider        TEXT NOT NULL,
    label           TEXT NOT NULL UNIQUE,
    -- 'api_key' or 'oauth' (a provider credentials file).
    kind            TEXT NOT NULL,
    -- version byte || nonce || ciphertext; never leaves the store adapter unsealed.
    sealed          BYTEA NOT NULL,
    -- Which key sealed it (a fingerprint of the key), so a wrong key gives a clear error.
    key_id          TEXT NOT NULL,
    -- A fingerprint of the secret, for people: never the secret.
    fingerprint     TEXT NOT NULL,
    max_concurrent  INTEGER,
    last_used_at    TIMESTAMPTZ,
    exhausted_until TIMESTAMPTZ,
    invalid_reason  TEXT,
    -- The one worker refreshing the OAuth token, until when.
    refresh_holder  TEXT,
    refresh_until   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX accounts_provider_idx ON accounts (provider);

ALTER TABLE agents
    ADD COLUMN account_id UUID REFERENCES accounts(id) ON DELETE SET NULL,
    ADD COLUMN account_held BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX agents_account_idx ON agents (account_id) WHERE account_held;

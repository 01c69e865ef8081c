-- Accounts (the twin of migrations/postgres/…_accounts.sql): several per provider, their
-- credentials sealed under the key in `secrets.*`; an agent records the account it runs on
-- and `account_held` is its reservation, counted against `max_concurrent`.

CREATE TABLE accounts (
    id              BLOB PRIMARY KEY,
    provider        TEXT NOT NULL,
    label           TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    sealed          BLOB NOT NULL,
    key_id          TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    max_concurrent  INTEGER,
    last_used_at    TEXT,
    exhausted_until TEXT,
    invalid_reason  TEXT,
    refresh_holder  TEXT,
    refresh_until   TEXT,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX accounts_provider_idx ON accounts (provider);

ALTER TABLE agents ADD COLUMN account_id BLOB REFERENCES accounts(id) ON DELETE SET NULL;
ALTER TABLE agents ADD COLUMN account_held INTEGER NOT NULL DEFAULT 0;
CREATE INDEX agents_account_idx ON agents (account_id) WHERE account_held;

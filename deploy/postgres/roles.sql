-- A least-privilege role for agentfleet (instead of trust auth and a superuser): it owns
-- its own database and nothing else. Run once as an administrator, e.g.
--   psql -h db-host -U postgres -v password="'$(openssl rand -base64 24)'" -f roles.sql
-- then give the workers and the API AGENTFLEET__DATABASE__URL=postgres://agentfleet:<password>@db-host:5432/agentfleet
-- and, in pg_hba.conf, `scram-sha-256` (not `trust`) for that role.
CREATE ROLE agentfleet LOGIN PASSWORD :password NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
CREATE DATABASE agentfleet OWNER agentfleet;
REVOKE ALL ON DATABASE agentfleet FROM PUBLIC;
\connect agentfleet
ALTER SCHEMA public OWNER TO agentfleet;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- pressor's PostgreSQL roles (docs/deploy.md): run once as a superuser in the database "pressor".
-- pressor_owner (the migration role) owns the schema and the tables: `pressor audit init` runs as it.
-- pressor (the service) may read and append, nothing else: no UPDATE, DELETE or DDL on the log, so it
-- cannot drop or disable the append-only triggers even if the service were made to try.
CREATE ROLE pressor_owner LOGIN;
CREATE ROLE pressor LOGIN;
CREATE SCHEMA pressor AUTHORIZATION pressor_owner;
ALTER ROLE pressor_owner IN DATABASE pressor SET search_path = pressor;
ALTER ROLE pressor IN DATABASE pressor SET search_path = pressor;
GRANT USAGE ON SCHEMA pressor TO pressor;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE pressor FROM PUBLIC;
GRANT CONNECT ON DATABASE pressor TO pressor_owner, pressor;

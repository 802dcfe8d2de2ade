#!/bin/sh
# Run once by the postgres image when its data directory is new (mounted in /docker-entrypoint-initdb.d):
# the roles of roles.sql, with the passwords of the pgpass secret (lines host:port:db:ROLE:PASSWORD).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f /etc/pressor/roles.sql
for role in pressor_owner pressor; do
    password=$(awk -F: -v r="$role" '$4 == r { print $5; exit }' /run/secrets/pgpass)
    [ -n "$password" ] || { echo "no password for $role in the pgpass secret" >&2; exit 1; }
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v role="$role" -v password="$password" \
        -c "ALTER ROLE :\"role\" PASSWORD :'password'"
done

#!/bin/sh
# Refuses the stack's secrets when one is empty, an example or placeholder value, too short, or
# unfit for where it goes. docker-compose.yml runs this first, as the one-shot service
# `secrets-check`; every other service waits for it to exit 0. It never prints a secret.
# To check an env file by hand:  (set -a; . infra/.env; sh infra/check-secrets.sh)
set -u

MIN_LENGTH=12
EXAMPLE_TOKEN=0123456789abcdef0123456789abcdef01234567  # the token infra/.env.example once shipped
status=0

refuse() {  # name, what is wrong, how to make a good one
    echo "secrets-check: $1 in infra/.env $2; nothing was started. Set $1 to $3, then run 'docker compose up -d' again." >&2
    status=1
}

# name, how to make a good one; sets `value` and returns 1 (after saying why) when it is refused
usable() {
    eval "value=\${$1-}"
    lower=$(printf '%s' "$value" | tr 'A-Z' 'a-z')
    case $lower in
        "") refuse "$1" "is empty" "$2"; return 1 ;;
        change-me* | change_me* | changeme* | replace-me* | replace_me* | replaceme* | *example* | "<"*">" | \
            password | secret | admin | attnloop | "$EXAMPLE_TOKEN")
            refuse "$1" "is an example value" "$2"; return 1 ;;
    esac
    return 0
}

for name in S3_SECRET_KEY LABEL_STUDIO_PASSWORD SERVING_TOKEN GRAFANA_ADMIN_PASSWORD; do
    how="a new value of at least $MIN_LENGTH characters (e.g. the output of 'openssl rand -hex 20')"
    if usable "$name" "$how" && [ "${#value}" -lt "$MIN_LENGTH" ]; then
        refuse "$name" "is shorter than $MIN_LENGTH characters" "$how"
    fi
done

# the Postgres password goes into connection URLs (MLflow's, Prefect's): URL-safe characters only
how="a new value of at least $MIN_LENGTH characters from A-Z a-z 0-9 . _ ~ - (e.g. the output of 'openssl rand -hex 24')"
if usable POSTGRES_PASSWORD "$how"; then
    case $value in
        *[!A-Za-z0-9._~-]*) refuse POSTGRES_PASSWORD "has characters other than A-Z a-z 0-9 . _ ~ -" "$how" ;;
        *) [ "${#value}" -ge "$MIN_LENGTH" ] || refuse POSTGRES_PASSWORD "is shorter than $MIN_LENGTH characters" "$how" ;;
    esac
fi

# Label Studio's legacy API token: 40 hexadecimal characters
how="a new token of 40 hexadecimal characters (the output of 'openssl rand -hex 20')"
if usable LABEL_STUDIO_TOKEN "$how"; then
    case $value in
        *[!0-9a-f]*) refuse LABEL_STUDIO_TOKEN "is not 40 hexadecimal characters" "$how" ;;
        *) [ "${#value}" -eq 40 ] || refuse LABEL_STUDIO_TOKEN "is not 40 hexadecimal characters" "$how" ;;
    esac
fi

exit "$status"

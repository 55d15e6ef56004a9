#!/bin/sh
# Entrypoint of the compose `grafana` service; it ends by exec'ing the image's /run.sh.
#
# The dashboard is served to anonymous viewers, so Grafana needs no password to be useful.
# GRAFANA_ADMIN_PASSWORD (from .env) set: the admin logs in with it, as Grafana does by
# default. Unset or empty: nobody can log in, instead of everyone with Grafana's default
# "admin"/"admin": the login form is off, basic auth is refused, and the admin account
# gets a random password that is never shown.
# Grafana applies GF_SECURITY_ADMIN_PASSWORD only when it creates its database (the first
# start on a fresh `grafana` volume); to set one later, see README.md "docker compose".
set -eu

if [ -n "${GRAFANA_ADMIN_PASSWORD:-}" ]; then
  GF_SECURITY_ADMIN_PASSWORD="$GRAFANA_ADMIN_PASSWORD"
else
  GF_AUTH_DISABLE_LOGIN_FORM=true
  GF_AUTH_BASIC_ENABLED=false
  GF_SECURITY_ADMIN_PASSWORD="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export GF_AUTH_DISABLE_LOGIN_FORM GF_AUTH_BASIC_ENABLED
fi
export GF_SECURITY_ADMIN_PASSWORD
unset GRAFANA_ADMIN_PASSWORD
exec "$@"

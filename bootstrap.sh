#!/usr/bin/env bash
# Sets a fresh machine up: OpenSSH (the sandbox hosts are real sshd processes) and this project in .venv.
# With --test, also what the test suite needs: PostgreSQL (Debian's; the tests start their own throwaway cluster).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"
with_tests=0
[ "${1-}" = "--test" ] && with_tests=1

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v ps >/dev/null || need+=(procps)
command -v setsid >/dev/null || need+=(util-linux)
if [ $with_tests -eq 1 ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    need+=(postgresql postgresql-contrib)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "bootstrap: installing ${need[*]} (apt-get)" >&2
        export DEBIAN_FRONTEND=noninteractive
        # No system services: the tests start their own sshd and PostgreSQL processes.
        policy_added=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_added=1
        fi
        mkdir -p /etc/postgresql-common
        [ -e /etc/postgresql-common/createcluster.conf ] || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
        apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
        if [ $policy_added -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    else
        echo "bootstrap: please install ${need[*]} (e.g. sudo apt-get install -y ${need[*]})" >&2
        exit 1
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import flows, steps, deployments, prefect, paramiko, pytest_timeout, schemathesis, psycopg, hypothesis, pydantic_settings, tomli_w, psutil, ruff, mypy" 2>/dev/null; then
    echo "bootstrap: installing the project and its test tools into .venv (pip)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
fi
# Our modules' bytecode, as pip writes it for an installed package's: an editable install compiles nothing, and where
# PYTHONDONTWRITEBYTECODE is set every run compiled ~60 modules again (~0.1 s of each CLI start). Stale files are
# recompiled by Python itself (their source's mtime is in them).
.venv/bin/python -m compileall -q flows steps deployments >/dev/null || true
# The CLI's local Prefect server: its database migrated now, once, so that the first run's server starts without
# Prefect's 100-odd migrations (under $OCP_RESTART_HOME/prefect; `ocp-restart prefect status|stop`).
.venv/bin/ocp-restart prefect prepare || echo "bootstrap: could not prepare the local Prefect server's database" >&2
echo "bootstrap: ready (.venv/bin/ocp-restart)" >&2

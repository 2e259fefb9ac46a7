#!/usr/bin/env bash
# Quick start: run `imagefactory serve` against the local PostgreSQL and
# submit a build with curl, end to end. Needs cargo, curl and jq.
#
#   scripts/quickstart.sh            # builds, starts the server, submits, stops
#   KEEP_RUNNING=1 scripts/quickstart.sh   # leave the server running afterwards
#
# Nothing runs the build yet (the dispatcher comes next): it stays `queued`.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo curl jq; do
    command -v "$tool" >/dev/null || { echo "quickstart needs $tool" >&2; exit 1; }
done

export IF_LISTEN_ADDR="${IF_LISTEN_ADDR:-127.0.0.1:8080}"
export IF_DATABASE_URL="${IF_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/imagefactory_quickstart}"
export IF_ADMIN_TOKEN="${IF_ADMIN_TOKEN:-admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')}"
export IF_SECRET_KEY="${IF_SECRET_KEY:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}"
API="http://${IF_LISTEN_ADDR}/api/v1"

cargo build --quiet --locked -p imagefactory
./target/debug/imagefactory serve &
SERVER=$!
if [ -z "${KEEP_RUNNING:-}" ]; then
    trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT
fi
for _ in $(seq 1 100); do
    curl -fsS "http://${IF_LISTEN_ADDR}/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://${IF_LISTEN_ADDR}/readyz" >/dev/null

call() { # method path token [json]
    local out
    out=$(curl -sS -X "$1" "${API}$2" -H "Authorization: Bearer $3" \
        ${4:+-H 'Content-Type: application/json' -d "$4"} -w '\n%{http_code}')
    local code=${out##*$'\n'}
    local body=${out%$'\n'*}
    if [ "$code" -ge 400 ]; then echo "$1 $2 -> $code: $body" >&2; exit 1; fi
    printf '%s' "$body"
}

suffix=$(date +%s)
tenant=$(call POST /tenants "$IF_ADMIN_TOKEN" "{\"name\": \"demo-$suffix\"}" | jq -r .id)
token=$(call POST "/tenants/$tenant/tokens" "$IF_ADMIN_TOKEN" '{"name": "quickstart", "role": "admin"}' | jq -r .token)
provider=$(call POST /providers "$token" '{"name": "local", "provider_type": "local"}' | jq -r .id)
project=$(call POST /projects "$token" '{"name": "hello", "git_url": "https://github.com/docker-library/hello-world.git", "default_branch": "master"}' | jq -r .id)
build=$(call POST /builds "$token" "{\"project_id\": \"$project\", \"method\": \"docker\", \"infrastructure_type\": \"local\", \"infrastructure_provider_id\": \"$provider\", \"image\": \"127.0.0.1:5000/hello:latest\"}")
build_id=$(jq -r .id <<<"$build")
echo "submitted build $build_id:"
call GET "/builds/$build_id" "$token" | jq '{id, status, method, git_url, git_ref, image}'
echo "tenant token (shown once): $token"
if [ -n "${KEEP_RUNNING:-}" ]; then
    echo "server running as pid $SERVER at http://${IF_LISTEN_ADDR}"
fi

#!/bin/sh
# Enqueue a job over dtq's HTTP API and wait for its result, with curl.
#   DTQ_URL    where `dtq serve` listens (default http://127.0.0.1:8080)
#   DTQ_TOKEN  a token from its --token-file
set -eu
url=${DTQ_URL:-http://127.0.0.1:8080}
auth="Authorization: Bearer ${DTQ_TOKEN:?set DTQ_TOKEN}"

# One job (an array enqueues many); the answer has its id.
curl -fsS -H "$auth" -H 'Content-Type: application/json' \
  -d '{"kind":"echo","queue":"default","payload":{"greeting":"hello from curl"}}' \
  "$url/v1/jobs"
echo
# Or choose the id yourself, then wait up to 30 s for the job to finish.
curl -fsS -H "$auth" -H 'Content-Type: application/json' \
  -d '{"kind":"echo","id":"curl-example-1","payload":{"greeting":"hello from curl"}}' \
  "$url/v1/jobs" >/dev/null
curl -fsS -H "$auth" "$url/v1/jobs/curl-example-1?queue=default&wait=30s"
echo

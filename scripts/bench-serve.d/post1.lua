-- wrk: POST /v1/jobs of one job, keep-alive.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"kind":"noop"}'

"""Enqueue a job over dtq's HTTP API and wait for its result (Python, standard library only).

    DTQ_URL    where `dtq serve` listens (default http://127.0.0.1:8080)
    DTQ_TOKEN  a token from its --token-file
"""
import json
import os
import urllib.error
import urllib.request

URL = os.environ.get("DTQ_URL", "http://127.0.0.1:8080")
TOKEN = os.environ["DTQ_TOKEN"]


def call(method, path, body=None):
    req = urllib.request.Request(
        URL + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=40) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        # Every error is {"error": {"code", "message", "field"?}}.
        raise SystemExit(f"{method} {path}: {e.code} {json.load(e)['error']['message']}")


# One job (a list of jobs gets a list of answers, one per job, in order).
sent = call("POST", "/v1/jobs", {"kind": "echo", "queue": "default", "payload": {"greeting": "hello from Python"}})
print("enqueued", sent["id"], sent["status"])
# Wait up to 30 s for it to finish: the answer is the job, with its result.
job = call("GET", f"/v1/jobs/{sent['id']}?queue=default&wait=30s")
print(job["state"], job["result"])

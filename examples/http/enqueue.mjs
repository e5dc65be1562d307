// Enqueue a job over dtq's HTTP API and wait for its result (Node 18+, built-in fetch).
//   DTQ_URL    where `dtq serve` listens (default http://127.0.0.1:8080)
//   DTQ_TOKEN  a token from its --token-file
const url = process.env.DTQ_URL ?? "http://127.0.0.1:8080";
const headers = { Authorization: `Bearer ${process.env.DTQ_TOKEN}`, "Content-Type": "application/json" };

async function call(method, path, body) {
  const res = await fetch(url + path, { method, headers, body: body && JSON.stringify(body) });
  const answer = await res.json();
  // Every error is {"error": {"code", "message", "field"?}}.
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${answer.error.message}`);
  return answer;
}

// One job (an array of jobs gets an array of answers, one per job, in order).
const sent = await call("POST", "/v1/jobs", { kind: "echo", queue: "default", payload: { greeting: "hello from Node" } });
console.log("enqueued", sent.id, sent.status);
// Wait up to 30 s for it to finish: the answer is the job, with its result.
const job = await call("GET", `/v1/jobs/${sent.id}?queue=default&wait=30s`);
console.log(job.state, job.result);

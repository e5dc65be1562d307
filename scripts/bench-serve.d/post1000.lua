-- wrk: POST /v1/jobs of a 1,000-job array.
local jobs = {}
for i = 1, 1000 do jobs[i] = '{"kind":"noop"}' end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "[" .. table.concat(jobs, ",") .. "]"

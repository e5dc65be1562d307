//! `POST /v1/jobs` (produce's validation, batched script calls shared by
//! concurrent requests) and `GET /v1/jobs/{id}` (with `?wait=`).

use super::*;

impl Api {
    pub(super) async fn enqueue(&self, broker: &Broker, body: &[u8], q: &[(String, String)]) -> Answer {
        let default_queue =
            queue_param(param(q, "queue"), "query parameter queue")?.unwrap_or_else(|| "default".into());
        let value = parse_json(body)?;
        let (items, single) = match value {
            Value::Array(items) => (items, false),
            other => (vec![other], true),
        };
        if items.is_empty() {
            return Err(invalid("no job specs"));
        }
        if items.len() > MAX_ITEMS {
            return Err(invalid(format!("{} jobs in one request; at most {MAX_ITEMS}", items.len())));
        }
        let mut jobs = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let size = item.to_string().len();
            if size > crate::job::MAX_SPEC_BYTES {
                return Err(invalid(format!("item {} (counting from 1): {size} bytes, over the 1 MiB limit", i + 1)));
            }
            let spec = crate::job::spec_from_value(item).map_err(|e| {
                let at = if single { String::new() } else { format!("item {} (counting from 1): ", i + 1) };
                ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_job",
                    message: format!("{at}{e} (nothing was enqueued)"),
                    field: e.field.clone(),
                }
            })?;
            let queue = spec.queue.clone().unwrap_or_else(|| default_queue.clone());
            let defaults = Defaults { queue: queue.clone(), max_retries: 3, delay: None, idempotency_key: None };
            jobs.push((queue.clone(), defaults.new_job(broker, &queue, spec)));
        }
        // One batched request per queue, in order; concurrent requests share
        // script calls.
        let enqueuer = self.enqueuer.get().expect("set with the broker");
        let order: Vec<(String, String)> = jobs.iter().map(|(q, j)| (q.clone(), j.id.clone())).collect();
        let fresh = crate::group::call_per_group(jobs, |queue, js| enqueuer.call(queue, js)).await?;
        let out: Vec<Value> = order
            .iter()
            .zip(fresh)
            .map(|((queue, id), ok)| {
                json!({"id": id, "queue": queue, "status": if ok { "enqueued" } else { "duplicate" }})
            })
            .collect();
        let v = if single { out.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(out) };
        Ok((StatusCode::OK, v))
    }

    pub(super) async fn job(&self, broker: &Broker, id: &str, q: &[(String, String)]) -> Answer {
        let queue = queue_param(param(q, "queue"), "query parameter queue")?;
        let wait = duration_param(q, "wait")?.map(|d| d.min(MAX_WAIT));
        let deadline = Instant::now() + wait.unwrap_or_default();
        let mut poll = Duration::from_millis(20);
        loop {
            let mut found = broker.find_job(id, queue.as_deref()).await?;
            let job = match found.len() {
                0 => return Err(err(StatusCode::NOT_FOUND, "not_found", format!("job {id:?} not found"))),
                1 => found.remove(0),
                _ => {
                    let qs: Vec<&str> = found.iter().map(|j| j.queue.as_str()).collect();
                    return Err(err(
                        StatusCode::CONFLICT,
                        "ambiguous",
                        format!("job {id:?} is in several queues ({}); say which with ?queue=", qs.join(", ")),
                    ));
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if job.is_finished() || left.is_zero() {
                return Ok((StatusCode::OK, serde_json::to_value(job).expect("jobs serialize")));
            }
            tokio::time::sleep(poll.min(left)).await;
            poll = (poll * 2).min(Duration::from_secs(1));
        }
    }
}

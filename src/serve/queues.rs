//! The queue routes: stats of every queue, a state's jobs by cursor, and
//! the actions (requeue, cancel, delete, pause, resume).

use super::*;

impl Api {
    pub(super) async fn list(&self, broker: &Broker, queue: &str, q: &[(String, String)]) -> Answer {
        self.known(broker, queue).await?;
        let state: JobState = param(q, "state")
            .ok_or_else(|| invalid("query parameter state is required"))?
            .parse()
            .map_err(|e: String| invalid(format!("state: {e}")))?;
        let limit = match param(q, "limit") {
            None => PAGE.0,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|&n| (1..=PAGE.1).contains(&n))
                .ok_or_else(|| invalid(format!("limit: expected an integer from 1 to {}", PAGE.1)))?,
        };
        let cursor: Option<Cursor> =
            param(q, "cursor").map(|c| c.parse().map_err(|e: String| invalid(format!("cursor: {e}")))).transpose()?;
        let nonempty = |name: &str| param(q, name).filter(|v| !v.is_empty()).map(str::to_string);
        let filter = Filter { kind: nonempty("kind"), search: nonempty("search"), since: duration_param(q, "since")? };
        let page = broker.finished(queue, state, &filter, cursor.as_ref(), limit).await?;
        Ok((StatusCode::OK, json!({"jobs": page.jobs, "next_cursor": page.next.map(|c| c.to_string())})))
    }

    pub(super) async fn act(&self, broker: &Broker, queue: &str, action: &str, body: &[u8]) -> Answer {
        let answer = self.act_now(broker, queue, action, body).await;
        self.sampler.invalidate().await;
        answer
    }

    async fn act_now(&self, broker: &Broker, queue: &str, action: &str, body: &[u8]) -> Answer {
        self.known(broker, queue).await?;
        let k = broker.keys(queue);
        if action == "pause" || action == "resume" {
            let pause = action == "pause";
            let was = broker.is_paused(&k).await?;
            if was != pause {
                broker.set_paused(&k, pause).await?;
                if !pause {
                    let _: Result<i64, _> = fred::interfaces::ListInterface::lpush(broker.client(), &k.signal, 1).await;
                }
            }
            return Ok((StatusCode::OK, json!({"queue": queue, "paused": pause, "changed": was != pause})));
        }
        let v = if body.is_empty() { json!({}) } else { parse_json(body)? };
        let ids = v.get("ids");
        let all = v.get("all").and_then(Value::as_bool).unwrap_or(false);
        match (ids, all) {
            (Some(Value::Array(ids)), false) => {
                if ids.len() > MAX_ITEMS {
                    return Err(invalid(format!("{} ids in one request; at most {MAX_ITEMS}", ids.len())));
                }
                let ids: Vec<String> = ids
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ApiError { field: Some("ids".into()), ..invalid("ids must be strings") })?;
                let (changed, results) = act_on(broker, &k, action, &ids).await?;
                Ok((StatusCode::OK, json!({"queue": queue, "changed": changed, "results": results})))
            }
            (None, true) => {
                let state = v
                    .get("state")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError { field: Some("state".into()), ..invalid("\"all\" needs a \"state\"") })?;
                let allowed: &[&str] = match action {
                    "requeue" => &["dead"],
                    "cancel" => &["pending", "scheduled"],
                    _ => &["pending", "scheduled", "dead", "completed"],
                };
                if !allowed.contains(&state) {
                    return Err(ApiError {
                        field: Some("state".into()),
                        ..invalid(format!("{action} of all jobs works on state {}", allowed.join(" or ")))
                    });
                }
                let filter = body_filter(&v)?;
                if filter.kind.is_some() || filter.search.is_some() || filter.since.is_some() {
                    return self.act_on_matching(broker, queue, action, state, &filter).await;
                }
                let n = crate::cmd::admin::count(&broker.queue_stats(queue).await?, state);
                let changed = if action == "requeue" {
                    crate::cmd::admin::drain(n, |limit| broker.requeue(&k, &[], limit)).await?
                } else {
                    crate::cmd::admin::drain(n, |limit| broker.purge(&k, state, limit)).await?
                };
                Ok((StatusCode::OK, json!({"queue": queue, "changed": changed})))
            }
            _ => Err(invalid(
                "the body is {\"ids\":[...]} or {\"all\":true,\"state\":S[,\"kind\",\"search\",\"since\"]}",
            )),
        }
    }

    /// `{"all":true,"state",…filter}`: every job of the state that matches,
    /// found first (at most [`MAX_MATCHING`], by the same bounded reads as
    /// a listing) and then changed by id, so jobs that do not match are
    /// never touched.
    async fn act_on_matching(
        &self,
        broker: &Broker,
        queue: &str,
        action: &str,
        state: &str,
        filter: &Filter,
    ) -> Answer {
        let k = broker.keys(queue);
        let set: JobState = state.parse().map_err(|e: String| invalid(format!("state: {e}")))?;
        let matching = broker.finished_matching(queue, set, filter, MAX_MATCHING + 1).await?;
        if matching.len() > MAX_MATCHING {
            return Err(ApiError {
                field: Some("all".into()),
                ..invalid(format!("more than {MAX_MATCHING} jobs match; narrow the filter or act on the whole state"))
            });
        }
        let ids: Vec<String> = matching.into_iter().map(|j| j.id).collect();
        let mut changed = 0;
        for chunk in ids.chunks(MAX_ITEMS) {
            changed += act_on(broker, &k, action, chunk).await?.0;
        }
        Ok((StatusCode::OK, json!({"queue": queue, "changed": changed, "matched": ids.len()})))
    }
}

/// Most jobs one filtered "all" action changes.
pub const MAX_MATCHING: usize = 100_000;

/// The filter fields of an action's body (`kind`, `search`, `since`).
fn body_filter(v: &Value) -> Result<Filter, ApiError> {
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError { field: Some(name.into()), ..invalid(format!("{name} must be a string")) }),
        }
    };
    let since = text("since")?
        .map(|s| crate::job::parse_duration(&s).map_err(|e| ApiError { field: Some("since".into()), ..invalid(e) }))
        .transpose()?;
    Ok(Filter { kind: text("kind")?, search: text("search")?, since })
}

/// Requeues, cancels or deletes `ids` one by one (concurrently): how many
/// changed, and each id's outcome.
async fn act_on(
    broker: &Broker,
    k: &crate::keys::QueueKeys,
    action: &str,
    ids: &[String],
) -> Result<(u64, Vec<Value>), ApiError> {
    let outcomes = futures::future::try_join_all(ids.iter().map(|id| async move {
        Ok::<_, BrokerError>(match action {
            "requeue" => match broker.requeue(k, std::slice::from_ref(id), 1).await? {
                1 => "requeued",
                _ => "not_dead",
            },
            "cancel" => outcome(broker.cancel(k, id).await?, "cancelled"),
            _ => outcome(broker.delete_job(k, id).await?, "deleted"),
        })
    }))
    .await?;
    let changed = outcomes.iter().filter(|o| matches!(**o, "requeued" | "cancelled" | "deleted")).count() as u64;
    let results = ids.iter().zip(outcomes).map(|(id, outcome)| json!({"id": id, "outcome": outcome})).collect();
    Ok((changed, results))
}

/// The word for a cancel or delete outcome; `done` when it happened.
fn outcome(c: Cancel, done: &'static str) -> &'static str {
    match c {
        Cancel::Cancelled => done,
        Cancel::Running => "running",
        Cancel::Dead => "dead",
        Cancel::Completed => "completed",
        Cancel::TooDeep => "too_deep",
        Cancel::NotFound => "not_found",
    }
}

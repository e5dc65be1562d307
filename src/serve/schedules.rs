//! The schedule routes: list, put (add or change), delete, trigger, pause
//! and resume — what `dtq admin schedule` does, with its validation.

use super::*;
use crate::schedule::{Schedule, ScheduleError, Schedules};

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Invalid { field, message, .. } => ApiError { field: Some(field), ..invalid(message) },
            ScheduleError::NotFound(name) => {
                err(StatusCode::NOT_FOUND, "not_found", format!("no schedule named {name:?}"))
            }
            ScheduleError::Exists(name) => err(StatusCode::CONFLICT, "exists", format!("schedule {name:?} exists")),
            ScheduleError::Broker(b) => b.into(),
        }
    }
}

impl Api {
    pub(super) async fn schedules(&self, broker: &Broker) -> Answer {
        Ok((StatusCode::OK, json!({ "schedules": Schedules::new(broker).list().await? })))
    }

    /// `PUT /v1/schedules/{name}`: the body is the definition (its `name`,
    /// if given, must be the path's).
    pub(super) async fn put_schedule(&self, broker: &Broker, name: &str, body: &[u8]) -> Answer {
        let mut v = parse_json(body)?;
        let Some(obj) = v.as_object_mut() else { return Err(invalid("the body is a schedule object")) };
        match obj.get("name") {
            None => {
                obj.insert("name".into(), name.into());
            }
            Some(Value::String(n)) if n == name => {}
            Some(_) => return Err(ApiError { field: Some("name".into()), ..invalid("name must be the path's") }),
        }
        let s: Schedule = serde_json::from_value(v).map_err(|e| invalid(format!("the schedule: {e}")))?;
        let timing = Schedules::check(std::slice::from_ref(&s))?.remove(0);
        let schedules = Schedules::new(broker);
        let old = schedules.get(name).await?;
        if old.as_ref() != Some(&s) {
            schedules.put(&s, &timing).await?;
        }
        Ok((StatusCode::OK, json!({"name": name, "created": old.is_none(), "changed": old.as_ref() != Some(&s)})))
    }

    pub(super) async fn delete_schedule(&self, broker: &Broker, name: &str) -> Answer {
        if !Schedules::new(broker).remove(name).await? {
            return Err(ScheduleError::NotFound(name.into()).into());
        }
        Ok((StatusCode::OK, json!({"name": name, "removed": true})))
    }

    pub(super) async fn schedule_action(&self, broker: &Broker, name: &str, action: &str) -> Answer {
        let schedules = Schedules::new(broker);
        if action == "trigger" {
            let (id, queue) = schedules.trigger(name).await?;
            return Ok((StatusCode::OK, json!({"name": name, "id": id, "queue": queue, "status": "enqueued"})));
        }
        let pause = action == "pause";
        let changed = schedules.set_paused(name, pause).await?;
        Ok((StatusCode::OK, json!({"name": name, "paused": pause, "changed": changed})))
    }
}

//! Periodic jobs: schedules kept in Redis, and the ticks the reaper leader
//! enqueues from them.
//!
//! A schedule is a cron expression in an IANA time zone (parsed by the
//! `croner` crate; zones from `chrono-tz`, whose database is compiled in) or
//! a fixed interval (`every`, aligned to the Unix epoch). Each tick becomes a
//! job with the id `cron:NAME:<tick, RFC 3339 UTC>`, so however many reapers
//! run and however often the leader changes, a tick is enqueued at most
//! once: a second enqueue of the same id is refused as a duplicate. After
//! enqueueing, the leader stores the schedule's watermark (the latest tick
//! it has dealt with), so a new leader neither repeats nor skips a tick.
//!
//! Daylight saving (the contract's rule): cron fields are matched against
//! the zone's local wall clock, each local time once. A local time that
//! occurs twice runs at its first occurrence; one that does not exist runs
//! at the first valid instant after it (the end of the gap).
//!
//! Keys (`keys.rs`): `ns:schedules` HASH name → definition (JSON),
//! `ns:schedules:state` HASH name → watermark and last run (JSON),
//! `ns:schedules:due` ZSET name → next run (ms; absent while paused). The
//! leader reads only the due part of the ZSET, so 10,000 schedules cost it
//! what is due, not a scan.

use crate::broker::{Broker, BrokerError};
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use fred::interfaces::{HashesInterface, SortedSetsInterface};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Most missed ticks `catch_up: all` enqueues.
pub const MAX_CATCH_UP: usize = 100;
/// Most schedules one `run_due` call handles; a leader cycle calls it up
/// to 20 times (20,000 schedules), the rest wait for the next cycle.
pub const MAX_DUE_PER_CYCLE: usize = 1000;
/// Most schedules a namespace holds.
pub const MAX_SCHEDULES: usize = 100_000;

/// What to do with ticks missed while no reaper ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Skip them (the default).
    #[default]
    None,
    /// Enqueue only the latest missed tick.
    One,
    /// Enqueue every missed tick (at most [`MAX_CATCH_UP`], the latest).
    All,
}

impl std::str::FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(CatchUp::None),
            "one" => Ok(CatchUp::One),
            "all" => Ok(CatchUp::All),
            other => Err(format!("catch-up {other:?}: one of none, one, all")),
        }
    }
}

/// A schedule's definition, as stored and as `apply --file` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Unique in the namespace: `A-Z a-z 0-9 _ . -`, 1 to 128 characters.
    pub name: String,
    /// A cron expression: 5 fields, or 6 with seconds first, or an `@`
    /// shortcut (`@hourly`, `@daily`, …). Exclusive with `every`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA zone the cron fields are read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// A fixed interval (humantime, ≥ 1 s), aligned to the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// The kind of the jobs it enqueues.
    pub kind: String,
    /// Their payload (default `{}`).
    #[serde(default = "empty_object")]
    pub payload: Value,
    /// Their queue (default `default`).
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Their retry limit (the queue default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Their timeout (humantime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// What to do with ticks missed while no reaper ran.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// A paused schedule enqueues nothing (its missed ticks are skipped).
    #[serde(default)]
    pub paused: bool,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn default_queue() -> String {
    "default".into()
}

/// When a schedule ticks: a parsed, checked [`Schedule`].
#[derive(Debug, Clone)]
pub enum Timing {
    /// Cron fields matched on the wall clock of the zone.
    Cron(Box<Cron>, Tz),
    /// Every so many ms since the epoch.
    Every(u64),
}

/// What a schedule has done, stored apart from its definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Every tick up to here has been dealt with (enqueued or skipped), ms.
    pub watermark: Option<u64>,
    /// The latest tick enqueued (ms) and its job.
    pub last_run: Option<u64>,
    /// The id of that job.
    pub last_job_id: Option<String>,
    /// When the schedule was first stored (ms): ticks before it never run.
    pub created: u64,
}

impl Schedule {
    /// Checks every field and parses the timing; the message names the field.
    pub fn timing(&self) -> Result<Timing, (String, String)> {
        let field = |f: &str, e: String| (f.to_string(), e);
        crate::job::validate_queue_name(&self.name).map_err(|e| field("name", e.replace("queue name", "name")))?;
        crate::job::validate_queue_name(&self.queue).map_err(|e| field("queue", e))?;
        // The jobs it makes go through produce's validation.
        crate::job::spec_from_value(self.spec_value("cron:x:2026-01-01T00:00:00Z"))
            .map_err(|e| (e.field.clone().unwrap_or_else(|| "kind".into()), e.to_string()))?;
        match (&self.cron, &self.every) {
            (Some(_), Some(_)) => Err(field("every", "give either cron or every, not both".into())),
            (None, None) => Err(field("cron", "give cron (with tz) or every".into())),
            (None, Some(every)) => {
                if self.tz.is_some() {
                    return Err(field("tz", "tz goes with cron; every counts real time".into()));
                }
                let d = crate::job::parse_duration(every).map_err(|e| field("every", e))?;
                if d < Duration::from_secs(1) || d.subsec_millis() != 0 {
                    return Err(field("every", format!("{every:?}: at least 1s, in whole seconds")));
                }
                Ok(Timing::Every(d.as_millis() as u64))
            }
            (Some(expr), None) => {
                let tz: Tz = match &self.tz {
                    None => Tz::UTC,
                    Some(z) => z.parse().map_err(|_| {
                        field("tz", format!("unknown time zone {z:?} (an IANA name such as Europe/Berlin)"))
                    })?,
                };
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(expr)
                    .map_err(|e| field("cron", format!("{expr:?}: {e}")))?;
                // A pattern that never matches (Feb 30) is refused now, not at the first tick.
                let probe = Timing::Cron(Box::new(cron), tz);
                if probe.next_after(crate::job::now_ms()).is_none() {
                    return Err(field("cron", format!("{expr:?} never matches")));
                }
                Ok(probe)
            }
        }
    }

    /// The job spec of one tick (`produce`'s format).
    pub fn spec_value(&self, id: &str) -> Value {
        let mut v = serde_json::json!({"kind": self.kind, "payload": self.payload, "queue": self.queue, "id": id});
        if let Some(n) = self.max_retries {
            v["max_retries"] = n.into();
        }
        if let Some(t) = &self.timeout {
            v["timeout"] = t.as_str().into();
        }
        v
    }

    /// The id of the job of the tick at `ms`.
    pub fn job_id(&self, tick_ms: u64) -> String {
        format!("cron:{}:{}", self.name, rfc3339_seconds(tick_ms))
    }

    /// A human line: `0 3 * * * (Europe/Berlin)` or `every 30s`.
    pub fn describe(&self) -> String {
        match (&self.cron, &self.every) {
            (Some(c), _) => format!("{c} ({})", self.tz.as_deref().unwrap_or("UTC")),
            (_, Some(e)) => format!("every {e}"),
            _ => String::new(),
        }
    }
}

/// `2026-01-02T03:04:05Z` (ms shown only when not zero).
fn rfc3339_seconds(ms: u64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms as i64).unwrap_or_default();
    if ms.is_multiple_of(1000) {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

/// Most candidate local times looked at to find one tick (a second-level
/// pattern inside a repeated hour needs 3,600).
const MAX_STEPS: usize = 10_000;

impl Timing {
    /// The first tick strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Timing::Every(p) => Some((after_ms / p + 1) * p),
            Timing::Cron(cron, tz) => {
                let mut local = naive(tz, after_ms);
                for _ in 0..MAX_STEPS {
                    local = cron.find_next_occurrence(&as_utc(local), false).ok()?.naive_utc();
                    let at = instant(tz, local)?;
                    if at > after_ms {
                        return Some(at);
                    }
                }
                None
            }
        }
    }

    /// The latest tick at or before `at_ms`.
    pub fn at_or_before(&self, at_ms: u64) -> Option<u64> {
        match self {
            Timing::Every(p) => Some(at_ms / p * p),
            Timing::Cron(cron, tz) => {
                // From the local time of `at_ms`, itself included.
                let mut local = naive(tz, at_ms);
                let mut inclusive = true;
                for _ in 0..MAX_STEPS {
                    local = cron.find_previous_occurrence(&as_utc(local), inclusive).ok()?.naive_utc();
                    inclusive = false;
                    let t = instant(tz, local)?;
                    if t <= at_ms {
                        return Some(t);
                    }
                }
                None
            }
        }
    }
}

/// The wall-clock time of `ms` in `tz`, to the second.
fn naive(tz: &Tz, ms: u64) -> NaiveDateTime {
    let utc = DateTime::<Utc>::from_timestamp_millis(ms as i64).unwrap_or_default();
    let local = utc.with_timezone(tz).naive_local();
    chrono::Timelike::with_nanosecond(&local, 0).unwrap_or(local)
}

/// Cron matching works on a wall clock; croner gets it as a UTC time.
fn as_utc(local: NaiveDateTime) -> DateTime<Utc> {
    Utc.from_utc_datetime(&local)
}

/// The instant (ms) of wall-clock `local` in `tz`: its first occurrence if
/// it occurs twice; the end of the gap if it does not exist.
fn instant(tz: &Tz, local: NaiveDateTime) -> Option<u64> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.timestamp_millis() as u64),
        LocalResult::Ambiguous(first, _) => Some(first.timestamp_millis() as u64),
        LocalResult::None => {
            // Gaps are whole minutes long and start on a minute: the first
            // minute that exists again is where the gap ends.
            let minute = chrono::Timelike::with_second(&local, 0)?;
            (1..=24 * 60).find_map(|m| match tz.from_local_datetime(&(minute + chrono::Duration::minutes(m))) {
                LocalResult::Single(t) => Some(t.timestamp_millis() as u64),
                LocalResult::Ambiguous(first, _) => Some(first.timestamp_millis() as u64),
                LocalResult::None => None,
            })
        }
    }
}

/// The ticks to enqueue at `now` for a schedule whose ticks up to
/// `watermark` are dealt with, and the new watermark. A tick later than
/// `grace` was missed (no reaper ran): the catch-up policy decides.
pub fn due_ticks(timing: &Timing, catch_up: CatchUp, watermark: u64, now: u64, grace: u64) -> (Vec<u64>, u64) {
    let boundary = now.saturating_sub(grace).max(watermark);
    // On time: in (boundary, now].
    let mut on_time = Vec::new();
    let mut t = timing.next_after(boundary);
    while let Some(tick) = t.filter(|&x| x <= now) {
        on_time.push(tick);
        t = timing.next_after(tick);
    }
    // Missed: in (watermark, boundary], newest first, as many as the policy takes.
    let take = match catch_up {
        CatchUp::None => 0,
        CatchUp::One => 1,
        CatchUp::All => MAX_CATCH_UP,
    };
    let mut missed = Vec::new();
    let mut cursor = boundary;
    while missed.len() < take {
        match timing.at_or_before(cursor).filter(|&x| x > watermark) {
            Some(tick) => {
                missed.push(tick);
                cursor = tick - 1;
            }
            None => break,
        }
    }
    missed.reverse();
    let new_watermark = timing.at_or_before(now).map_or(watermark, |t| t.max(watermark));
    missed.extend(on_time);
    (missed, new_watermark)
}

/// A schedule with what it has done and when it runs next.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The definition.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// RFC 3339, or `None` while paused.
    pub next_run: Option<String>,
    /// RFC 3339 of the latest tick enqueued.
    pub last_run: Option<String>,
    /// Its job's id.
    pub last_job_id: Option<String>,
    /// That job's state now (`None` if it is gone or never ran).
    pub last_state: Option<String>,
}

/// Why a schedule change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A field is invalid.
    #[error("schedule {name:?}: field {field:?}: {message}")]
    Invalid {
        /// The schedule.
        name: String,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// `add` of a name that exists.
    #[error("a schedule named {0:?} exists already (change it with schedule apply, or remove it first)")]
    Exists(String),
    /// No such schedule.
    #[error("no schedule named {0:?}")]
    NotFound(String),
    /// Redis failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

fn redis(op: &'static str) -> impl Fn(fred::error::Error) -> BrokerError {
    move |e| BrokerError::redis(op, e)
}

/// The schedules of a broker's namespace.
pub struct Schedules<'a> {
    broker: &'a Broker,
    defs: String,
    state: String,
    due: String,
}

impl<'a> Schedules<'a> {
    /// The schedules of `broker`'s namespace.
    pub fn new(broker: &'a Broker) -> Self {
        let ns = broker.namespace();
        Schedules {
            broker,
            defs: crate::keys::schedules(ns),
            state: crate::keys::schedule_state(ns),
            due: crate::keys::schedules_due(ns),
        }
    }

    /// Every schedule, by name.
    pub async fn all(&self) -> Result<std::collections::BTreeMap<String, Schedule>, BrokerError> {
        let raw: std::collections::HashMap<String, String> =
            self.broker.client().hgetall(&self.defs).await.map_err(redis("list schedules"))?;
        Ok(raw.into_iter().filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?))).collect())
    }

    /// One schedule.
    pub async fn get(&self, name: &str) -> Result<Option<Schedule>, BrokerError> {
        let raw: Option<String> = self.broker.client().hget(&self.defs, name).await.map_err(redis("read schedule"))?;
        Ok(raw.and_then(|v| serde_json::from_str(&v).ok()))
    }

    async fn state_of(&self, name: &str) -> Result<Option<State>, BrokerError> {
        let raw: Option<String> = self.broker.client().hget(&self.state, name).await.map_err(redis("read schedule"))?;
        Ok(raw.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Checks every schedule; the first invalid one is the error.
    pub fn check(list: &[Schedule]) -> Result<Vec<Timing>, ScheduleError> {
        let mut seen = std::collections::HashSet::new();
        list.iter()
            .map(|s| {
                if !seen.insert(s.name.as_str()) {
                    return Err(ScheduleError::Invalid {
                        name: s.name.clone(),
                        field: "name".into(),
                        message: "named twice".into(),
                    });
                }
                s.timing().map_err(|(field, message)| ScheduleError::Invalid { name: s.name.clone(), field, message })
            })
            .collect()
    }

    /// Stores `s` (new, or replacing a definition of that name; its
    /// watermark is kept, so a changed schedule neither repeats nor
    /// back-fills ticks) and sets its next run. A new one is refused once
    /// the namespace holds [`MAX_SCHEDULES`].
    pub async fn put(&self, s: &Schedule, timing: &Timing) -> Result<(), ScheduleError> {
        let c = self.broker.client();
        let now = crate::job::now_ms();
        let state = match self.state_of(&s.name).await? {
            Some(st) => st,
            None => {
                let n: u64 = c.hlen(&self.defs).await.map_err(redis("store schedule"))?;
                if n as usize >= MAX_SCHEDULES {
                    return Err(ScheduleError::Invalid {
                        name: s.name.clone(),
                        field: "name".into(),
                        message: format!("the namespace holds {MAX_SCHEDULES} schedules, the most it may"),
                    });
                }
                let st = State { watermark: Some(now), created: now, ..State::default() };
                let _: i64 = c
                    .hset(&self.state, (s.name.as_str(), serde_json::to_string(&st).expect("serializes")))
                    .await
                    .map_err(redis("store schedule"))?;
                st
            }
        };
        let _: i64 = c
            .hset(&self.defs, (s.name.as_str(), serde_json::to_string(s).expect("serializes")))
            .await
            .map_err(redis("store schedule"))?;
        Ok(self.set_next(s, timing, state.watermark.unwrap_or(now).max(now)).await?)
    }

    async fn set_next(&self, s: &Schedule, timing: &Timing, after: u64) -> Result<(), BrokerError> {
        let c = self.broker.client();
        if s.paused {
            let _: i64 = c.zrem(&self.due, s.name.as_str()).await.map_err(redis("store schedule"))?;
        } else if let Some(next) = timing.next_after(after) {
            let _: i64 = c
                .zadd(&self.due, None, None, false, false, (next as f64, s.name.as_str()))
                .await
                .map_err(redis("store schedule"))?;
        }
        Ok(())
    }

    /// Removes a schedule (its jobs stay); false if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, BrokerError> {
        let c = self.broker.client();
        let n: i64 = c.hdel(&self.defs, name).await.map_err(redis("remove schedule"))?;
        let _: i64 = c.hdel(&self.state, name).await.map_err(redis("remove schedule"))?;
        let _: i64 = c.zrem(&self.due, name).await.map_err(redis("remove schedule"))?;
        Ok(n > 0)
    }

    /// Pauses or resumes; whether it changed. Resuming skips the ticks of
    /// the pause (the watermark moves to now).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<bool, ScheduleError> {
        let mut s = self.get(name).await?.ok_or_else(|| ScheduleError::NotFound(name.into()))?;
        if s.paused == paused {
            return Ok(false);
        }
        s.paused = paused;
        let timing =
            s.timing().map_err(|(field, message)| ScheduleError::Invalid { name: name.into(), field, message })?;
        if !paused {
            let mut st = self.state_of(name).await?.unwrap_or_default();
            st.watermark = Some(crate::job::now_ms());
            let _: i64 = self
                .broker
                .client()
                .hset(&self.state, (name, serde_json::to_string(&st).expect("serializes")))
                .await
                .map_err(redis("store schedule"))?;
        }
        self.put(&s, &timing).await?;
        Ok(true)
    }

    /// Enqueues one job of the schedule now (id `cron:NAME:manual:<now>`);
    /// its id and queue.
    pub async fn trigger(&self, name: &str) -> Result<(String, String), ScheduleError> {
        let s = self.get(name).await?.ok_or_else(|| ScheduleError::NotFound(name.into()))?;
        let id = format!("cron:{}:manual:{}", s.name, crate::retention::rfc3339(crate::job::now_ms()));
        self.enqueue(&s, &id).await?;
        let mut st = self.state_of(name).await?.unwrap_or_default();
        st.last_job_id = Some(id.clone());
        st.last_run = Some(crate::job::now_ms());
        let _: i64 = self
            .broker
            .client()
            .hset(&self.state, (name, serde_json::to_string(&st).expect("serializes")))
            .await
            .map_err(redis("store schedule"))?;
        Ok((id, s.queue))
    }

    /// Enqueues the job `id` of `s`; false if that id exists (a tick
    /// enqueued before, by this leader or another).
    async fn enqueue(&self, s: &Schedule, id: &str) -> Result<bool, BrokerError> {
        let job = self.new_job(s, id)?;
        Ok(self.broker.enqueue(&self.broker.keys(&s.queue), &[job]).await?.first().copied().unwrap_or(false))
    }

    fn new_job(&self, s: &Schedule, id: &str) -> Result<crate::broker::NewJob, BrokerError> {
        let spec = crate::job::spec_from_value(s.spec_value(id))
            .map_err(|e| BrokerError::Reply { op: "schedule", detail: e.to_string() })?;
        let defaults =
            crate::job::Defaults { queue: s.queue.clone(), max_retries: 3, delay: None, idempotency_key: None };
        Ok(defaults.new_job(self.broker, &s.queue, spec))
    }

    /// Every schedule with its next and last run and the last job's state:
    /// three reads for all of them, then the last jobs' states, 64 at a time.
    pub async fn list(&self) -> Result<Vec<Listed>, BrokerError> {
        use futures::{StreamExt, TryStreamExt};
        let c = self.broker.client();
        let (states, due): (std::collections::HashMap<String, String>, Vec<(String, f64)>) =
            tokio::try_join!(c.hgetall(&self.state), c.zrange(&self.due, 0, -1, None, false, None, true))
                .map_err(redis("list schedules"))?;
        let next: std::collections::HashMap<String, f64> = due.into_iter().collect();
        let listed: Vec<(Schedule, State)> = self
            .all()
            .await?
            .into_iter()
            .map(|(name, s)| {
                let st = states.get(&name).and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
                (s, st)
            })
            .collect();
        futures::stream::iter(listed)
            .map(|(s, st)| async move {
                let last_state = match &st.last_job_id {
                    Some(id) => self.broker.job_in(id, &s.queue).await?.map(|j| j.state.as_str().to_string()),
                    None => None,
                };
                Ok::<_, BrokerError>((s, st, last_state))
            })
            .buffered(64)
            .map_ok(|(s, st, last_state)| Listed {
                next_run: next.get(&s.name).map(|&n| crate::retention::rfc3339(n as u64)),
                last_run: st.last_run.map(crate::retention::rfc3339),
                last_job_id: st.last_job_id,
                last_state,
                schedule: s,
            })
            .try_collect()
            .await
    }

    /// The leader's part: enqueues the due ticks of at most
    /// [`MAX_DUE_PER_CYCLE`] schedules, in a fixed number of round trips
    /// (the due names; their definitions and states; one batched enqueue
    /// per queue; the new states and next runs). Returns how many
    /// schedules were due: the caller calls again while that is the
    /// maximum. A tick later than `grace` counts as missed.
    ///
    /// Jobs are enqueued before the watermarks are written: a leader that
    /// dies in between leaves the next one to enqueue the same ids, which
    /// are refused as duplicates.
    pub async fn run_due(&self, grace: Duration) -> Result<usize, BrokerError> {
        let c = self.broker.client();
        let now = crate::job::now_ms();
        let names: Vec<String> = c
            .zrangebyscore(&self.due, f64::NEG_INFINITY, now as f64, false, Some((0, MAX_DUE_PER_CYCLE as i64)))
            .await
            .map_err(redis("due schedules"))?;
        if names.is_empty() {
            return Ok(0);
        }
        let (defs, states): (Vec<Option<String>>, Vec<Option<String>>) =
            tokio::try_join!(c.hmget(&self.defs, names.clone()), c.hmget(&self.state, names.clone()))
                .map_err(redis("due schedules"))?;
        let mut dropped: Vec<&str> = Vec::new();
        let mut due: Vec<Due> = Vec::new();
        // The jobs with their queues; for each, its schedule (index into
        // `due`) and tick.
        let mut jobs: Vec<(String, crate::broker::NewJob)> = Vec::new();
        let mut ticks_of: Vec<(usize, u64)> = Vec::new();
        for ((name, def), state) in names.iter().zip(defs).zip(states) {
            let Some(s) = def.and_then(|d| serde_json::from_str::<Schedule>(&d).ok()) else {
                dropped.push(name);
                continue;
            };
            let Ok(timing) = s.timing() else {
                tracing::warn!(schedule = %name, "schedule no longer valid; skipped until it is fixed");
                dropped.push(name);
                continue;
            };
            let mut st: State = state.and_then(|v| serde_json::from_str(&v).ok()).unwrap_or_default();
            let watermark = st.watermark.unwrap_or(st.created);
            let (ticks, new_watermark) = due_ticks(&timing, s.catch_up, watermark, now, grace.as_millis() as u64);
            let built: Result<Vec<_>, _> = ticks.iter().map(|&t| self.new_job(&s, &s.job_id(t))).collect();
            let Ok(built) = built else {
                tracing::warn!(schedule = %name, "schedule's job no longer valid; skipped until it is fixed");
                dropped.push(name);
                continue;
            };
            if let (Some(&tick), Some(job)) = (ticks.last(), built.last()) {
                st.last_run = Some(tick);
                st.last_job_id = Some(job.id.clone());
            }
            let at = due.len();
            ticks_of.extend(ticks.iter().map(|&t| (at, t)));
            jobs.extend(built.into_iter().map(|j| (s.queue.clone(), j)));
            st.watermark = Some(new_watermark);
            let next = if s.paused { None } else { timing.next_after(new_watermark.max(now)) };
            due.push(Due { schedule: s, state: st, next });
        }
        let fresh = crate::group::call_per_group(jobs, |queue, jobs| async move {
            self.broker.enqueue(&self.broker.keys(&queue), &jobs).await
        })
        .await?;
        let done = crate::job::now_ms();
        for (&(at, tick), _) in ticks_of.iter().zip(fresh).filter(|(_, fresh)| *fresh) {
            ::metrics::counter!(crate::metrics::SCHEDULE_TICKS, "schedule" => due[at].schedule.name.clone())
                .increment(1);
            ::metrics::histogram!(crate::metrics::SCHEDULE_LATENESS).record(done.saturating_sub(tick) as f64 / 1000.0);
        }
        let states: Vec<(&str, String)> = due
            .iter()
            .map(|d| (d.schedule.name.as_str(), serde_json::to_string(&d.state).expect("serializes")))
            .collect();
        let next: Vec<(f64, &str)> =
            due.iter().filter_map(|d| Some((d.next? as f64, d.schedule.name.as_str()))).collect();
        dropped.extend(due.iter().filter(|d| d.next.is_none()).map(|d| d.schedule.name.as_str()));
        if !states.is_empty() {
            let _: i64 = c.hset(&self.state, states).await.map_err(redis("store schedule"))?;
        }
        if !next.is_empty() {
            let _: i64 = c.zadd(&self.due, None, None, false, false, next).await.map_err(redis("store schedule"))?;
        }
        if !dropped.is_empty() {
            let _: i64 = c.zrem(&self.due, dropped).await.map_err(redis("due schedules"))?;
        }
        Ok(names.len())
    }

    /// The time until the next schedule is due, if any is.
    pub async fn next_due(&self) -> Result<Option<Duration>, BrokerError> {
        let next: Vec<(String, f64)> = self
            .broker
            .client()
            .zrange(&self.due, 0, 0, None, false, None, true)
            .await
            .map_err(redis("due schedules"))?;
        Ok(next.first().map(|(_, at)| Duration::from_millis((*at as u64).saturating_sub(crate::job::now_ms()))))
    }
}

/// A due schedule, as `run_due` leaves it.
struct Due {
    schedule: Schedule,
    state: State,
    next: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64
    }

    fn cron(expr: &str, tz: &str) -> Timing {
        Schedule {
            name: "t".into(),
            cron: Some(expr.into()),
            tz: Some(tz.into()),
            every: None,
            kind: "noop".into(),
            payload: Value::Null,
            queue: "default".into(),
            max_retries: None,
            timeout: None,
            catch_up: CatchUp::None,
            paused: false,
        }
        .timing()
        .unwrap()
    }

    /// The ticks in (from, to].
    fn ticks(t: &Timing, from: &str, to: &str) -> Vec<String> {
        let (mut at, end) = (ms(from), ms(to));
        let mut out = Vec::new();
        while let Some(n) = t.next_after(at).filter(|&n| n <= end) {
            out.push(rfc3339_seconds(n));
            at = n;
        }
        out
    }

    #[test]
    fn a_repeated_local_time_runs_once_at_its_first_occurrence() {
        // New York falls back at 2026-11-01 02:00 EDT → 01:00 EST.
        let t = cron("30 1 * * *", "America/New_York");
        assert_eq!(
            ticks(&t, "2026-10-31T00:00:00Z", "2026-11-02T12:00:00Z"),
            [
                "2026-10-31T05:30:00Z",
                "2026-11-01T05:30:00Z", // 01:30 EDT, the first 01:30; not 06:30Z (01:30 EST)
                "2026-11-02T06:30:00Z",
            ]
        );
        // Berlin falls back at 2026-10-25 03:00 CEST → 02:00 CET.
        let t = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&t, "2026-10-24T00:00:00Z", "2026-10-26T12:00:00Z"),
            [
                "2026-10-24T00:30:00Z",
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-26T01:30:00Z",
            ]
        );
    }

    #[test]
    fn a_skipped_local_time_runs_at_the_end_of_the_gap() {
        // New York springs forward at 2026-03-08 02:00 EST → 03:00 EDT.
        let t = cron("30 2 * * *", "America/New_York");
        assert_eq!(
            ticks(&t, "2026-03-07T00:00:00Z", "2026-03-09T12:00:00Z"),
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z", // 03:00 EDT, where the gap ends
                "2026-03-09T06:30:00Z",
            ]
        );
        // Berlin springs forward at 2026-03-29 02:00 CET → 03:00 CEST.
        let t = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            ticks(&t, "2026-03-28T00:00:00Z", "2026-03-30T12:00:00Z"),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z", // 03:00 CEST
                "2026-03-30T00:30:00Z",
            ]
        );
    }

    #[test]
    fn utc_schedules_and_hourly_ones_keep_their_rhythm_across_both_changes() {
        let t = cron("30 1 * * *", "UTC");
        assert_eq!(
            ticks(&t, "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z"),
            ["2026-11-01T01:30:00Z", "2026-11-02T01:30:00Z"]
        );
        // Every hour in New York on the fall-back day: 01:00 local runs once,
        // so the day has 24 runs, not 25.
        let t = cron("0 * * * *", "America/New_York");
        assert_eq!(ticks(&t, "2026-11-01T03:59:00Z", "2026-11-02T04:59:00Z").len(), 24);
        // And 23 on the spring-forward day (02:00 does not exist; it would
        // run at 03:00, which runs anyway: one job for that instant).
        assert_eq!(ticks(&t, "2026-03-08T04:59:00Z", "2026-03-09T03:59:00Z").len(), 23);
    }

    #[test]
    fn catch_up_policies_take_none_one_or_all_missed_ticks() {
        let every = Timing::Every(1000);
        let (w, now, grace) = (10_000, 20_500, 2_000);
        // On time: 19,000 and 20,000 (within 2 s); missed: 11,000 ..= 18,000.
        assert_eq!(due_ticks(&every, CatchUp::None, w, now, grace), (vec![19_000, 20_000], 20_000));
        assert_eq!(due_ticks(&every, CatchUp::One, w, now, grace).0, vec![18_000, 19_000, 20_000]);
        assert_eq!(
            due_ticks(&every, CatchUp::All, w, now, grace).0,
            (11_000..=20_000).step_by(1000).collect::<Vec<_>>()
        );
        // All is at most 100, the latest.
        let (all, _) = due_ticks(&every, CatchUp::All, 0, 1_000_000, 0);
        assert_eq!((all.len(), all[0], *all.last().unwrap()), (MAX_CATCH_UP, 901_000, 1_000_000));
        // Nothing twice: the watermark.
        assert_eq!(due_ticks(&every, CatchUp::All, 20_000, 20_500, grace).0, Vec::<u64>::new());
    }

    #[test]
    fn invalid_definitions_name_their_field() {
        let base = Schedule {
            name: "n".into(),
            cron: Some("* * * * *".into()),
            tz: None,
            every: None,
            kind: "noop".into(),
            payload: Value::Null,
            queue: "default".into(),
            max_retries: None,
            timeout: None,
            catch_up: CatchUp::None,
            paused: false,
        };
        let field = |s: Schedule| s.timing().unwrap_err().0;
        assert_eq!(field(Schedule { cron: Some("61 * * * *".into()), ..base.clone() }), "cron");
        assert_eq!(field(Schedule { cron: Some("0 0 30 2 *".into()), ..base.clone() }), "cron");
        assert_eq!(field(Schedule { tz: Some("Mars/Olympus".into()), ..base.clone() }), "tz");
        assert_eq!(field(Schedule { every: Some("1s".into()), ..base.clone() }), "every");
        assert_eq!(field(Schedule { cron: None, every: Some("500ms".into()), ..base.clone() }), "every");
        assert_eq!(field(Schedule { name: "a b".into(), ..base.clone() }), "name");
        assert_eq!(field(Schedule { kind: "".into(), ..base.clone() }), "kind");
        assert_eq!(field(Schedule { queue: "a/b".into(), ..base.clone() }), "queue");
        assert!(Schedule { cron: Some("@hourly".into()), ..base.clone() }.timing().is_ok());
        assert!(Schedule { cron: Some("*/5 * * * * *".into()), ..base.clone() }.timing().is_ok());
        assert!(Schedule { cron: None, every: Some("30s".into()), ..base }.timing().is_ok());
    }
}

//! Jobs: the spec a producer submits (parsed and validated strictly, with
//! errors that name the line and field), the compact body stored in Redis,
//! and job ids.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest accepted job spec, in bytes of JSON.
pub const MAX_SPEC_BYTES: usize = 1 << 20;
/// Longest accepted queue name.
pub const MAX_QUEUE_NAME: usize = 128;

/// When a job may first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAt {
    /// As soon as possible.
    #[default]
    Now,
    /// This long after Redis accepts it.
    After(Duration),
    /// At this wall-clock time (Unix ms), judged by Redis' clock.
    At(u64),
}

/// A validated job spec, ready to enqueue.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The kind that routes it to its handler.
    pub kind: String,
    /// The payload, as JSON text (`null` when the spec has none).
    pub payload: Box<RawValue>,
    /// The queue; `None` for [`Defaults::queue`].
    pub queue: Option<String>,
    /// A job id of the client's own; `None` to generate one.
    pub id: Option<String>,
    /// The execution guard key, if the spec sets one.
    pub idempotency_key: Option<String>,
    /// Failures allowed before dead-letter; `None` for
    /// [`Defaults::max_retries`].
    pub max_retries: Option<u32>,
    /// When it may first run.
    pub run_at: RunAt,
    /// The handler's time limit; `None` for the worker's.
    pub timeout: Option<Duration>,
}

impl JobSpec {
    /// A spec with only a kind and a payload.
    pub fn new(kind: impl Into<String>, payload: Box<RawValue>) -> Self {
        JobSpec {
            kind: kind.into(),
            payload,
            queue: None,
            id: None,
            idempotency_key: None,
            max_retries: None,
            run_at: RunAt::Now,
            timeout: None,
        }
    }
}

/// Flag defaults applied to specs that do not set their own.
pub struct Defaults {
    /// The queue of specs that name none.
    pub queue: String,
    /// Failures allowed before dead-letter.
    pub max_retries: u32,
    /// A delay for specs that set neither `delay` nor `run_at`.
    pub delay: Option<std::time::Duration>,
    /// The idempotency key of specs that set none.
    pub idempotency_key: Option<String>,
}

impl Defaults {
    /// The job to enqueue in `queue` for `spec`: its id (a generated one
    /// unless the spec names it), stored body and schedule.
    pub fn new_job(&self, broker: &crate::broker::Broker, queue: &str, spec: JobSpec) -> crate::broker::NewJob {
        let client_id = spec.id.is_some();
        let id = spec.id.unwrap_or_else(new_id);
        let run_at = match (spec.run_at, self.delay) {
            (RunAt::Now, Some(d)) => RunAt::After(d),
            (r, _) => r,
        };
        let (delay_ms, run_at_ms) = match run_at {
            RunAt::Now => (0, 0),
            RunAt::After(d) => (d.as_millis() as u64, 0),
            RunAt::At(t) => (0, t.max(1)),
        };
        let key = spec.idempotency_key.or_else(|| self.idempotency_key.clone());
        let body = StoredJob {
            kind: spec.kind.into(),
            payload: &spec.payload,
            max_retries: spec.max_retries.unwrap_or(self.max_retries),
            timeout_ms: spec.timeout.map(|t| t.as_millis() as u64),
            idempotency_key: key.map(Into::into),
            client_id,
            enqueued_at: now_ms(),
        };
        let body = serde_json::to_string(&body).expect("a job body always serializes");
        let marker = client_id.then(|| broker.keys(queue).idem(&id));
        crate::broker::NewJob { id, body, delay_ms, run_at_ms, marker }
    }
}

/// Why a job spec was rejected; `field` is set when one field is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field \"{field}\": {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn field_err(field: &str, message: impl Into<String>) -> SpecError {
    SpecError { field: Some(field.to_string()), message: message.into() }
}

fn spec_err(message: impl Into<String>) -> SpecError {
    SpecError { field: None, message: message.into() }
}

/// Checks a queue name: 1–128 characters of `[A-Za-z0-9_.-]`, so it can never
/// break the key layout or its hash tag.
pub fn validate_queue_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_QUEUE_NAME {
        return Err(format!("queue name must be 1 to {MAX_QUEUE_NAME} characters, got {}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!("queue name {name:?} has {c:?}; allowed are A-Z a-z 0-9 _ . -"));
    }
    Ok(())
}

fn string_field<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, SpecError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_err(field, "expected a string")),
    }
}

fn duration_field(obj: &Map<String, Value>, field: &str) -> Result<Option<Duration>, SpecError> {
    let Some(s) =
        string_field(obj, field).map_err(|_| field_err(field, "expected a duration string such as \"30s\""))?
    else {
        return Ok(None);
    };
    parse_duration(s).map(Some).map_err(|e| field_err(field, e))
}

/// Parses a humantime duration ("250ms", "1h 30m"), rejecting absurd values
/// (over 100 years) that would overflow deadlines.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!("invalid duration {s:?}: durations cannot be negative"));
    }
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d > Duration::from_secs(100 * 365 * 24 * 3600) {
        return Err(format!("duration {s:?} is too long (at most 100 years)"));
    }
    Ok(d)
}

/// Parses an RFC 3339 timestamp (`2026-01-02T03:04:05Z`, `...+02:00`) to Unix ms.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid RFC 3339 time {s:?} (expected e.g. 2026-01-02T03:04:05Z)");
    // humantime understands only UTC ("Z"); apply a numeric offset ourselves.
    let (base, offset_secs): (String, i64) = match s.rfind(['+', '-']) {
        // `get` rather than indexing: a multi-byte character next to the
        // offset must be an error, not a panic.
        Some(pos) if pos > 10 && s.len() - pos == 6 && s.get(pos + 3..pos + 4) == Some(":") => {
            let sign = if s.get(pos..pos + 1) == Some("-") { -1 } else { 1 };
            let h: i64 = s.get(pos + 1..pos + 3).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let m: i64 = s.get(pos + 4..pos + 6).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            (format!("{}Z", s.get(..pos).ok_or_else(bad)?), sign * (h * 3600 + m * 60))
        }
        _ => (s.replace('z', "Z"), 0),
    };
    let t = humantime::parse_rfc3339(&base).map_err(|_| bad())?;
    let ms = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_millis() as i64 - offset_secs * 1000;
    u64::try_from(ms).map_err(|_| bad())
}

const FIELDS: &[&str] =
    &["kind", "payload", "queue", "id", "idempotency_key", "max_retries", "delay", "run_at", "timeout"];

/// Parses and validates one job spec from its JSON text.
pub fn parse_spec(text: &str) -> Result<JobSpec, SpecError> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(spec_err(format!(
            "job spec is {} bytes, over the {} byte (1 MiB) limit",
            text.len(),
            MAX_SPEC_BYTES
        )));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| spec_err(format!("invalid JSON: {e}")))?;
    spec_from_value(value)
}

/// Validates one job spec already parsed as JSON.
pub fn spec_from_value(value: Value) -> Result<JobSpec, SpecError> {
    let Value::Object(obj) = value else {
        return Err(spec_err("a job spec must be a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(field_err(unknown, format!("unknown field; known fields are {}", FIELDS.join(", "))));
    }
    let kind = match obj.get("kind") {
        None | Some(Value::Null) => return Err(field_err("kind", "missing (required)")),
        Some(Value::String(s)) if s.is_empty() => return Err(field_err("kind", "must not be empty")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(field_err("kind", "expected a string")),
    };
    validate_kind(&kind).map_err(|e| field_err("kind", e))?;
    let queue = string_field(&obj, "queue")?.map(str::to_string);
    if let Some(q) = &queue {
        validate_queue_name(q).map_err(|e| field_err("queue", e))?;
    }
    let id = non_empty(&obj, "id")?;
    let idempotency_key = non_empty(&obj, "idempotency_key")?;
    let max_retries = match obj.get("max_retries") {
        None | Some(Value::Null) => None,
        // 3.0 is an integer too (as JSON Schema counts them).
        Some(Value::Number(n)) => match n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64).map(|f| f as u64))
        {
            Some(v) if v <= u32::MAX as u64 => Some(v as u32),
            _ => return Err(field_err("max_retries", "expected an integer from 0 to 4294967295")),
        },
        Some(_) => return Err(field_err("max_retries", "expected an integer")),
    };
    let delay = duration_field(&obj, "delay")?;
    let run_at =
        match string_field(&obj, "run_at").map_err(|_| field_err("run_at", "expected an RFC 3339 time string"))? {
            Some(s) => Some(parse_rfc3339_ms(s).map_err(|e| field_err("run_at", e))?),
            None => None,
        };
    let run_at = match (delay, run_at) {
        (Some(_), Some(_)) => return Err(field_err("run_at", "give either delay or run_at, not both")),
        (Some(d), None) => RunAt::After(d),
        (None, Some(t)) => RunAt::At(t),
        (None, None) => RunAt::Now,
    };
    let timeout = duration_field(&obj, "timeout")?;
    if timeout == Some(Duration::ZERO) {
        return Err(field_err("timeout", "must be greater than zero"));
    }
    let payload = obj.get("payload").unwrap_or(&Value::Null);
    let payload = serde_json::value::to_raw_value(payload).map_err(|e| field_err("payload", e.to_string()))?;
    Ok(JobSpec { kind, payload, queue, id, idempotency_key, max_retries, run_at, timeout })
}

fn non_empty(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, SpecError> {
    match string_field(obj, field)? {
        Some("") => Err(field_err(field, "must not be empty")),
        Some(s) if s.chars().count() > MAX_ID => Err(field_err(field, format!("longer than {MAX_ID} characters"))),
        Some(s) if s.chars().any(char::is_control) => {
            Err(field_err(field, "contains a control character (newline, tab, NUL, escape...)"))
        }
        other => Ok(other.map(str::to_string)),
    }
}

/// Longest accepted kind, in characters.
pub const MAX_KIND: usize = 128;
/// Longest accepted id or idempotency key, in characters.
pub const MAX_ID: usize = 1024;

/// Checks a kind: 1–128 characters, no whitespace or control characters
/// (a kind becomes a metric label, a log field and an `--exec` variable).
pub fn validate_kind(kind: &str) -> Result<(), String> {
    let n = kind.chars().count();
    if n == 0 || n > MAX_KIND {
        return Err(format!("kind must be 1 to {MAX_KIND} characters, got {n}"));
    }
    if kind.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("kind {:?} contains whitespace or a control character", kind));
    }
    Ok(())
}

/// Where a spec sits in its input, for error messages.
#[derive(Debug, Clone, Copy)]
pub enum Position {
    /// 1-based line of an NDJSON file.
    Line(usize),
    /// 0-based index in a JSON array.
    Item(usize),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            // Counted from 1 like lines, and named so.
            Position::Item(n) => write!(f, "array item {} (counting from 1)", n + 1),
        }
    }
}

/// Parses a whole input (NDJSON, or one JSON array) into specs; the first
/// invalid spec rejects the whole input.
pub fn parse_specs(text: &str) -> Result<Vec<JobSpec>, (Position, SpecError)> {
    // A UTF-8 byte order mark (some editors write one) is not content.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(trimmed).map_err(|e| {
            let hint =
                if e.to_string().contains("trailing comma") { " (remove the comma after the last item)" } else { "" };
            (Position::Line(e.line()), spec_err(format!("invalid JSON array: {e}{hint}")))
        })?;
        return items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| parse_spec(raw.get()).map_err(|e| (Position::Item(i), e)))
            .collect();
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse_spec(line).map_err(|e| (Position::Line(i + 1), with_hint(line, e))))
        .collect()
}

/// Says how to fix the usual ways an NDJSON line goes wrong.
fn with_hint(line: &str, mut e: SpecError) -> SpecError {
    let l = line.trim();
    let hint = if l.ends_with("},") {
        Some("NDJSON lines end without a comma (or put the objects in one JSON array)")
    } else if l == "{" || l == "[" || (l.starts_with('{') && !l.ends_with('}')) || l.starts_with('"') {
        Some("this looks like pretty-printed JSON: one JSON object per line is needed (try `jq -c . FILE`), or one JSON array")
    } else {
        None
    };
    if let (Some(h), None) = (hint, &e.field) {
        e.message = format!("{} — {h}", e.message);
    }
    e
}

/// The body stored in Redis for each job. Field names are short because a
/// queue may hold millions of bodies; this is internal, not a public format.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredJob<'a> {
    /// Failures allowed before dead-letter. First, so that recover.lua reads
    /// it from the body's opening bytes without decoding the payload.
    #[serde(rename = "r")]
    pub max_retries: u32,
    /// The job kind.
    #[serde(rename = "k", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    /// The payload, as JSON text.
    #[serde(rename = "p", borrow)]
    pub payload: &'a RawValue,
    /// Handler timeout in ms, if the job set its own.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Explicit idempotency key.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none", borrow)]
    pub idempotency_key: Option<std::borrow::Cow<'a, str>>,
    /// True when the id was chosen by the client (then it gets a completion marker).
    #[serde(rename = "c", default, skip_serializing_if = "is_false")]
    pub client_id: bool,
    /// Enqueue time by the producer's clock (Unix ms), informational.
    #[serde(rename = "e", default)]
    pub enqueued_at: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl StoredJob<'_> {
    /// The idempotency key in force: the explicit key, else the client-chosen
    /// id; generated ids have none (they are unique by construction).
    pub fn effective_key<'s>(&'s self, id: &'s str) -> Option<&'s str> {
        match &self.idempotency_key {
            Some(k) => Some(k),
            None if self.client_id => Some(id),
            None => None,
        }
    }

    /// Completion markers to write at ack: the client id and the key, once each.
    pub fn markers<'s>(&'s self, id: &'s str) -> impl Iterator<Item = &'s str> {
        let by_id = self.client_id.then_some(id);
        let by_key = self.idempotency_key.as_deref().filter(|k| Some(*k) != by_id);
        by_id.into_iter().chain(by_key)
    }
}

/// Milliseconds since the Unix epoch by the local clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A new job id: 26 characters of Crockford base32 (48 bits of ms time, 80
/// random bits, like a ULID), sortable by creation time.
pub fn new_id() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let bits = ((now_ms() as u128) << 80) | (fastrand::u128(..) & ((1u128 << 80) - 1));
    (0..26).rev().map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_spec(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_spec_defaults() {
        let s = parse_spec(r#"{"kind":"noop"}"#).unwrap();
        assert_eq!(s.kind, "noop");
        assert_eq!(s.payload.get(), "null");
        assert_eq!(s.run_at, RunAt::Now);
    }

    #[test]
    fn an_integral_float_is_an_integer() {
        assert_eq!(spec_from_value(serde_json::json!({"kind":"a","max_retries":3.0})).unwrap().max_retries, Some(3));
        assert!(spec_from_value(serde_json::json!({"kind":"a","max_retries":3.5})).is_err());
    }

    #[test]
    fn field_errors_name_the_field() {
        assert_eq!(err(r#"{"kind":"a","max_retries":"x"}"#), "field \"max_retries\": expected an integer");
        assert_eq!(
            err(r#"{"kind":"a","max_retries":-1}"#),
            "field \"max_retries\": expected an integer from 0 to 4294967295"
        );
        assert_eq!(err(r#"{"payload":1}"#), "field \"kind\": missing (required)");
        assert_eq!(err(r#"{"kind":""}"#), "field \"kind\": must not be empty");
        assert!(err(r#"{"kind":"a","bogus":1}"#).starts_with("field \"bogus\": unknown field"));
        assert!(err(r#"{"kind":"a","queue":"x{y}"}"#).starts_with("field \"queue\""));
        assert!(err(r#"{"kind":"a","delay":"soon"}"#).starts_with("field \"delay\": invalid duration"));
        assert!(err(r#"{"kind":"a","delay":"-5s"}"#).starts_with("field \"delay\""));
        assert!(err(r#"{"kind":"a","delay":"1000000y"}"#).contains("too long"));
        assert!(err("[1,").starts_with("invalid JSON"));
        assert_eq!(err("42"), "a job spec must be a JSON object");
    }

    #[test]
    fn oversized_spec_is_rejected() {
        let big = format!(r#"{{"kind":"a","payload":"{}"}}"#, "x".repeat(MAX_SPEC_BYTES));
        assert!(err(&big).contains("1 MiB"));
    }

    #[test]
    fn positions_are_reported() {
        let (pos, e) = parse_specs("{\"kind\":\"a\"}\n\n{\"kind\":1}\n").unwrap_err();
        assert_eq!(format!("{pos}: {e}"), "line 3: field \"kind\": expected a string");
        let (pos, _) = parse_specs(r#"[{"kind":"a"},{"kind":"b","id":7}]"#).unwrap_err();
        assert_eq!(pos.to_string(), "array item 2 (counting from 1)");
    }

    #[test]
    fn kinds_ids_and_keys_reject_control_characters() {
        assert!(err(r#"{"kind":"a b"}"#).starts_with("field \"kind\": kind \"a b\" contains whitespace"));
        assert!(err(r#"{"kind":"a\u001b[31m"}"#).starts_with("field \"kind\""));
        assert!(err(&format!(r#"{{"kind":"{}"}}"#, "k".repeat(129))).contains("1 to 128"));
        assert!(err(r#"{"kind":"a","id":"x\u0000y"}"#).starts_with("field \"id\": contains a control character"));
        assert!(err(r#"{"kind":"a","idempotency_key":"x\r\ny"}"#).starts_with("field \"idempotency_key\""));
        assert!(parse_spec(r#"{"kind":"émail.send@2","id":"ordre-é"}"#).is_ok());
    }

    #[test]
    fn rfc3339_never_panics_on_multibyte_offsets() {
        assert!(parse_rfc3339_ms("2026-01-02T03:04:05+0é00").is_err());
        assert!(parse_spec(r#"{"kind":"a","run_at":"2026-01-02T03:04:05+0é00"}"#).is_err());
    }

    #[test]
    fn rfc3339_with_offsets() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:01+01:00").unwrap(), 1000);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert!(parse_rfc3339_ms("tomorrow").is_err());
    }

    #[test]
    fn queue_names() {
        assert!(validate_queue_name("emails.high-1_x").is_ok());
        for bad in ["", "a b", "a:b", "{a}", &"x".repeat(129)] {
            assert!(validate_queue_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_unique_and_26_chars() {
        let a = new_id();
        assert_eq!(a.len(), 26);
        assert_ne!(a, new_id());
    }

    #[test]
    fn markers_cover_client_id_and_key_once() {
        let p = serde_json::value::to_raw_value(&Value::Null).unwrap();
        let mut j = StoredJob {
            kind: "a".into(),
            payload: &p,
            max_retries: 3,
            timeout_ms: None,
            idempotency_key: None,
            client_id: false,
            enqueued_at: 0,
        };
        assert_eq!(j.markers("x").count(), 0);
        j.client_id = true;
        assert_eq!(j.markers("x").collect::<Vec<_>>(), ["x"]);
        j.idempotency_key = Some("x".into());
        assert_eq!(j.markers("x").collect::<Vec<_>>(), ["x"]);
        j.idempotency_key = Some("k".into());
        assert_eq!(j.markers("x").collect::<Vec<_>>(), ["x", "k"]);
    }
}

#[cfg(test)]
mod fuzz {
    //! Property tests: the parser never panics, and every rejection is a
    //! clear error (non-empty, naming the field when one is at fault).

    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("kind".to_string()),
                        Just("payload".to_string()),
                        Just("queue".to_string()),
                        Just("id".to_string()),
                        Just("idempotency_key".to_string()),
                        Just("max_retries".to_string()),
                        Just("delay".to_string()),
                        Just("run_at".to_string()),
                        Just("timeout".to_string()),
                        "[a-z_]{1,12}",
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = parse_spec(&text) {
                prop_assert!(!e.message.is_empty());
            }
            let _ = parse_specs(&text);
        }

        #[test]
        fn arbitrary_json_is_accepted_or_rejected_with_a_reason(v in json_value()) {
            let text = v.to_string();
            match parse_spec(&text) {
                Ok(spec) => {
                    prop_assert!(validate_kind(&spec.kind).is_ok());
                    for s in spec.id.iter().chain(&spec.idempotency_key) {
                        prop_assert!(!s.chars().any(char::is_control));
                    }
                    if let Some(q) = &spec.queue {
                        prop_assert!(validate_queue_name(q).is_ok());
                    }
                }
                Err(e) => {
                    prop_assert!(!e.to_string().is_empty());
                    if let (Value::Object(m), Some(field)) = (&v, &e.field) {
                        prop_assert!(m.contains_key(field) || field == "kind", "{} names a field not in {}", e, text);
                    }
                }
            }
        }

        #[test]
        fn queue_names_that_pass_cannot_break_the_hash_tag(name in ".{0,200}") {
            if validate_queue_name(&name).is_ok() {
                let breaks = name.contains(['{', '}', ':', ' ']);
                prop_assert!(!breaks, "{:?} passed", name);
                prop_assert!(!name.is_empty() && name.len() <= MAX_QUEUE_NAME);
            }
        }
    }
}

//! The Lua scripts (one per state transition, in `lua/`), embedded at build
//! time, loaded once on every primary and called by SHA.
//!
//! EVALSHA goes out as a custom command hashed to the slot of its first key:
//! fred's own `evalsha` is never pipelined, and a hot path of many concurrent
//! script calls needs pipelining. On `NOSCRIPT` (a restarted or flushed
//! Redis) the script is loaded again and the call retried once.

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::CustomCommand;
use fred::util::redis_keyslot;

use super::BrokerError;

macro_rules! scripts {
    ($($field:ident => $file:literal),* $(,)?) => {
        /// Every script dtq runs.
        pub struct Scripts { $(#[doc = concat!("`lua/", $file, "`.")] pub $field: Script,)* }

        impl Scripts {
            /// Every script, with its includes expanded (not loaded yet).
            pub fn new() -> Self {
                Scripts { $($field: Script::from_lua(source(include_str!(concat!("../../lua/", $file)))),)* }
            }

            fn all(&self) -> Vec<&Script> {
                vec![$(&self.$field),*]
            }
        }
    };
}

scripts! {
    enqueue => "enqueue.lua",
    dequeue => "dequeue.lua",
    ack => "ack.lua",
    fail => "fail.lua",
    release => "release.lua",
    heartbeat => "heartbeat.lua",
    recover => "recover.lua",
    promote => "promote.lua",
    requeue => "requeue.lua",
    purge => "purge.lua",
    cancel => "cancel.lua",
    lock_renew => "lock-renew.lua",
    lock_release => "lock-release.lua",
    start => "start.lua",
    rate_limit => "rate-limit.lua",
    trim => "trim.lua",
    find => "find.lua",
    job => "job.lua",
}

/// A script's source with its `-- @include retain` line replaced by the
/// shared retention functions, their defaults filled in from Rust's.
fn source(text: &str) -> String {
    use crate::retention as r;
    let lib = include_str!("../../lua/lib/retain.lua")
        .replace("@DEAD_MAX@", &r::DEFAULT.dead_max.to_string())
        .replace("@DEAD_TTL@", &r::DEFAULT.dead_ttl.as_millis().to_string())
        .replace("@COMPLETED_MAX@", &r::DEFAULT.completed_max.to_string())
        .replace("@COMPLETED_TTL@", &r::DEFAULT.completed_ttl.as_millis().to_string())
        .replace("@HISTORY_MAX@", &r::HISTORY_MAX.to_string());
    text.replace("-- @include retain\n", &lib)
}

impl Default for Scripts {
    fn default() -> Self {
        Self::new()
    }
}

impl Scripts {
    /// `SCRIPT LOAD`s every script on every primary.
    pub async fn load_all(&self, client: &Client) -> Result<(), BrokerError> {
        for script in self.all() {
            script.load(client).await.map_err(|source| BrokerError::redis("load scripts", source))?;
        }
        Ok(())
    }
}

/// Runs `script` with `keys` (all in one slot) and `args`.
pub async fn eval(
    client: &Client,
    script: &Script,
    op: &'static str,
    keys: &[&str],
    args: Vec<Value>,
) -> Result<Value, BrokerError> {
    let slot = redis_keyslot(keys[0].as_bytes());
    let mut argv: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
    argv.push(Value::String(script.sha1().clone()));
    argv.push(Value::Integer(keys.len() as i64));
    argv.extend(keys.iter().map(|k| Value::from(*k)));
    argv.extend(args);
    let cmd = CustomCommand::new_static("EVALSHA", fred::types::ClusterHash::Custom(slot), false);
    match client.custom::<Value, Value>(cmd.clone(), argv.clone()).await {
        Err(e) if e.details().starts_with("NOSCRIPT") => {
            script.load(client).await.map_err(|source| BrokerError::redis(op, source))?;
            client.custom(cmd, argv).await.map_err(|source| BrokerError::redis(op, source))
        }
        Err(e) if failed_over(&e) => {
            // After a failover behind one DNS name the old connection talks
            // to a replica: reconnect so the next call reaches the primary.
            tracing::warn!(error = %e.details(), "Redis answered as a replica; reconnecting");
            let c = client.clone();
            tokio::spawn(async move { c.force_reconnection().await });
            Err(BrokerError::redis(op, e))
        }
        other => other.map_err(|source| BrokerError::redis(op, source)),
    }
}

/// True for the replies of a node that is no longer (or not yet) a primary.
fn failed_over(e: &Error) -> bool {
    let d = e.details();
    d.starts_with("READONLY") || d.starts_with("MASTERDOWN")
}

//! Building and connecting the fred client from a Redis URL: schemes,
//! credentials, TLS, reconnect policy and command timeouts, and the redacted
//! form of the URL that is the only one ever logged.

use fred::prelude::*;
use fred::types::config::UnresponsiveConfig;
use std::time::Duration;

/// TLS material for `rediss://` beyond the system roots.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// PEM file of extra CA certificates to trust.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate chain for mutual TLS (with `key_file`).
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<std::path::PathBuf>,
}

/// A parsed Redis target.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    /// The fred client config, TLS included.
    pub config: Config,
    /// The URL with any password replaced by `***`: safe for logs and errors.
    pub redacted: String,
    /// A Redis Cluster target (`redis-cluster://`).
    pub clustered: bool,
}

/// Replaces the password of a URL (if any) with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    // The last '@' ends the userinfo: a password may itself hold '/', '?',
    // '#' or '@' (unencoded), and Redis URLs have no '@' after the host.
    let Some(at) = rest.rfind('@') else { return url.to_string() };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None if userinfo.is_empty() => String::new(),
        // A lone userinfo is a password in redis:// URLs (`redis://secret@host`).
        None => "***".to_string(),
    };
    format!("{}://{}@{}", &url[..scheme_end], user, &rest[at + 1..])
}

/// Parses `redis://`, `rediss://` or `redis-cluster://` (any node; more with
/// `?node=host:port`) into a client config.
pub fn parse_target(url: &str, tls: &TlsFiles) -> Result<RedisTarget, String> {
    let redacted = redact_url(url);
    let scheme = url.split("://").next().unwrap_or("");
    if !matches!(scheme, "redis" | "rediss" | "redis-cluster" | "rediss-cluster") || !url.contains("://") {
        return Err(format!("unsupported Redis URL {redacted}: expected redis://, rediss:// or redis-cluster://"));
    }
    let mut config = Config::from_url(url).map_err(|e| format!("invalid Redis URL {redacted}: {}", e.details()))?;
    if config.uses_tls() {
        config.tls = Some(super::tls::connector(tls).map_err(|e| format!("TLS setup for {redacted}: {e}"))?.into());
    } else if tls.ca_file.is_some() || tls.cert_file.is_some() {
        return Err(format!("--tls-* files were given but {redacted} is not a rediss:// URL"));
    }
    let clustered = config.server.is_clustered();
    Ok(RedisTarget { config, redacted, clustered })
}

/// A client for `target` that reconnects forever with capped exponential
/// backoff and fails a command after `command_timeout` rather than hanging.
pub fn build_client(target: &RedisTarget, command_timeout: Duration) -> Result<Client, Error> {
    Builder::from_config(target.config.clone())
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(5);
            c.max_command_attempts = 3;
            // A stalled server (CLIENT PAUSE, a network stall) closes the
            // connection after this long so in-flight commands are retried.
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(command_timeout + Duration::from_secs(5)),
                interval: Duration::from_secs(1),
            };
            c.tcp = TcpConfig { nodelay: Some(true), ..Default::default() };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
}

/// Connects a new client, retrying with backoff until `give_up_after` (or
/// forever when `None`). Each failed attempt is logged.
pub async fn connect(
    target: &RedisTarget,
    command_timeout: Duration,
    give_up_after: Option<Duration>,
) -> Result<Client, String> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        // One attempt never outlasts what is left of the caller's limit.
        let left = give_up_after.map(|l| l.saturating_sub(started.elapsed()));
        let budget = left.map_or(Duration::from_secs(6), |l| l.min(Duration::from_secs(6)));
        let client = build_client(target, command_timeout).map_err(|e| e.details().to_string())?;
        let attempt = tokio::time::timeout(budget, client.init()).await;
        let error = match attempt {
            Ok(Ok(_task)) => return Ok(client),
            Ok(Err(e)) => describe(&e),
            Err(_) => {
                // Closing a client that never connected may itself wait on
                // the dead server: do it in the background.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
                });
                match not_redis(target).await {
                    Some(why) => why,
                    None => "connection attempt timed out".to_string(),
                }
            }
        };
        // Authentication and certificate errors will not fix themselves.
        if error.contains("WRONGPASS") || error.contains("NOAUTH") || error.contains("NOPERM") {
            return Err(format!("cannot connect to Redis at {}: authentication failed: {error}", target.redacted));
        }
        if error.contains("InvalidCertificate") || error.contains("certificate") {
            return Err(format!(
                "cannot connect to Redis at {}: TLS certificate rejected ({error}); trust its CA with --tls-ca-file",
                target.redacted
            ));
        }
        let error = plain_cause(&error, target);
        let mut wait = delay;
        if let Some(limit) = give_up_after {
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "cannot reach Redis at {} (tried for {}): {error}",
                    target.redacted,
                    humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64 / 100 * 100))
                ));
            }
            // A one-shot command says it once, at the end; retries are quiet.
            tracing::debug!(redis = %target.redacted, error = %error, "Redis unreachable, retrying");
            wait = wait.min(left);
        } else {
            tracing::warn!(redis = %target.redacted, error = %error, retry_in = ?delay, "Redis unreachable, retrying");
        }
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// After a timed-out attempt on a plain `redis://` server: asks it `PING`
/// by hand; a refused connection, or a reply that is not RESP (something
/// else listens there), is the better cause.
async fn not_redis(target: &RedisTarget) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fred::types::config::ServerConfig::Centralized { server } = &target.config.server else { return None };
    if target.redacted.starts_with("rediss://") {
        return None;
    }
    let probe = async {
        let mut c = match tokio::net::TcpStream::connect((&*server.host, server.port)).await {
            Ok(c) => c,
            // The client's own attempts may outlast the budget by retrying.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Some("connection refused".to_string())
            }
            Err(_) => return None,
        };
        c.write_all(b"PING\r\n").await.ok()?;
        let mut first = [0u8; 1];
        c.read_exact(&mut first).await.ok()?;
        (!matches!(first[0], b'+' | b'-' | b'$' | b'*' | b':' | b'%' | b'_')).then(|| {
            "the server there does not speak the Redis protocol (is this the right host and port?)".to_string()
        })
    };
    tokio::time::timeout(Duration::from_millis(500), probe).await.ok().flatten()
}

/// A connection error in words a person can act on (the raw detail kept
/// when it is nothing known).
fn plain_cause(error: &str, target: &RedisTarget) -> String {
    let e = error.to_ascii_lowercase();
    let tls = target.redacted.starts_with("rediss://");
    if e.contains("connection refused") || e.contains("connectionrefused") {
        "connection refused (is Redis running there? set --redis or DTQ_REDIS_URL)".to_string()
    } else if e.contains("frame_type") || e.contains("decode") || e.contains("invalid frame") || e.contains("parse") {
        "the server there does not speak the Redis protocol (is this the right host and port?)".to_string()
    } else if e.contains("lookup") || e.contains("name or service not known") || e.contains("dns") {
        format!("the host name cannot be resolved ({error})")
    } else if tls && (e.contains("timed out") || e.contains("handshake") || e.contains("tls")) {
        format!("TLS handshake failed ({error}; is the port a TLS port? rediss:// needs one)")
    } else {
        error.to_string()
    }
}

/// A fred error as one line, without anything that could hold a password.
pub fn describe(e: &Error) -> String {
    let details = e.details();
    if details.is_empty() {
        format!("{:?}", e.kind())
    } else {
        details.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:secret@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://secret@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("rediss://u:p@ss@h"), "rediss://u:***@h");
    }

    #[test]
    fn passwords_with_url_delimiters_are_redacted() {
        assert_eq!(redact_url("redis://u:a/b?c@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:p@ss/w?rd@h"), "redis://:***@h");
        let e = parse_target("redis://u:pa/ss?x@h:1", &TlsFiles::default()).err().unwrap_or_default();
        assert!(!e.contains("pa/ss"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn no_password_survives_redaction(secret in "[a-zA-Z0-9/?#@:%. ]{4,24}", user in "[a-z]{0,6}") {
            let pw = format!("pw{secret}");
            let url = format!("redis://{user}:{pw}@h:6379/0");
            proptest::prop_assert!(!redact_url(&url).contains(&pw));
            if let Err(e) = parse_target(&url, &TlsFiles::default()) {
                proptest::prop_assert!(!e.contains(&pw), "{}", e);
            }
        }
    }

    #[test]
    fn unsupported_schemes_are_rejected_without_password() {
        let e = parse_target("http://u:pw@h", &TlsFiles::default()).unwrap_err();
        assert!(e.contains("unsupported") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn cluster_scheme_makes_a_cluster_config() {
        let t = parse_target("redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001", &TlsFiles::default()).unwrap();
        assert!(t.clustered);
    }
}

//! Who may call: bearer tokens from files (admin and read-only), compared
//! in constant time, and the panel's sessions.
//!
//! A browser signs in once with a token (`POST /v1/session`) and then holds
//! an HttpOnly, SameSite=Strict cookie instead. The cookie is stateless —
//! `v1.<expiry>.<token fingerprint>.<HMAC-SHA256 keyed by the token>` — so
//! every `serve` replica with the same token files accepts it, and removing
//! a token from its file ends its sessions (the files are re-read every
//! second). Requests a cookie authenticates
//! must also carry the session's CSRF token (`X-CSRF-Token`) to change
//! anything, and any request a browser marks as coming from another origin
//! is refused before it can change anything.

use super::{err, ApiError};
use hyper::{HeaderMap, Method, StatusCode};
use ring::{digest, hmac};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The session cookie's name.
pub const COOKIE: &str = "dtq_session";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every request.
    Admin,
    /// `GET` requests only.
    ReadOnly,
}

/// The accepted tokens; none configured means no authentication (only
/// allowed on loopback, or with `--insecure-no-auth`).
#[derive(Default)]
pub struct Tokens(Vec<(Vec<u8>, Role)>);

/// The token files and the tokens last read from them. [`TokenFiles::watch`]
/// re-reads them every second, so a rotated token (an edited file, a
/// Kubernetes Secret updated in place) takes effect without a restart; a
/// change that leaves a file unreadable or without a valid token is refused
/// with a warning and the tokens read before stay.
pub struct TokenFiles {
    files: [(Option<PathBuf>, Role); 2],
    /// The texts the tokens were first read from.
    loaded: Vec<String>,
    current: RwLock<Arc<Tokens>>,
}

impl TokenFiles {
    /// Reads the files (an error names the file and what is wrong).
    pub fn load(admin: Option<&Path>, read_only: Option<&Path>) -> Result<TokenFiles, String> {
        let files = [(admin.map(Path::to_path_buf), Role::Admin), (read_only.map(Path::to_path_buf), Role::ReadOnly)];
        let read = Self::read(&files)?;
        let tokens = Tokens::parse(&read)?;
        let loaded = read.into_iter().map(|(_, _, text)| text).collect();
        Ok(TokenFiles { files, loaded, current: RwLock::new(Arc::new(tokens)) })
    }

    fn read(files: &[(Option<PathBuf>, Role); 2]) -> Result<Vec<(&Path, Role, String)>, String> {
        let mut out = Vec::new();
        for (path, role) in files {
            let Some(path) = path else { continue };
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
            out.push((path.as_path(), *role, text));
        }
        Ok(out)
    }

    /// The tokens accepted now.
    pub fn current(&self) -> Arc<Tokens> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the files every second until `stop`; a change is logged.
    pub async fn watch(&self, stop: tokio_util::sync::CancellationToken) {
        if self.files.iter().all(|(p, _)| p.is_none()) {
            return;
        }
        let mut seen = Some(self.loaded.clone());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
            let read = Self::read(&self.files);
            let texts = read.as_ref().ok().map(|f| f.iter().map(|(_, _, t)| t.clone()).collect::<Vec<_>>());
            if texts == seen {
                continue;
            }
            seen = texts;
            match read.and_then(|f| Tokens::parse(&f)) {
                Ok(tokens) => {
                    let (admin, read_only) = tokens.counts();
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
                    tracing::info!(admin, read_only, "token files changed: now accepting these tokens");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "token files changed but cannot be used; still accepting the tokens read before")
                }
            }
        }
    }
}

impl Tokens {
    /// One token a line from each file's text (blank lines and `#`
    /// comments skipped; several tokens allow rotation).
    fn parse(files: &[(&Path, Role, String)]) -> Result<Tokens, String> {
        let mut out = Vec::new();
        for (path, role, text) in files {
            let before = out.len();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                if line.len() < 16 {
                    return Err(format!("token file {}: a token is shorter than 16 characters", path.display()));
                }
                out.push((line.as_bytes().to_vec(), *role));
            }
            if out.len() == before {
                return Err(format!("token file {} holds no token", path.display()));
            }
        }
        Ok(Tokens(out))
    }

    /// How many admin and read-only tokens there are.
    fn counts(&self) -> (usize, usize) {
        let admin = self.0.iter().filter(|(_, r)| *r == Role::Admin).count();
        (admin, self.0.len() - admin)
    }

    /// No token is configured: requests are not authenticated.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The role of `presented`, checking every token in constant time.
    pub(super) fn role(&self, presented: &[u8]) -> Option<Role> {
        self.find(presented).map(|(_, r)| r)
    }

    fn find(&self, presented: &[u8]) -> Option<(&[u8], Role)> {
        let mut found = None;
        for (token, role) in &self.0 {
            if constant_time_eq(token, presented) {
                found = found.or(Some((token.as_slice(), *role)));
            }
        }
        found
    }

    /// A new session for `token`: the cookie's value and the CSRF token, or
    /// `None` if the token is not accepted.
    pub(super) fn sign_in(&self, token: &[u8]) -> Option<(String, Session)> {
        let (token, role) = self.find(token)?;
        let expiry = now_secs() + SESSION_TTL.as_secs();
        let fp = fingerprint(token);
        let mac = hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, token), &session_message(expiry)).as_ref());
        Some((format!("v1.{expiry}.{fp}.{mac}"), Session::new(token, role, expiry)))
    }

    /// The session a cookie value stands for, if it is well formed, signed
    /// by one of the tokens and not expired.
    fn session(&self, cookie: &str) -> Option<Session> {
        let mut parts = cookie.split('.');
        let (Some("v1"), Some(expiry), Some(fp), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expiry: u64 = expiry.parse().ok().filter(|&e| e > now_secs())?;
        let mac = unhex(mac)?;
        self.0.iter().filter(|(t, _)| fingerprint(t) == fp).find_map(|(token, role)| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, token);
            hmac::verify(&key, &session_message(expiry), &mac).ok().map(|_| Session::new(token, *role, expiry))
        })
    }

    /// Who `method` with `headers` comes from: a bearer token, else the
    /// session cookie (whose changes need the CSRF token), else — with no
    /// token configured — anyone, as admin. A read-only caller may only
    /// `GET`; a browser's cross-origin request may change nothing.
    pub(super) fn authorize(&self, method: &Method, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let changes = method != Method::GET && method != Method::HEAD;
        if changes {
            same_origin(headers)?;
        }
        let bearer = headers.get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
        let caller = if let Some(value) = bearer {
            let token = value.strip_prefix(b"Bearer ").ok_or_else(|| {
                err(StatusCode::UNAUTHORIZED, "unauthorized", "the Authorization header must be \"Bearer TOKEN\"")
            })?;
            let role = self
                .role(token)
                .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "unauthorized", "the token is not accepted"))?;
            Caller { role, session: None }
        } else if let Some(cookie) = cookie(headers, COOKIE).filter(|_| !self.is_empty()) {
            let session = self.session(cookie).ok_or_else(|| {
                err(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the session has expired or its token was removed: sign in again",
                )
            })?;
            if changes {
                let sent = headers.get("x-csrf-token").map(|v| v.as_bytes()).unwrap_or_default();
                if !constant_time_eq(sent, session.csrf.as_bytes()) {
                    return Err(err(StatusCode::FORBIDDEN, "forbidden", "missing or wrong X-CSRF-Token header"));
                }
            }
            Caller { role: session.role, session: Some(session) }
        } else if self.is_empty() {
            Caller { role: Role::Admin, session: None }
        } else {
            return Err(err(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an Authorization: Bearer token (or a signed-in session) is required",
            ));
        };
        if caller.role == Role::ReadOnly && changes {
            return Err(err(StatusCode::FORBIDDEN, "forbidden", "a read-only token may only GET"));
        }
        Ok(caller)
    }
}

/// Who a request comes from.
pub(super) struct Caller {
    pub role: Role,
    /// Set when a session cookie (not a bearer token) authenticated it.
    pub session: Option<Session>,
}

/// A signed-in browser's session.
pub(super) struct Session {
    pub role: Role,
    /// What `X-CSRF-Token` must say on changes: derived from the token and
    /// the expiry, so it needs no storage either.
    pub csrf: String,
}

impl Session {
    fn new(token: &[u8], role: Role, expiry: u64) -> Session {
        let key = hmac::Key::new(hmac::HMAC_SHA256, token);
        let csrf = hex(&hmac::sign(&key, format!("dtq-csrf-v1|{expiry}").as_bytes()).as_ref()[..16]);
        Session { role, csrf }
    }
}

impl Role {
    /// The role's name in answers.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }
}

fn session_message(expiry: u64) -> Vec<u8> {
    format!("dtq-session-v1|{expiry}").into_bytes()
}

/// Which token signed a cookie, without giving the token away.
fn fingerprint(token: &[u8]) -> String {
    hex(&digest::digest(&digest::SHA256, token).as_ref()[..8])
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Refuses a request that a browser says comes from another origin (its
/// `Origin` names a different host than `Host`, or `Sec-Fetch-Site` says
/// cross-site): without this a page elsewhere could post a form to a
/// server that runs without tokens.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || err(StatusCode::FORBIDDEN, "forbidden", "a cross-origin request may not change anything");
    if headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site") {
        return Err(refused());
    }
    let Some(origin) = headers.get(hyper::header::ORIGIN).and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let host = headers.get(hyper::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(refused())
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl super::Api {
    /// `GET /v1/session`: who the caller is (and the CSRF token its changes
    /// need); `POST` signs in with `{"token"}` and sets the cookie; `DELETE`
    /// clears it.
    pub(super) async fn session(&self, req: hyper::Request<hyper::body::Incoming>) -> Result<super::Reply, ApiError> {
        use serde_json::json;
        let answer =
            |role: Role, csrf: &str| super::json_reply(StatusCode::OK, &json!({"role": role.name(), "csrf": csrf}));
        let secure = req.headers().get("x-forwarded-proto").is_some_and(|v| v == "https");
        let set_cookie = |reply: &mut super::Reply, value: &str, max_age: u64| {
            let cookie = format!(
                "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
                if secure { "; Secure" } else { "" }
            );
            reply
                .headers_mut()
                .append(hyper::header::SET_COOKIE, cookie.parse().expect("cookie values are header-safe"));
        };
        match *req.method() {
            Method::GET => {
                let caller = self.tokens.current().authorize(req.method(), req.headers())?;
                let csrf = caller.session.map(|s| s.csrf).unwrap_or_default();
                Ok(answer(caller.role, &csrf))
            }
            Method::DELETE => {
                same_origin(req.headers())?;
                let mut r = super::respond(StatusCode::NO_CONTENT, "application/json", "");
                set_cookie(&mut r, "", 0);
                Ok(r)
            }
            _ => {
                same_origin(req.headers())?;
                let body = super::body(req).await?;
                let v = super::parse_json(&body)?;
                let token = v.get("token").and_then(serde_json::Value::as_str).ok_or_else(|| ApiError {
                    field: Some("token".into()),
                    ..super::invalid("the body is {\"token\": \"...\"}")
                })?;
                let tokens = self.tokens.current();
                if tokens.is_empty() {
                    return Ok(answer(Role::Admin, ""));
                }
                let (cookie, session) = tokens
                    .sign_in(token.as_bytes())
                    .ok_or_else(|| err(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token"))?;
                let mut r = answer(session.role, &session.csrf);
                set_cookie(&mut r, &cookie, SESSION_TTL.as_secs());
                Ok(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let t = Tokens(vec![
            (b"admin-token-123456".to_vec(), Role::Admin),
            (b"reader-token-123456".to_vec(), Role::ReadOnly),
        ]);
        assert_eq!(t.role(b"reader-token-123456"), Some(Role::ReadOnly));
        assert_eq!(t.role(b"admin-token-123456"), Some(Role::Admin));
        assert_eq!(t.role(b"admin-token-12345"), None);
    }

    #[test]
    fn sessions_are_signed_by_their_token() {
        let t = Tokens(vec![
            (b"admin-token-123456".to_vec(), Role::Admin),
            (b"reader-token-123456".to_vec(), Role::ReadOnly),
        ]);
        let (cookie, s) = t.sign_in(b"reader-token-123456").unwrap();
        assert_eq!(t.session(&cookie).map(|s| s.role), Some(Role::ReadOnly));
        assert_eq!(t.session(&cookie).unwrap().csrf, s.csrf);
        assert!(t.sign_in(b"wrong-token-1234567").is_none());
        // Tampered, forged with another token, expired, malformed: refused.
        let mut parts: Vec<String> = cookie.split('.').map(String::from).collect();
        parts[1] = (parts[1].parse::<u64>().unwrap() + 1).to_string();
        assert!(t.session(&parts.join(".")).is_none());
        let other = Tokens(vec![(b"reader-token-123456".to_vec(), Role::Admin)]);
        let (forged, _) =
            Tokens(vec![(b"someone-elses-token".to_vec(), Role::Admin)]).sign_in(b"someone-elses-token").unwrap();
        assert!(t.session(&forged).is_none());
        assert_eq!(other.session(&cookie).map(|s| s.role), Some(Role::Admin), "the role is the token's now");
        let fp = fingerprint(b"admin-token-123456");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"admin-token-123456");
        let old = format!("v1.1000.{fp}.{}", hex(hmac::sign(&key, &session_message(1000)).as_ref()));
        assert!(t.session(&old).is_none(), "expired");
        for bad in ["", "v1", "v1.x.y.z", "v2.1.2.3", "v1.99999999999.ab.zz"] {
            assert!(t.session(bad).is_none(), "{bad}");
        }
    }
}

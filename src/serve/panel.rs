//! The web panel's files, compiled into the binary (nothing is read from
//! disk or fetched at run time, so it works air-gapped). The page is one
//! shell (`index.html`) and a script that talks to the `/v1` API like any
//! other client; every answer carries a Content Security Policy that allows
//! no inline script or style and no other origin.

use crate::http::{respond, Reply};
use hyper::header::HeaderValue;
use hyper::StatusCode;

/// The policy every panel answer carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Path → (content type, body). uPlot 1.6.32 (MIT): see panel/vendor/README.md.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("panel/index.html")),
    ("/assets/app.js", JS, include_str!("panel/app.js")),
    ("/assets/app.css", CSS, include_str!("panel/app.css")),
    ("/assets/uplot.iife.min.js", JS, include_str!("panel/vendor/uPlot.iife.min.js")),
    ("/assets/uplot.min.css", CSS, include_str!("panel/vendor/uPlot.min.css")),
];

/// The panel file at `path`, or `None`.
pub fn asset(path: &str) -> Option<Reply> {
    let path = if path == "/index.html" { "/" } else { path };
    let (_, content_type, body) = ASSETS.iter().find(|(p, ..)| *p == path)?;
    let mut r = respond(StatusCode::OK, content_type, *body);
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // The files change only with the binary: revalidate rather than cache
    // across an upgrade.
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    Some(r)
}

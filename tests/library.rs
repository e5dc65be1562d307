//! dtq as a library: a typed client, a worker routing two kinds, results,
//! waiting, and the errors a user meets (invalid jobs, undecodable
//! payloads, unknown kinds, bad settings).

mod common;

use common::*;
use dtq::{Client, Error, Job, JobContext, JobError, Router, Worker};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Resize {
    w: u32,
    h: u32,
}

impl Job for Resize {
    const KIND: &'static str = "image.resize";
    const QUEUE: &'static str = "images";
}

#[derive(Serialize, Deserialize)]
struct Notify {
    to: String,
}

impl Job for Notify {
    const KIND: &'static str = "notify";
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u32(..))
}

async fn client(redis: &Redis, prefix: &str) -> Client {
    Client::connect_with(&redis.url, &unique(prefix), Some(Duration::from_secs(10))).await.unwrap()
}

fn router() -> Router {
    Router::new()
        .route(|job: Resize, ctx: JobContext| async move {
            if job.w == 0 {
                return Err(JobError::permanent("zero width"));
            }
            Ok(serde_json::json!({"area": job.w * job.h, "attempt": ctx.attempt}))
        })
        .route(|_job: Notify, _ctx: JobContext| async move { Ok::<_, JobError>(()) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_client_and_worker_run_two_kinds_with_results() {
    let redis = Redis::shared();
    let client = client(&redis, "lib-typed").await;
    let a = client.enqueue(&Resize { w: 3, h: 4 }).id("r1").await.unwrap();
    assert_eq!((a.id.as_str(), a.queue.as_str(), a.duplicate), ("r1", "images", false));
    assert!(
        client.enqueue(&Resize { w: 3, h: 4 }).id("r1").await.unwrap().duplicate,
        "same id: a duplicate, not an error"
    );
    let n = client.enqueue(&Notify { to: "ann".into() }).max_retries(0).await.unwrap();
    assert_eq!(n.queue, "default");
    let bad = client.enqueue(&Resize { w: 0, h: 1 }).await.unwrap();
    let later = client.enqueue(&Notify { to: "bob".into() }).delay(Duration::from_secs(3600)).await.unwrap();
    let w = Worker::builder(&client)
        .queue("images", 2)
        .queue("default", 1)
        .concurrency(4)
        .router(router())
        .start()
        .unwrap();
    let done = client.wait("images", "r1", Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(done.state, "completed");
    assert_eq!(done.result, Some(serde_json::json!({"area": 12, "attempt": 1})));
    let n = client.wait("default", &n.id, Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!((n.state.as_str(), n.result.clone()), ("completed", None), "() keeps no result");
    let bad = client.wait("images", &bad.id, Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!((bad.state.as_str(), bad.error.as_deref()), ("dead", Some("zero width")));
    match client.wait("default", &later.id, Duration::from_millis(200)).await {
        Err(Error::Timeout { state, .. }) => assert_eq!(state, "scheduled"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_do_not_decode_and_unknown_kinds_are_permanent_failures() {
    let redis = Redis::shared();
    let client = client(&redis, "lib-decode").await;
    let wrong = client.enqueue_raw("image.resize", serde_json::json!({"w": "wide"})).queue("images").await.unwrap();
    let unknown = client.enqueue_raw("nobody.handles", 1).queue("images").await.unwrap();
    let w = Worker::builder(&client).queue("images", 1).router(router()).reaper(false).start().unwrap();
    let j = client.wait("images", &wrong.id, Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(j.state, "dead");
    let e = j.error.unwrap();
    assert!(e.contains("does not decode as") && e.contains("Resize"), "{e}");
    assert_eq!(j.attempts, 1, "not retried");
    let j = client.wait("images", &unknown.id, Duration::from_secs(10)).await.unwrap().unwrap();
    assert_eq!(j.error.as_deref(), Some("no handler for kind \"nobody.handles\""));
    w.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_jobs_and_settings_are_refused_with_the_rule() {
    let redis = Redis::shared();
    let client = client(&redis, "lib-invalid").await;
    match client.enqueue_raw("", 1).await {
        Err(Error::InvalidJob(m)) => assert!(m.contains("kind"), "{m}"),
        other => panic!("{other:?}"),
    }
    match client.enqueue(&Notify { to: "x".into() }).queue("bad queue").await {
        Err(Error::InvalidJob(m)) => assert!(m.contains("queue"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A batch: one invalid job enqueues none.
    let batch = vec![client.enqueue_raw("ok", 1), client.enqueue_raw("bad kind", 2)];
    match client.enqueue_batch(batch).await {
        Err(Error::InvalidJob(m)) => assert!(m.starts_with("job 2 (counting from 1)"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(client.broker().queue_stats("default").await.unwrap().pending == 0);
    let batch = (0..2500).map(|i| client.enqueue_raw("noop", i).id(format!("b{i}")));
    let done = client.enqueue_batch(batch).await.unwrap();
    assert_eq!(done.len(), 2500);
    assert!(done.iter().all(|e| !e.duplicate) && done[1].id == "b1");
    assert_eq!(client.broker().queue_stats("default").await.unwrap().pending, 2500);
    assert!(matches!(Worker::builder(&client).router(router()).start(), Err(Error::Config(_))), "no queue");
    assert!(matches!(Worker::builder(&client).queue("q", 1).start(), Err(Error::Config(_))), "no router");
    let e = Worker::builder(&client).queue("q", 1).concurrency(0).router(router()).start();
    assert!(matches!(e, Err(Error::Config(m)) if m.contains("concurrency")));
    assert!(matches!(Client::connect_with(&redis.url, "bad{ns}", None).await, Err(Error::Connect(_))));
}

#[test]
#[should_panic(expected = "routed twice")]
fn a_kind_routed_twice_is_a_mistake() {
    let _ = router().route(|_: Notify, _: JobContext| async { Ok::<_, JobError>(()) });
}

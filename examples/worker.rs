//! A worker with two typed kinds, stopped cleanly on Ctrl-C.
//!
//! ```sh
//! cargo run --example worker
//! ```

use dtq::{Client, Job, JobContext, JobError, Router, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Resize {
    url: String,
    width: u32,
}

impl Job for Resize {
    const KIND: &'static str = "image.resize";
    const QUEUE: &'static str = "images";
}

#[derive(Serialize, Deserialize)]
struct Notify {
    user: String,
}

impl Job for Notify {
    const KIND: &'static str = "notify";
}

#[tokio::main]
async fn main() -> Result<(), dtq::Error> {
    let url = std::env::var("DTQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = Client::connect(&url).await?;
    let router = Router::new()
        .route(|job: Resize, ctx: JobContext| async move {
            if job.width == 0 {
                // Permanent: dead-lettered now, no retries.
                return Err(JobError::permanent("width must be positive"));
            }
            println!("resizing {} to {} (attempt {})", job.url, job.width, ctx.attempt);
            // The Ok value is the job's result, kept with the completed job.
            Ok(serde_json::json!({ "thumbnail": format!("{}?w={}", job.url, job.width) }))
        })
        .route(|job: Notify, _ctx: JobContext| async move {
            println!("notifying {}", job.user);
            Ok::<_, JobError>(())
        });
    let worker =
        Worker::builder(&client).queue("images", 3).queue("default", 1).concurrency(16).router(router).start()?;
    tokio::signal::ctrl_c().await.ok();
    // Running jobs finish (within the shutdown grace), the rest go back.
    worker.shutdown().await
}

//! Enqueue typed jobs from Rust, then wait for one's result.
//!
//! ```sh
//! cargo run --example worker &      # runs them
//! cargo run --example producer
//! ```
//! (`DTQ_REDIS_URL` picks the Redis; default redis://127.0.0.1:6379.)

use dtq::{Client, Job};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Serialize, Deserialize)]
struct Resize {
    url: String,
    width: u32,
}

impl Job for Resize {
    const KIND: &'static str = "image.resize";
    const QUEUE: &'static str = "images";
}

#[tokio::main]
async fn main() -> Result<(), dtq::Error> {
    let url = std::env::var("DTQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = Client::connect(&url).await?;
    // One job with options; an id of your own makes re-sending safe.
    let job = Resize { url: "https://example.com/cat.png".into(), width: 640 };
    let sent = client.enqueue(&job).id("cat-640").max_retries(5).timeout(Duration::from_secs(60)).await?;
    println!("{} in queue {} (duplicate: {})", sent.id, sent.queue, sent.duplicate);
    // Many at once: validated first, then batched script calls.
    let batch = (1..=3).map(|i| client.enqueue(&Resize { url: format!("https://example.com/{i}.png"), width: 128 }));
    for e in client.enqueue_batch(batch).await? {
        println!("{} enqueued", e.id);
    }
    match client.wait("images", &sent.id, Duration::from_secs(30)).await {
        Ok(Some(done)) => println!("{}: {} with result {:?}", done.id, done.state, done.result),
        Ok(None) => println!("{} is no longer stored", sent.id),
        Err(e) => println!("not finished: {e}"),
    }
    Ok(())
}

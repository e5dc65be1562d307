//! A service that enqueues from inside its own tokio runtime, with one
//! client shared by every task (the client is a cheap clone over one
//! connection pool).
//!
//! ```sh
//! cargo run --example service
//! ```

use dtq::{Client, Job};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Audit {
    user: u64,
    action: String,
}

impl Job for Audit {
    const KIND: &'static str = "audit.record";
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The service's own runtime, built however the service likes.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let url = std::env::var("DTQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = Client::connect(&url).await?;
        // Request handlers would each hold a clone; here, 100 concurrent tasks.
        let tasks: Vec<_> = (0..100)
            .map(|user| {
                let client = client.clone();
                tokio::spawn(async move { client.enqueue(&Audit { user, action: "login".into() }).await })
            })
            .collect();
        let mut enqueued = 0;
        for t in tasks {
            if t.await?.is_ok() {
                enqueued += 1;
            }
        }
        println!("enqueued {enqueued} audit jobs from 100 tasks");
        Ok(())
    })
}

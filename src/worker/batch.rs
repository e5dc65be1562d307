//! Request batching for the pipeline's Redis stages (idempotency guard, rate
//! limiter): concurrent executions each ask for one item; a task coalesces
//! what arrived while its previous flush ran into one script call per key
//! (queue or kind), so a stage costs a fraction of a call per job instead of
//! one. Each job still waits for its own answer before it goes on.

use crate::broker::BrokerError;
use futures::future::join_all;
use std::future::Future;
use tokio::sync::{mpsc, oneshot};

/// Most requests flushed at once.
const MAX_FLUSH: usize = 256;

type Reply<R> = oneshot::Sender<Result<R, BrokerError>>;

/// Sends requests to a batcher task; the task ends when every `Batcher`
/// clone is dropped.
pub struct Batcher<K, T, R> {
    tx: mpsc::UnboundedSender<(K, T, Reply<R>)>,
    op: &'static str,
}

impl<K, T, R> Batcher<K, T, R>
where
    K: PartialEq + Send + 'static,
    T: Send + 'static,
    R: Send + 'static,
{
    /// Starts the task. `flush(key, items)` makes one call for items sharing
    /// a key and returns one result per item, in order.
    pub fn spawn<F, Fut>(op: &'static str, flush: F) -> Self
    where
        F: Fn(K, Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<R>, BrokerError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, flush, op));
        Batcher { tx, op }
    }

    /// Asks for one item, batched with concurrent requests of the same key.
    /// The request is sent at once, not when the answer is first awaited
    /// (dropping the answer unheard does not withdraw it).
    pub fn call(&self, key: K, item: T) -> impl Future<Output = Result<R, BrokerError>> + use<K, T, R> {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send((key, item, reply)).map_err(|_| stopped(self.op));
        let op = self.op;
        async move {
            sent?;
            answer.await.map_err(|_| stopped(op))?
        }
    }
}

fn stopped(op: &'static str) -> BrokerError {
    BrokerError::Reply { op, detail: "the batching task stopped".into() }
}

async fn run<K, T, R, F, Fut>(mut rx: mpsc::UnboundedReceiver<(K, T, Reply<R>)>, flush: F, op: &'static str)
where
    K: PartialEq,
    F: Fn(K, Vec<T>) -> Fut,
    Fut: Future<Output = Result<Vec<R>, BrokerError>>,
{
    let mut batch = Vec::with_capacity(MAX_FLUSH);
    while rx.recv_many(&mut batch, MAX_FLUSH).await > 0 {
        let groups = crate::group::group_by(batch.drain(..).map(|(key, item, reply)| (key, (item, reply))));
        join_all(groups.into_iter().map(|(key, requests)| {
            let (items, replies): (Vec<T>, Vec<Reply<R>>) = requests.into_iter().unzip();
            let call = flush(key, items);
            async move {
                match call.await {
                    Ok(results) if results.len() == replies.len() => {
                        for (reply, r) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Ok(results) => {
                        let e = BrokerError::Reply {
                            op,
                            detail: format!("{} results for {} requests", results.len(), replies.len()),
                        };
                        replies.into_iter().for_each(|reply| drop(reply.send(Err(e.clone()))));
                    }
                    Err(e) => replies.into_iter().for_each(|reply| drop(reply.send(Err(e.clone())))),
                }
            }
        }))
        .await;
    }
}

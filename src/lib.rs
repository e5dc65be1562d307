//! dtq: a distributed task queue on Redis.
//!
//! For applications: [`Client`] enqueues typed [`Job`]s and reads them back,
//! [`Router`] and [`Worker`] run them (see the `client` example below and
//! `examples/`). Underneath, [`broker::Broker`] speaks to Redis (every state
//! transition is one Lua script), [`worker::run`] runs jobs through a
//! [`worker::Handler`], and [`reaper::run`] recovers expired leases and
//! promotes scheduled jobs. With the default `cli` feature the `dtq` binary
//! wires them to the command line; `default-features = false` builds the
//! library alone.

#![warn(missing_docs)]

pub mod broker;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
mod client;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cmd;
pub mod config;
mod group;
#[cfg(feature = "cli")]
pub mod http;
pub mod job;
pub mod keys;
pub mod metrics;
pub mod reaper;
pub mod retention;
pub mod schedule;
#[cfg(feature = "cli")]
pub mod serve;
pub mod status;
pub mod worker;

pub use broker::JobInfo;
pub use client::{
    CancelReason, Client, Enqueue, Enqueued, Error, Job, JobContext, JobError, Router, Worker, WorkerBuilder,
    WorkerHandle,
};

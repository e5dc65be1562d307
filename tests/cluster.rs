//! The lifecycle and pipeline on a real 3-master Redis Cluster: every script
//! runs unchanged, queues spread across slots and nodes, and the weighted
//! dequeue works across them.

mod common;

use common::*;
use std::time::Duration;

const QUEUES: [&str; 4] = ["emails", "billing", "reports", "thumbs"];

#[test]
fn queues_spread_over_several_nodes() {
    let c = Cluster::shared();
    let nodes: std::collections::HashSet<u16> =
        QUEUES.iter().map(|q| c.node_of(&format!("t-x:{{{q}}}:pending"))).collect();
    assert!(nodes.len() >= 2, "the test queues must live on different nodes: {nodes:?}");
}

#[test]
fn the_whole_lifecycle_runs_on_a_cluster() {
    let c = Cluster::shared();
    let d = c.dtq("cluster-life");
    let mut lines = Vec::new();
    for q in QUEUES {
        for i in 0..50 {
            lines.push(format!(r#"{{"kind":"noop","queue":"{q}","id":"{q}-{i}"}}"#));
        }
        lines.push(format!(r#"{{"kind":"fail","payload":{{"p":1}},"queue":"{q}","max_retries":1}}"#));
        lines.push(format!(r#"{{"kind":"noop","queue":"{q}","delay":"500ms"}}"#));
        lines.push(format!(r#"{{"kind":"noop","queue":"{q}","idempotency_key":"k-{q}"}}"#));
        lines.push(format!(r#"{{"kind":"noop","queue":"{q}","idempotency_key":"k-{q}"}}"#));
    }
    let f = ndjson(&lines);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    // Duplicate ids are caught per queue on whichever node holds it.
    let ids: Vec<String> = lines.iter().filter(|l| l.contains("\"id\"")).cloned().collect();
    let g = ndjson(&ids);
    let again = d.ok(&["produce", "--file", g.path().to_str().unwrap(), "--json"]);
    assert_eq!(again.lines().count(), 200);
    assert!(again.lines().all(|l| l.contains("duplicate")), "{again}");
    let queues = QUEUES.iter().map(|q| format!("{q}:2")).collect::<Vec<_>>().join(",");
    let _w = d.worker(&[
        "--queues",
        &queues,
        "--backoff-base",
        "50ms",
        "--backoff-max",
        "100ms",
        "--reap-interval",
        "100ms",
    ]);
    let drained = eventually(Duration::from_secs(30), || {
        QUEUES.iter().all(|q| d.stat(q, "processed") == 53 && d.stat(q, "dead") == 1)
    });
    assert!(drained, "{}", d.ok(&["inspect", "stats"]));
    for q in QUEUES {
        let s = d.stats(q);
        assert_eq!(
            (s["pending"].as_u64(), s["scheduled"].as_u64(), s["inflight"].as_u64()),
            (Some(0), Some(0), Some(0)),
            "{q}: {s}"
        );
        assert_eq!(s["failed"], 2, "{q}");
    }
    let dead: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "dead-letter", "--json"])).unwrap();
    assert_eq!(dead.as_array().unwrap().len(), 4);
    d.ok(&["admin", "requeue", "--all", "--queue", "billing"]);
    wait_until(Duration::from_secs(10), || d.stat("billing", "failed") == 4 && d.stat("billing", "dead") == 1);
}

#[test]
fn a_killed_worker_is_recovered_on_a_cluster() {
    let c = Cluster::shared();
    let d = c.dtq("cluster-kill");
    let ledger = Ledger::new();
    let exec = ledger.exec("sleep 1");
    for q in ["emails", "billing"] {
        d.ok(&["produce", "--kind", "slow", "--count", "4", "--queue", q]);
    }
    let args = ["--queues", "emails,billing", "--exec", &exec, "--concurrency", "8", "--visibility-timeout", "1s"];
    let mut victim = d.worker(&[&args[..], &["--no-reaper"]].concat());
    wait_until(Duration::from_secs(10), || ledger.entries().len() == 8);
    victim.kill9();
    let _w = d.worker(&[&args[..], &["--reap-interval", "100ms"]].concat());
    wait_until(Duration::from_secs(20), || d.stat("emails", "processed") == 4 && d.stat("billing", "processed") == 4);
    assert_eq!(ledger.entries().len(), 16);
}

#[test]
fn weighted_dequeue_works_across_nodes() {
    let c = Cluster::shared();
    let d = c.dtq("cluster-weights");
    for q in ["emails", "billing"] {
        d.ok(&["produce", "--kind", "noop", "--count", "3000", "--queue", q]);
        d.ok(&["admin", "pause", q]);
    }
    let _w = d.worker(&["--queues", "emails:3,billing:1", "--concurrency", "4", "--max-batch", "4"]);
    std::thread::sleep(Duration::from_millis(500));
    for q in ["emails", "billing"] {
        d.ok(&["admin", "resume", q]);
    }
    // The queues are resumed one after the other (their keys live on
    // different nodes), so measure from a point where both run: the shares
    // of the jobs taken between two samples, each read in one call.
    let queues = ["emails", "billing"];
    wait_until(Duration::from_secs(30), || d.processed(&queues)[0] >= 500.0);
    let first = d.processed(&queues);
    wait_until(Duration::from_secs(30), || d.processed(&queues)[0] >= 2000.0);
    let last = d.processed(&queues);
    let (e, b) = (last[0] - first[0], last[1] - first[1]);
    let share = e / (e + b);
    assert!((share - 0.75).abs() < 0.03, "emails share {share} ({e} vs {b} jobs)");
}

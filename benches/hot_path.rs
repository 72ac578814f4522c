//! Hot-path micro-benchmarks: what pgward adds per message and per statement.
//!
//! Run: `cargo bench --bench hot_path`. Numbers go in README.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use pgward::config::Config;
use pgward::inspect::cache::InspectCache;
use pgward::inspect::inspect;
use pgward::policy::{Policy, SearchPath};
use pgward::protocol::frame::{FrameReader, Want};
use pgward::protocol::reply::{PgError, Severity};

const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const WORKER_READ: &str = "SELECT j.id, j.case_number FROM public.judgments j JOIN public.plaintiffs p ON p.id = j.plaintiff_id WHERE j.status = $1";
const WORKER_WRITE: &str = "DELETE FROM ONLY ops.job_queue WHERE status = 'failed'";

fn shipped_policy() -> Policy {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policy.yaml");
    let config = Config::load(std::path::Path::new(path)).expect("shipped policy.yaml loads");
    Policy::from_config(&config)
}

fn classify_and_decide(c: &mut Criterion) {
    let policy = shipped_policy();
    let worker = policy.class_for_user("dragonfly_app");
    let path = SearchPath::Known(vec!["$user".into(), "public".into()]);
    let mut g = c.benchmark_group("classify+decide");
    for (name, sql) in [
        ("select", SELECT),
        ("worker_read", WORKER_READ),
        ("worker_write", WORKER_WRITE),
    ] {
        g.bench_function(format!("cold/{name}"), |b| {
            b.iter(|| {
                let stmts = inspect(black_box(sql)).unwrap();
                for s in &stmts {
                    black_box(policy.decide(worker, "dragonfly_app", s, &path));
                }
            })
        });
        let cache = InspectCache::new(1000);
        let _ = cache.get(sql);
        g.bench_function(format!("cache_hit/{name}"), |b| {
            b.iter(|| {
                let inspection = cache.get(black_box(sql));
                for s in inspection.as_ref().as_ref().unwrap() {
                    black_box(policy.decide(worker, "dragonfly_app", s, &path));
                }
            })
        });
    }
    // Simple protocol with inlined literals (pgbench -M simple): every text is
    // new, but all share one shape, so the cache still hits.
    let cache = InspectCache::new(1000);
    let mut aid = 0u32;
    g.bench_function("shape_hit/select_literal", |b| {
        b.iter(|| {
            aid = (aid + 7919) % 1_000_000;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
            let inspection = cache.get(black_box(&sql));
            for s in inspection.as_ref().as_ref().unwrap() {
                black_box(policy.decide(worker, "dragonfly_app", s, &path));
            }
        })
    });
    g.finish();
}

fn frames(c: &mut Criterion) {
    // A pgbench-like extended-protocol batch: Bind, Execute, Sync.
    let mut batch = Vec::new();
    for (tag, body) in [
        (b'B', &b"\0\0\0\0\0\x01\0\0\0\x041234\0\x01\0\x01"[..]),
        (b'E', b"\0\0\0\0\0"),
        (b'S', b""),
    ] {
        batch.push(tag);
        batch.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        batch.extend_from_slice(body);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("frame/split_bind_execute_sync", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut reader = FrameReader::new(&batch[..], 1 << 20);
                while let Some(piece) = reader.next(|_| Want::Whole).await.unwrap() {
                    black_box(piece);
                }
            })
        })
    });
    c.bench_function("frame/encode_refusal", |b| {
        let err = PgError::new(
            Severity::Error,
            "42501",
            "pgward: write on ops.job_queue denied",
        )
        .with_hint("use ops.queue_job(...)");
        b.iter(|| {
            let mut buf = BytesMut::new();
            err.encode(&mut buf);
            black_box(buf)
        })
    });
}

/// Tenant injection: planning where `SET LOCAL` goes in a simple Query and
/// splicing it into the text (the per-transaction cost pgward adds).
fn tenant_injection(c: &mut Criterion) {
    use pgward::tenant::inject::TenantInjector;
    let set_local = pgward::tenant::set_local_sql("app.current_tenant", "acme");
    let mut g = c.benchmark_group("tenant_injection");
    for (name, sql) in [
        ("lone_select", WORKER_READ),
        ("begin_block", "BEGIN; SELECT 1; COMMIT"),
    ] {
        let stmts = inspect(sql).unwrap();
        g.bench_function(format!("plan_query/{name}"), |b| {
            let mut injector = TenantInjector::new(set_local.clone());
            b.iter(|| black_box(injector.plan_query(black_box(sql), &stmts, false)))
        });
    }
    g.bench_function("before_execution+synced", |b| {
        let mut injector = TenantInjector::new(set_local.clone());
        b.iter(|| {
            black_box(injector.before_execution(false));
            injector.synced();
        })
    });
    g.finish();
}

criterion_group!(benches, classify_and_decide, frames, tenant_injection);
criterion_main!(benches);

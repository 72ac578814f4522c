//! Audit micro-benchmarks: what a statement record costs the session
//! (`record`: timestamp + enqueue) and the writer (normalize, serialize, hash).
//!
//! Run: `cargo bench --bench audit`.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use pgward::audit::{
    AuditConfig, AuditDecision, AuditObject, Auditor, Encoder, Event, FileSinkConfig, Outcome,
    Protocol, SinksConfig, StatementRecord,
};
use pgward::inspect::Action;

fn sample() -> StatementRecord {
    StatementRecord {
        session_id: 42,
        peer: "10.0.3.17:53122".into(),
        identity: "dragonfly_app".into(),
        identity_class: "worker".into(),
        upstream_user: "dragonfly_app".into(),
        database: "dragonfly".into(),
        tenant: Some("tenant-0042".into()),
        protocol: Protocol::Extended,
        statement_text:
            "SELECT j.id, j.case_number FROM public.judgments j JOIN public.plaintiffs p \
                         ON p.id = j.plaintiff_id WHERE j.status = 'open' AND p.id = 12345"
                .into(),
        statement_kind: "SELECT".into(),
        objects: vec![
            AuditObject {
                action: Action::Read,
                schema: Some("public".into()),
                name: "judgments".into(),
            },
            AuditObject {
                action: Action::Read,
                schema: Some("public".into()),
                name: "plaintiffs".into(),
            },
        ]
        .into(),
        decision: AuditDecision::Allow,
        rule: None,
        reason: "".into(),
        outcome: Some(Outcome::Tag("SELECT 12".into())),
        rows: Some(12),
        duration_us: 812,
    }
}

fn encode(c: &mut Criterion) {
    let event: Event = sample().into();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("audit/encode");
    // Normalization cached (repeated text, e.g. prepared statements).
    let mut enc = Encoder::new(None, false);
    let mut out = Vec::with_capacity(1024);
    g.bench_function("statement/cached", |b| {
        b.iter(|| {
            out.clear();
            enc.encode_into(now, black_box(&event), &mut out);
            black_box(&out);
        })
    });
    // Texts differing only in an inlined integer (simple protocol): one
    // normalization per shape, then cache hits.
    let mut enc = Encoder::new(None, false);
    let mut n = 0u32;
    g.bench_function("statement/shape_hit", |b| {
        b.iter(|| {
            n = (n + 7919) % 1_000_000;
            let mut record = sample();
            record.statement_text =
                format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n}").into();
            let event: Event = record.into();
            out.clear();
            enc.encode_into(now, black_box(&event), &mut out);
            black_box(&out);
        })
    });
    // A text (and shape) never seen before: pg_query::normalize runs.
    g.bench_function("statement/uncached", |b| {
        b.iter(|| {
            let mut enc = Encoder::new(None, false);
            out.clear();
            enc.encode_into(now, black_box(&event), &mut out);
            black_box(&out);
        })
    });
    let mut enc = Encoder::new(None, true);
    g.bench_function("statement/full_text", |b| {
        b.iter(|| {
            out.clear();
            enc.encode_into(now, black_box(&event), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn auditor(dir: &std::path::Path) -> Auditor {
    let cfg = AuditConfig {
        sinks: SinksConfig {
            file: Some(FileSinkConfig::new(dir.join("bench-audit.jsonl"))),
            stdout: false,
        },
        ..AuditConfig::default()
    };
    Auditor::start(&cfg).expect("auditor starts").0
}

/// Enqueue cost as a session pays it, measured in chunks that fit the queue
/// (so the writer's speed is not what is measured); the queue is drained
/// between chunks, outside the measurement.
fn record(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auditor = auditor(dir.path());
    let template = sample();
    const CHUNK: u64 = 16_384;
    let mut g = c.benchmark_group("audit/record");
    g.bench_function("clone_event_only", |b| {
        b.iter(|| black_box(template.clone()))
    });
    g.bench_function("record", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..n {
                        auditor.record(template.clone()).await.unwrap();
                    }
                });
                total += start.elapsed();
                rt.block_on(auditor.flush()).unwrap();
            }
            total
        })
    });
    // Events built before the clock starts: the queueing alone.
    g.bench_function("record_prebuilt", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let events: Vec<StatementRecord> = (0..n).map(|_| template.clone()).collect();
                let start = Instant::now();
                rt.block_on(async {
                    for e in events {
                        auditor.record(e).await.unwrap();
                    }
                });
                total += start.elapsed();
                rt.block_on(auditor.flush()).unwrap();
            }
            total
        })
    });
    g.bench_function("try_record", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                left -= n;
                let start = Instant::now();
                for _ in 0..n {
                    auditor.try_record(template.clone()).unwrap();
                }
                total += start.elapsed();
                rt.block_on(auditor.flush()).unwrap();
            }
            total
        })
    });
    g.finish();
    // Writer throughput: 1,000 records queued, written, fsynced.
    let mut g = c.benchmark_group("audit/writer");
    g.sample_size(20);
    g.bench_function("1000_records+flush", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..1000 {
                    auditor.record(template.clone()).await.unwrap();
                }
                auditor.flush().await.unwrap();
            })
        })
    });
    g.finish();
    rt.block_on(auditor.shutdown()).unwrap();
}

criterion_group!(benches, encode, record);
criterion_main!(benches);

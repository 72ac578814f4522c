//! The audit stream of a real session: every statement run or refused leaves
//! one record (with identity, tenant, decision, outcome and normalized text),
//! connection events bracket it, the chain verifies, and a kill -9 loses
//! nothing that was synced.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn shipped_policy() -> String {
    std::fs::read_to_string(repo_path("policy.yaml")).unwrap()
}

fn verify(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn of_type<'a>(records: &'a [Value], t: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == t).collect()
}

async fn wait_for_records(proxy: &ProxyProcess, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..100 {
        let records = proxy.audit_records();
        if pred(&records) {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("audit records never arrived: {:#?}", proxy.audit_records());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_and_session_event_is_recorded() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("audit_trail");
    let proxy = ProxyProcess::start(pg.port(), &shipped_policy());
    let worker = connect_with_options(
        HOST,
        proxy.port(),
        WORKER_USER,
        WORKER_PASSWORD,
        &db,
        "-c app.current_tenant=acme",
    )
    .await;
    worker
        .simple_query("SELECT count(*) FROM public.judgments WHERE principal_amount > 4242")
        .await
        .unwrap();
    let refused = worker
        .batch_execute("DELETE FROM ops.job_queue WHERE job_type = 'secret-literal'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), Some("42501"));
    worker.simple_query("SELECT 1; SELECT 2").await.unwrap();
    let stmt = worker
        .prepare("SELECT case_number FROM public.judgments WHERE id = $1")
        .await
        .unwrap();
    for id in [1i64, 2, 3] {
        worker.query(&stmt, &[&id]).await.unwrap();
    }
    assert!(worker.batch_execute("SELECT 1/0").await.is_err());
    drop(worker);

    let records = wait_for_records(&proxy, |r| !of_type(r, "disconnect").is_empty()).await;
    let statements = of_type(&records, "statement");
    // 1 + 1 refused + 2 + 3 executions + 1 failing.
    assert_eq!(statements.len(), 8, "{statements:#?}");
    for s in &statements {
        assert_eq!(s["identity"], WORKER_USER);
        assert_eq!(s["identity_class"], "worker");
        assert_eq!(s["tenant"], "acme");
        assert_eq!(s["database"], db.as_str());
    }
    let first = statements[0];
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["outcome"]["tag"], "SELECT 1");
    assert_eq!(first["rows"], 1);
    assert!(
        !first["text"].as_str().unwrap().contains("4242"),
        "literals must be normalized: {first}"
    );
    let denied = statements[1];
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["rule"], "protected-schemas");
    assert_eq!(denied["outcome"]["sqlstate"], "42501");
    assert_eq!(denied["kind"], "DELETE");
    assert!(!denied["text"].as_str().unwrap().contains("secret-literal"));
    assert!(
        denied["objects"].to_string().contains("job_queue"),
        "{denied}"
    );
    assert_eq!(statements[2]["outcome"]["tag"], "SELECT 1");
    assert_eq!(statements[3]["outcome"]["tag"], "SELECT 1");
    let executions: Vec<_> = statements[4..7]
        .iter()
        .map(|s| s["protocol"].clone())
        .collect();
    assert_eq!(executions, vec!["extended"; 3]);
    assert_eq!(statements[7]["outcome"]["sqlstate"], "22012");

    let auth = of_type(&records, "auth");
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0]["tenant"], "acme");
    assert_eq!(auth[0]["ok"], true);
    assert_eq!(of_type(&records, "connect").len(), 1);
    let disconnect = of_type(&records, "disconnect")[0];
    assert_eq!(disconnect["statements"], 8);
    assert_eq!(disconnect["denied"], 1);

    // A refused startup is recorded too.
    let err = try_connect(HOST, proxy.port(), WORKER_USER, WORKER_PASSWORD, &db)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(sqlstate(&err), Some("28000"));
    wait_for_records(&proxy, |r| !of_type(r, "startup_refused").is_empty()).await;

    // A failed authentication is an `auth` record with ok = false.
    let err = connect_with_options_result(&proxy, &db, "wrong-password").await;
    assert_eq!(sqlstate(&err), Some("28P01"), "{}", describe_error(&err));
    let records = wait_for_records(&proxy, |r| of_type(r, "auth").len() >= 2).await;
    let failed = of_type(&records, "auth")
        .into_iter()
        .find(|r| r["ok"] == false)
        .expect("an auth record with ok = false");
    assert_eq!(failed["identity"], WORKER_USER);
    assert_eq!(failed["identity_class"], "worker");

    let (code, out) = verify(&proxy.audit_path());
    assert_eq!(code, Some(0), "{out}");
}

async fn connect_with_options_result(
    proxy: &ProxyProcess,
    db: &str,
    password: &str,
) -> tokio_postgres::Error {
    let mut config = pg_config(HOST, proxy.port(), WORKER_USER, password, db);
    config.options("-c app.current_tenant=acme");
    try_connect_config(&config)
        .await
        .map(|_| ())
        .expect_err("a wrong password must be refused")
}

/// kill -9 under load: the chain still verifies (a torn last line is
/// tolerated), and every statement that completed before the last fsync
/// (default interval 200 ms) is in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_that_was_synced() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("audit_kill");
    let proxy = ProxyProcess::start(pg.port(), &shipped_policy());
    let worker = connect_with_options(
        HOST,
        proxy.port(),
        WORKER_USER,
        WORKER_PASSWORD,
        &db,
        "-c app.current_tenant=acme",
    )
    .await;
    for i in 0..300 {
        worker
            .simple_query(&format!("SELECT {i} AS synced_batch"))
            .await
            .unwrap();
    }
    // Past the fsync interval: all of the above must be durable.
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Then more load, killed in the middle.
    let load = tokio::spawn(async move {
        for i in 0..100_000 {
            if worker
                .simple_query(&format!("SELECT {i} AS in_flight"))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.signal("KILL");
    let _ = tokio::time::timeout(Duration::from_secs(10), load).await;

    let (code, out) = verify(&proxy.audit_path());
    assert_eq!(code, Some(0), "{out}");
    let synced = proxy
        .audit_records()
        .iter()
        .filter(|r| {
            r["type"] == "statement"
                && r["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("synced_batch"))
        })
        .count();
    assert_eq!(
        synced, 300,
        "statements answered before the last sync must be recorded"
    );
}

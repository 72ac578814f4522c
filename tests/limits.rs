//! Limits protect pgward and the database from clients: each exceeded limit
//! gives the client a clear PostgreSQL error (and is counted), and the proxy
//! keeps serving everyone else.

mod support;

use std::time::Duration;

use support::*;

fn policy(limits: &str, service_max: &str) -> String {
    format!(
        "limits:\n{limits}\nidentities:\n  default_class: open\n  classes:\n    open:\n      restricted: false\n    capped:\n      restricted: false\n      users: [{SCRAM_USER}]\n      max_connections: {service_max}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_total_limit_are_refused_with_53300() {
    let pg = PgCluster::shared();
    let proxy = ProxyProcess::start(pg.port(), &policy("  max_client_connections: 3", "100"));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            proxy
                .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
                .await,
        );
    }
    let err = try_connect(
        HOST,
        proxy.port(),
        SUPERUSER,
        SUPERUSER_PASSWORD,
        "postgres",
    )
    .await
    .map(|_| ())
    .expect_err("a fourth client must be refused");
    assert_eq!(sqlstate(&err), Some("53300"), "{}", describe_error(&err));
    // The held sessions still work, and a slot frees when one leaves.
    for c in &held {
        c.batch_execute("SELECT 1").await.unwrap();
    }
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = try_connect(
            HOST,
            proxy.port(),
            SUPERUSER,
            SUPERUSER_PASSWORD,
            "postgres",
        )
        .await
        {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    again
        .expect("a freed slot must be usable")
        .batch_execute("SELECT 1")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_over_its_limit_is_refused_while_others_connect() {
    let pg = PgCluster::shared();
    let proxy = ProxyProcess::start(pg.port(), &policy("  {}", "1"));
    let first = proxy.connect(SCRAM_USER, SCRAM_PASSWORD, "postgres").await;
    let err = try_connect(HOST, proxy.port(), SCRAM_USER, SCRAM_PASSWORD, "postgres")
        .await
        .map(|_| ())
        .expect_err("a second session of the capped class must be refused");
    assert_eq!(sqlstate(&err), Some("53300"), "{}", describe_error(&err));
    assert!(
        describe_error(&err).contains("class capped"),
        "{}",
        describe_error(&err)
    );
    // Another class is unaffected; the first session works.
    let other = proxy
        .connect(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
        .await;
    other.batch_execute("SELECT 1").await.unwrap();
    first.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_with_57p05_but_busy_ones_are_not() {
    let pg = PgCluster::shared();
    let proxy = ProxyProcess::start(pg.port(), &policy("  idle_client_timeout_ms: 700", "100"));
    let (client, connection) = pg_config(
        HOST,
        proxy.port(),
        SUPERUSER,
        SUPERUSER_PASSWORD,
        "postgres",
    )
    .connect(tokio_postgres::NoTls)
    .await
    .unwrap();
    let conn = tokio::spawn(connection);
    // A query longer than the timeout is not idleness.
    client.batch_execute("SELECT pg_sleep(1.2)").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("connection must end");
    let err = outcome
        .unwrap()
        .expect_err("the idle session must be closed with an error");
    assert_eq!(sqlstate(&err), Some("57P05"), "{}", describe_error(&err));
    assert!(client.batch_execute("SELECT 1").await.is_err());
}

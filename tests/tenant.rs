//! Tenant injection and tamper-proofing, proven with row-level security on
//! the real demo tables: every transaction of a worker runs with its tenant
//! set LOCAL, in every protocol shape, and nothing the client sends can
//! change, clear or escape it. The shipped policy.yaml is used as is.

mod support;

use std::time::Duration;

use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

fn shipped_policy() -> String {
    std::fs::read_to_string(repo_path("policy.yaml")).unwrap()
}

async fn worker(proxy: &ProxyProcess, db: &str, tenant: &str) -> Client {
    connect_with_options(
        HOST,
        proxy.port(),
        WORKER_USER,
        WORKER_PASSWORD,
        db,
        &format!("-c app.current_tenant={tenant}"),
    )
    .await
}

/// Distinct tenant ids the client can see in public.judgments, three ways:
/// simple query, unnamed extended statement, named prepared statement.
async fn visible_tenants(c: &Client) -> [Vec<String>; 3] {
    const SQL: &str = "SELECT DISTINCT tenant_id FROM public.judgments ORDER BY 1";
    let simple = c
        .simple_query(SQL)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    let unnamed = c
        .query_typed(SQL, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stmt = c.prepare(SQL).await.unwrap();
    let named = c
        .query(&stmt, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    [simple, unnamed, named]
}

fn only(tenant: &str) -> [Vec<String>; 3] {
    let v = vec![tenant.to_string()];
    [v.clone(), v.clone(), v]
}

async fn setup(name: &str) -> (&'static PgCluster, String, ProxyProcess) {
    let pg = PgCluster::shared();
    let db = pg.demo_database(name);
    let proxy = ProxyProcess::start(pg.port(), &shipped_policy());
    (pg, db, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_only_its_rows_in_every_protocol() {
    let (_pg, db, proxy) = setup("tenant_isolation").await;
    let acme = worker(&proxy, &db, "acme").await;
    let globex = worker(&proxy, &db, "globex").await;
    assert_eq!(visible_tenants(&acme).await, only("acme"));
    assert_eq!(visible_tenants(&globex).await, only("globex"));

    // Inside explicit transactions too, however they begin.
    for begin in [
        "BEGIN",
        "START TRANSACTION",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "BEGIN; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        acme.batch_execute(begin)
            .await
            .unwrap_or_else(|e| panic!("{begin}: {}", describe_error(&e)));
        assert_eq!(visible_tenants(&acme).await, only("acme"), "after {begin}");
        acme.batch_execute("COMMIT").await.unwrap();
    }
    let iso: String = {
        acme.batch_execute("BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            .await
            .unwrap();
        let v = acme
            .query_one("SHOW transaction_isolation", &[])
            .await
            .unwrap()
            .get(0);
        acme.batch_execute("COMMIT").await.unwrap();
        v
    };
    assert_eq!(iso, "serializable", "SET TRANSACTION must still be first");

    // tokio-postgres transactions (extended-protocol BEGIN) and savepoints.
    let mut acme = acme;
    let mut tx = acme.transaction().await.unwrap();
    let seen: Vec<String> = tx
        .query("SELECT DISTINCT tenant_id FROM public.judgments", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec!["acme"], "inside a tokio-postgres transaction");
    let sp = tx.savepoint("sp").await.unwrap();
    assert!(sp.query("SELECT 1/0", &[]).await.is_err());
    sp.rollback().await.unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM public.judgments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 3,
        "after ROLLBACK TO SAVEPOINT acme still sees its 3 rows"
    );
    tx.commit().await.unwrap();

    // COMMIT AND CHAIN starts a new transaction that needs the tenant too.
    acme.batch_execute("BEGIN").await.unwrap();
    acme.batch_execute("COMMIT AND CHAIN").await.unwrap();
    assert_eq!(
        visible_tenants(&acme).await,
        only("acme"),
        "after COMMIT AND CHAIN"
    );
    acme.batch_execute("COMMIT").await.unwrap();

    // After an error in a block and its rollback.
    acme.batch_execute("BEGIN").await.unwrap();
    assert!(acme.batch_execute("SELECT 1/0").await.is_err());
    acme.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        visible_tenants(&acme).await,
        only("acme"),
        "after a failed block"
    );

    // Multi-statement text with a COMMIT in the middle.
    let rows = acme
        .simple_query(
            "BEGIN; SELECT 1; COMMIT; SELECT count(*) FROM public.judgments WHERE tenant_id = 'acme'",
        )
        .await
        .unwrap();
    let counts: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(counts, vec!["1", "3"]);
    // The client sees exactly its own statements' completions.
    let completions = rows
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(
        completions, 4,
        "no CommandComplete of pgward's SET LOCAL may leak"
    );

    // pipelined extended queries
    let futures: Vec<_> = (0..20)
        .map(|_| {
            globex.query(
                "SELECT count(*) FROM public.judgments WHERE tenant_id <> 'globex'",
                &[],
            )
        })
        .collect();
    for rows in futures::future::join_all(futures).await {
        assert_eq!(rows.unwrap()[0].get::<_, i64>(0), 0);
    }
}

/// pgward takes the tenant out of the startup options (it is set LOCAL per
/// transaction, never as a session default) and forwards the rest of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_startup_options_still_reach_the_server() {
    let (_pg, db, proxy) = setup("tenant_options").await;
    let acme = connect_with_options(
        HOST,
        proxy.port(),
        WORKER_USER,
        WORKER_PASSWORD,
        &db,
        "-c app.current_tenant=acme -c statement_timeout=4321",
    )
    .await;
    let timeout: String = acme
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "4321ms");
    assert_eq!(visible_tenants(&acme).await, only("acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_without_a_valid_tenant_is_refused() {
    let (_pg, db, proxy) = setup("tenant_startup").await;
    for options in [
        None,
        Some("-c statement_timeout=5000"),
        Some("-c app.current_tenant=initech"),
        Some("-c app.current_tenant=acme'--"),
        Some("-c app.current_tenant=acme -c app.current_tenant=globex"),
    ] {
        let mut config = pg_config(HOST, proxy.port(), WORKER_USER, WORKER_PASSWORD, &db);
        if let Some(o) = options {
            config.options(o);
        }
        let err = try_connect_config(&config)
            .await
            .map(|_| ())
            .expect_err("a worker without a valid tenant must be refused");
        assert_eq!(
            sqlstate(&err),
            Some("28000"),
            "{options:?}: {}",
            describe_error(&err)
        );
        assert!(
            describe_error(&err).contains("pgward"),
            "{}",
            describe_error(&err)
        );
    }
    // The message says what to send.
    let err = try_connect(HOST, proxy.port(), WORKER_USER, WORKER_PASSWORD, &db)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        describe_error(&err).contains("-c app.current_tenant=<tenant>"),
        "{}",
        describe_error(&err)
    );
    // Other classes are unaffected.
    let su = proxy.connect(SUPERUSER, SUPERUSER_PASSWORD, &db).await;
    su.batch_execute("SELECT 1").await.unwrap();
}

/// Every way of changing or clearing the tenant is refused, in every
/// protocol shape, inside and outside transactions, and afterwards the
/// session still sees only its own tenant's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_the_tenant_is_refused() {
    let (_pg, db, proxy) = setup("tenant_tamper").await;
    let acme = worker(&proxy, &db, "acme").await;
    let spoofs = [
        "SET app.current_tenant = 'globex'",
        "SET SESSION app.current_tenant = 'globex'",
        "SET LOCAL app.current_tenant = 'globex'",
        "SET app.current_tenant TO DEFAULT",
        "RESET app.current_tenant",
        "SET \"app.current_tenant\" = 'globex'",
        "SELECT set_config('app.current_tenant', 'globex', false)",
        "SELECT pg_catalog.set_config('app.current_tenant', 'globex', true)",
        "SELECT count(*) FROM public.judgments WHERE set_config('app.current_tenant', 'globex', true) IS NOT NULL",
        "WITH x AS (SELECT set_config('APP.CURRENT_TENANT', 'globex', true)) SELECT * FROM x",
        "SELECT set_config(current_user, 'globex', true)",
        "RESET ALL",
        "DISCARD ALL",
        "ALTER ROLE dragonfly_app SET app.current_tenant = 'globex'",
        "ALTER DATABASE postgres SET app.current_tenant = 'globex'",
        "SET ROLE service_role",
        "SET SESSION AUTHORIZATION postgres",
        "UPDATE pg_settings SET setting = 'globex' WHERE name = 'app.current_tenant'",
        "SELECT 1; SET app.current_tenant = 'globex'",
    ];
    for spoof in spoofs {
        for in_block in [false, true] {
            if in_block {
                acme.batch_execute("BEGIN").await.unwrap();
            }
            let attempts: [(&str, Result<(), tokio_postgres::Error>); 3] = [
                ("simple", acme.batch_execute(spoof).await),
                ("unnamed", acme.query_typed(spoof, &[]).await.map(|_| ())),
                (
                    "named",
                    async {
                        let s = acme.prepare(spoof).await?;
                        acme.query(&s, &[]).await.map(|_| ())
                    }
                    .await,
                ),
            ];
            for (shape, result) in attempts {
                if shape != "simple" && spoof.contains("; ") {
                    continue; // several statements cannot be prepared
                }
                let err = result.expect_err(&format!(
                    "{spoof} ({shape}, in block: {in_block}) was not refused"
                ));
                let state = sqlstate(&err);
                // In a block, the first refusal fails the transaction; later
                // attempts are refused by PostgreSQL itself (25P02).
                assert!(
                    state == Some("42501") || (in_block && state == Some("25P02")),
                    "{spoof} ({shape}): {}",
                    describe_error(&err)
                );
            }
            if in_block {
                acme.batch_execute("ROLLBACK").await.unwrap();
            }
            assert_eq!(visible_tenants(&acme).await, only("acme"), "after {spoof}");
        }
    }
}

/// The demo's promise: two tenants through one pgward, each seeing only its
/// rows, and a worker write refused while the approved RPC works for its tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_rpc_writes_for_the_injected_tenant_only() {
    let (pg, db, proxy) = setup("tenant_rpc").await;
    let globex = worker(&proxy, &db, "globex").await;
    globex
        .query_one(
            "SELECT ops.upsert_judgment('TENANT-RPC-1', 'Sideshow Bob', 10.00)",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("approved RPC: {}", describe_error(&e)));
    let su = pg.connect_superuser(&db).await;
    let tenant: String = su
        .query_one(
            "SELECT tenant_id FROM public.judgments WHERE case_number = 'TENANT-RPC-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenant, "globex", "the RPC wrote under the injected tenant");
    let acme = worker(&proxy, &db, "acme").await;
    let n: i64 = acme
        .query_one(
            "SELECT count(*) FROM public.judgments WHERE case_number = 'TENANT-RPC-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "acme must not see globex's new row");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {}).await;
}

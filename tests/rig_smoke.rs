//! Proves the test rig itself, without pgward: the cluster starts and
//! authenticates each way the auth-relay tests rely on, `sql/demo.sql` gives
//! the security properties the proxy tests assume, `sql/test_grants.sql`
//! really makes the database accept the worker's writes, and clusters do not
//! outlive the test process.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[tokio::test]
async fn every_auth_method_of_the_rig_works_over_tcp() {
    let pg = PgCluster::shared();
    let su = pg.connect_superuser("postgres").await;

    // The hba rules and stored secrets are what make each role use its method.
    let rules = su
        .query(
            "SELECT user_name[1], auth_method FROM pg_hba_file_rules \
             WHERE type = 'host' ORDER BY line_number",
            &[],
        )
        .await
        .unwrap();
    let rules: Vec<(String, String)> = rules.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected = [
        (MD5_USER, "md5"),
        (CLEAR_USER, "password"),
        (TRUST_USER, "trust"),
        ("all", "scram-sha-256"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(u, m)| (u.to_string(), m.to_string()))
        .collect();
    assert_eq!(rules, expected);
    let md5_secret: String = su
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&MD5_USER],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        md5_secret.starts_with("md5"),
        "md5_user's secret: {md5_secret}"
    );

    for (user, password) in [
        (SUPERUSER, SUPERUSER_PASSWORD),
        (SCRAM_USER, SCRAM_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (CLEAR_USER, CLEAR_PASSWORD),
        (TRUST_USER, "ignored"),
    ] {
        let client = pg.connect_as(user, password, "postgres").await;
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, user);
    }

    for user in [SUPERUSER, SCRAM_USER, MD5_USER, CLEAR_USER] {
        let error = try_connect(HOST, pg.port(), user, "wrong", "postgres")
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} got in with a wrong password"));
        assert_eq!(
            sqlstate(&error),
            Some("28P01"),
            "{user}: {}",
            describe_error(&error)
        );
    }
}

#[tokio::test]
async fn demo_schema_gives_the_worker_read_only_tenant_scoped_access() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("rig_smoke_demo");
    let su = pg.connect_superuser(&db).await;

    // Structural facts the proxy tests lean on.
    let role = su
        .query_one(
            "SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&WORKER_USER],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            role.get::<_, bool>(0),
            role.get::<_, bool>(1),
            role.get::<_, bool>(2)
        ),
        (false, false, true),
        "dragonfly_app must be a plain login role"
    );
    let unforced: Vec<String> = su
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind = 'r' AND n.nspname IN ('public', 'ops', 'intake', 'enforcement') \
                AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        unforced.is_empty(),
        "tables without forced RLS: {unforced:?}"
    );
    let definers = su
        .query(
            "SELECT p.oid::regprocedure::text, coalesce(array_to_string(p.proconfig, ','), '') \
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
              WHERE p.prosecdef AND n.nspname IN ('public', 'ops', 'intake', 'enforcement')",
            &[],
        )
        .await
        .unwrap();
    assert!(
        definers.len() >= 10,
        "expected the seeds' RPCs, got {}",
        definers.len()
    );
    for row in &definers {
        let (name, config): (String, String) = (row.get(0), row.get(1));
        assert!(
            config.contains("search_path="),
            "SECURITY DEFINER {name} has no pinned search_path"
        );
    }

    let worker = pg.connect_as(WORKER_USER, WORKER_PASSWORD, &db).await;
    let count = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, i64>(0);

    // No tenant: nothing.
    let n = count(
        worker
            .query("SELECT count(*) FROM public.judgments", &[])
            .await
            .unwrap(),
    );
    assert_eq!(
        n, 0,
        "without app.current_tenant the worker must see no judgments"
    );

    // SET LOCAL inside a transaction: acme's three rows and nothing else.
    worker.batch_execute("BEGIN").await.unwrap();
    worker
        .batch_execute("SET LOCAL app.current_tenant = 'acme'")
        .await
        .unwrap();
    let tenants: Vec<String> = worker
        .query("SELECT tenant_id FROM public.judgments", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, vec!["acme"; 3]);
    let pipeline: i64 = worker
        .query_one(
            "SELECT sum(judgments)::bigint FROM public.v_judgment_pipeline",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pipeline, 3, "the view must apply the caller's RLS");
    worker.batch_execute("COMMIT").await.unwrap();
    let n = count(
        worker
            .query("SELECT count(*) FROM public.judgments", &[])
            .await
            .unwrap(),
    );
    assert_eq!(n, 0, "SET LOCAL must not outlive its transaction");

    // The tenant as a startup option, the form pgward's DATABASE_URL uses.
    let globex = connect_with_options(
        HOST,
        pg.port(),
        WORKER_USER,
        WORKER_PASSWORD,
        &db,
        "-c app.current_tenant=globex",
    )
    .await;
    let tenants: Vec<String> = globex
        .query("SELECT DISTINCT tenant_id FROM public.judgments", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, vec!["globex"]);

    // Direct writes are refused by the database...
    for sql in [
        "INSERT INTO ops.job_queue (job_type) VALUES ('direct')",
        "UPDATE public.judgments SET status = 'closed'",
        "DELETE FROM ops.worker_heartbeats",
        "CREATE TABLE ops.sneaky (id int)",
    ] {
        let error = worker
            .batch_execute(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("the worker was allowed to run {sql:?} directly"));
        assert_eq!(
            sqlstate(&error),
            Some("42501"),
            "{sql}: {}",
            describe_error(&error)
        );
    }
    let error = worker
        .batch_execute("SET ROLE service_role")
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&error),
        Some("42501"),
        "{}",
        describe_error(&error)
    );

    // ...while the SECURITY DEFINER RPCs work.
    let id: String = worker
        .query_one(
            "SELECT ops.queue_job('smoke_test', '{\"n\": 1}'::jsonb)::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let queued: i64 = worker
        .query_one(
            "SELECT count(*) FROM ops.job_queue WHERE id = $1::text::uuid AND status = 'pending'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1, "the worker must see the job it queued");

    // An RPC that writes tenant data wants a tenant, and writes only for it.
    let error = worker
        .query_one("SELECT ops.upsert_judgment('SMOKE-1', 'Nobody', 1.00)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&error),
        Some("42501"),
        "{}",
        describe_error(&error)
    );
    globex
        .query_one(
            "SELECT ops.upsert_judgment('SMOKE-1', 'Sideshow Bob', 10.00)",
            &[],
        )
        .await
        .unwrap();
    let n = count(
        globex
            .query(
                "SELECT count(*) FROM public.judgments WHERE case_number = 'SMOKE-1'",
                &[],
            )
            .await
            .unwrap(),
    );
    assert_eq!(n, 1);

    // The psql helper sees the same thing through the socket.
    let out = pg.psql_ok(&db, WORKER_USER, "SELECT count(*) FROM public.judgments");
    assert_eq!(out.trim(), "0");
    let out = pg.psql(&db, WORKER_USER, "DELETE FROM public.judgments");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn test_grants_make_the_database_accept_worker_writes() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("rig_smoke_grants");
    pg.grant_worker_writes(&db);
    let worker = connect_with_options(
        HOST,
        pg.port(),
        WORKER_USER,
        WORKER_PASSWORD,
        &db,
        "-c app.current_tenant=acme",
    )
    .await;
    // Everything pgward will have to refuse is accepted by PostgreSQL.
    worker
        .batch_execute(
            "INSERT INTO ops.job_queue (job_type) VALUES ('direct');
             INSERT INTO public.judgments (tenant_id, case_number, debtor_name, principal_amount)
                  VALUES ('acme', 'DIRECT-1', 'Direct Debtor', 5.00);
             UPDATE public.judgments SET status = 'closed' WHERE case_number = 'DIRECT-1';
             DELETE FROM ops.worker_heartbeats WHERE worker_id = 'seed-worker';
             TRUNCATE ops.ingest_batches;
             CREATE TABLE ops.sneaky (id int);
             DROP TABLE ops.sneaky;",
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "test_grants.sql did not open writes: {}",
                describe_error(&e)
            )
        });
    // Reads are still tenant-scoped.
    let tenants: Vec<String> = worker
        .query("SELECT DISTINCT tenant_id FROM public.judgments", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, vec!["acme"]);
}

#[test]
fn private_cluster_is_removed_on_drop() {
    let pg = PgCluster::start();
    let root = pg.root().to_path_buf();
    let addr = pg.addr();
    assert!(root.join("data/PG_VERSION").is_file());
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(pg);
    assert!(!root.exists(), "{} survived the drop", root.display());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "postgres still listens on {addr} after the drop"
    );
}

/// Runs only as the child of `cluster_dies_with_the_test_process`.
#[test]
#[ignore = "helper: run by cluster_dies_with_the_test_process"]
fn rig_child_holds_a_cluster() {
    if std::env::var_os("PGWARD_RIG_CHILD").is_none() {
        return;
    }
    let pg = PgCluster::shared();
    println!(
        "RIG-CLUSTER {} {} {}",
        pg.root().display(),
        pg.postmaster_pid().expect("postmaster.pid"),
        pg.port()
    );
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn cluster_dies_with_the_test_process() {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "--nocapture",
            "rig_child_holds_a_cluster",
        ])
        .env("PGWARD_RIG_CHILD", "1")
        .stdout(Stdio::piped())
        // Its panics (e.g. a cluster that cannot start) explain a failure here.
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("RIG-CLUSTER "))
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the child test never reported its cluster")
        });
    let fields: Vec<&str> = line.split_whitespace().collect();
    let root = PathBuf::from(fields[1]);
    let pid = fields[2];
    let port: u16 = fields[3].parse().unwrap();
    assert!(root.exists());

    // SIGKILL: no destructor runs, only the watchdog can clean up.
    child.kill().unwrap();
    child.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while (root.exists() || process_alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !process_alive(pid),
        "postmaster {pid} outlived its test process"
    );
    assert!(
        !root.exists(),
        "{} outlived its test process",
        root.display()
    );
    assert!(
        std::net::TcpStream::connect((HOST, port)).is_err(),
        "something still listens on {port}"
    );
}

/// Alive and not a zombie.
fn process_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

//! `pgward doctor` through the real binary against real databases: the demo
//! schema is sound, and each kind of drift the seeds warn about (grant drift,
//! RLS no longer forced, a worker with BYPASSRLS) turns into a FAIL and exit 1.
//! Each test has its own database; the one that alters a (cluster-wide) role
//! has its own cluster.

mod support;

use std::process::{Command, Output};

use support::*;

fn doctor(args: &[&str], env: &[(&str, &str)]) -> Output {
    let config = repo_path("policy.yaml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgward"));
    cmd.arg("doctor")
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_remove("PGWARD_ADMIN_URL")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("pgward runs")
}

fn doctor_url(url: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--admin-url", url];
    args.extend_from_slice(extra);
    doctor(&args, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Lines of the human report with this status, e.g. "FAIL".
fn lines_with<'a>(text: &'a str, status: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(status)).collect()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", show(out)))
}

#[test]
fn the_demo_database_is_sound() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("doctor_demo");
    let out = doctor_url(&pg.superuser_url(&db), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    assert!(lines_with(&text, "FAIL").is_empty(), "{text}");
    // Every kind of check ran and passed somewhere.
    for check in [
        "rls-enabled",
        "rls-forced",
        "tenant-policy",
        "worker-role",
        "worker-superuser",
        "worker-bypassrls",
        "worker-ownership",
        "worker-grants",
        "function-approved",
        "function-search-path",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("PASS") && l.split_whitespace().nth(1) == Some(check)),
            "no PASS for {check}:\n{text}"
        );
    }
    assert!(
        text.contains("PASS  function-search-path  ops.queue_job(text, jsonb)"),
        "{text}"
    );
    assert!(
        text.contains("rls-forced") && text.contains("public.judgments"),
        "{text}"
    );
}

#[test]
fn grant_drift_fails_and_names_the_grant() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("doctor_grants");
    pg.grant_worker_writes(&db);
    let out = doctor_url(&pg.superuser_url(&db), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    let fails = lines_with(&text, "FAIL");
    assert!(
        fails.iter().any(|l| l.contains("worker-grants")
            && l.contains("ops.job_queue")
            && l.contains("INSERT")
            && l.contains("TRUNCATE")
            && l.contains("REVOKE")),
        "{text}"
    );
    assert!(
        fails.iter().any(|l| l.contains("worker-grants")
            && l.contains("schema ops")
            && l.contains("CREATE")),
        "{text}"
    );
    // test_grants.sql's write-anything policies and CREATE on public
    // (in the functions' pinned search_path) are drift too.
    assert!(
        fails
            .iter()
            .any(|l| l.contains("tenant-policy") && l.contains("test_write_insert")),
        "{text}"
    );
    assert!(
        fails
            .iter()
            .any(|l| l.contains("function-search-path") && l.contains("CREATE in public")),
        "{text}"
    );
}

#[test]
fn rls_no_longer_forced_fails_and_names_the_table() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("doctor_noforce");
    pg.psql_ok(
        &db,
        SUPERUSER,
        "ALTER TABLE public.judgments NO FORCE ROW LEVEL SECURITY",
    );
    let out = doctor_url(&pg.superuser_url(&db), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    let fails = lines_with(&text, "FAIL");
    assert_eq!(fails.len(), 1, "{text}");
    assert!(
        fails[0].contains("rls-forced") && fails[0].contains("public.judgments"),
        "{text}"
    );
}

#[test]
fn disabled_rls_fails() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("doctor_norls");
    pg.psql_ok(
        &db,
        SUPERUSER,
        "ALTER TABLE ops.job_queue DISABLE ROW LEVEL SECURITY",
    );
    let out = doctor_url(&pg.superuser_url(&db), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        lines_with(&text, "FAIL")
            .iter()
            .any(|l| l.contains("rls-enabled") && l.contains("ops.job_queue")),
        "{text}"
    );
}

/// Roles are cluster-wide: a private cluster, so no other test sees the
/// worker with BYPASSRLS.
#[test]
fn a_worker_with_bypassrls_fails() {
    let pg = PgCluster::start();
    let db = pg.demo_database("doctor_bypass");
    let url = pg.superuser_url(&db);
    pg.psql_ok(&db, SUPERUSER, "ALTER ROLE dragonfly_app BYPASSRLS");
    let out = doctor_url(&url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        lines_with(&text, "FAIL")
            .iter()
            .any(|l| l.contains("worker-bypassrls")
                && l.contains("dragonfly_app")
                && l.contains("BYPASSRLS")),
        "{text}"
    );

    // Membership in a BYPASSRLS role (service_role) is as good as having it.
    pg.psql_ok(&db, SUPERUSER, "ALTER ROLE dragonfly_app NOBYPASSRLS");
    pg.psql_ok(&db, SUPERUSER, "GRANT service_role TO dragonfly_app");
    let out = doctor_url(&url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        lines_with(&text, "FAIL")
            .iter()
            .any(|l| l.contains("worker-bypassrls") && l.contains("member of service_role")),
        "{text}"
    );

    // So is owning a protected table.
    pg.psql_ok(&db, SUPERUSER, "REVOKE service_role FROM dragonfly_app");
    pg.psql_ok(
        &db,
        SUPERUSER,
        "ALTER TABLE ops.worker_heartbeats OWNER TO dragonfly_app",
    );
    let out = doctor_url(&url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        lines_with(&text, "FAIL")
            .iter()
            .any(|l| l.contains("worker-ownership") && l.contains("ops.worker_heartbeats")),
        "{text}"
    );

    // Restored: sound again.
    pg.psql_ok(
        &db,
        SUPERUSER,
        "ALTER TABLE ops.worker_heartbeats OWNER TO postgres",
    );
    let out = doctor_url(&url, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn json_output_parses_and_its_summary_adds_up() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("doctor_json");
    let url = pg.superuser_url(&db);

    let out = doctor_url(&url, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let doc = json(&out);
    assert_eq!(doc["summary"]["fail"], 0, "{doc:#}");

    pg.psql_ok(
        &db,
        SUPERUSER,
        "ALTER TABLE public.judgments NO FORCE ROW LEVEL SECURITY",
    );
    let out = doctor_url(&url, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let doc = json(&out);
    let findings = doc["findings"].as_array().expect("findings is an array");
    let count = |status: &str| findings.iter().filter(|f| f["status"] == status).count();
    for f in findings {
        for key in ["check", "object", "status", "detail"] {
            assert!(f[key].is_string(), "{key} missing in {f}");
        }
    }
    assert_eq!(doc["summary"]["pass"], count("PASS"), "{doc:#}");
    assert_eq!(doc["summary"]["fail"], count("FAIL"), "{doc:#}");
    assert_eq!(doc["summary"]["warn"], count("WARN"), "{doc:#}");
    assert_eq!(count("FAIL"), 1, "{doc:#}");
    assert!(findings.iter().any(|f| f["status"] == "FAIL"
        && f["check"] == "rls-forced"
        && f["object"] == "public.judgments"));
}

#[test]
fn the_url_comes_from_the_environment_and_the_flag_wins() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("doctor_env");
    let good = pg.superuser_url(&db);
    let out = doctor(&[], &[("PGWARD_ADMIN_URL", &good)]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = doctor(
        &["--admin-url", &good],
        &[("PGWARD_ADMIN_URL", "postgres://nobody@127.0.0.1:1/none")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

#[test]
fn usage_and_connection_errors_exit_2() {
    let pg = PgCluster::shared();
    // No URL at all.
    let out = doctor(&[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("PGWARD_ADMIN_URL"), "{}", show(&out));
    // Not a URL.
    let out = doctor_url("postgres://[not a url", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("invalid admin URL"), "{}", show(&out));
    // Nobody listening.
    let port = free_port();
    let out = doctor_url(&format!("postgres://postgres:x@127.0.0.1:{port}/x"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("cannot connect"), "{}", show(&out));
    // Wrong password: the message says so and never shows the password.
    let out = doctor_url(
        &format!(
            "postgres://postgres:sekrit@127.0.0.1:{}/postgres",
            pg.port()
        ),
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(!show(&out).contains("sekrit"), "{}", show(&out));
    // A bad policy file.
    let out = Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(["doctor", "--config", "/nonexistent/policy.yaml"])
        .args(["--admin-url", &pg.superuser_url("postgres")])
        .output()
        .expect("pgward runs");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("/nonexistent/policy.yaml"),
        "{}",
        show(&out)
    );
}

//! The command line SREs and tooling depend on: `--version`, `check` exit
//! codes, precise configuration errors, and policy hot reload on a running
//! proxy (SIGHUP and file change) against a real database.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::*;

fn pgward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(args)
        .current_dir(repo_path("."))
        .output()
        .expect("pgward runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn version_and_help_name_the_commands() {
    let out = pgward(&["--version"]);
    assert!(out.status.success());
    assert!(
        text(&out).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        text(&out)
    );
    let out = pgward(&["--help"]);
    assert!(out.status.success());
    for word in ["serve", "check"] {
        assert!(
            text(&out).contains(word),
            "--help lacks {word}: {}",
            text(&out)
        );
    }
}

/// The audit cannot be switched off in a normal build: the benchmark-only
/// flag exists only with the `unaudited-benchmark` feature.
#[cfg(not(feature = "unaudited-benchmark"))]
#[test]
fn a_normal_build_cannot_run_unaudited() {
    let out = pgward(&["serve", "--unaudited-benchmark"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unexpected argument"), "{}", text(&out));
}

/// `check` predicts the proxy's decision with the shipped policy: exit 0
/// allowed, 3 denied, 2 for a configuration error.
#[test]
fn check_exit_codes_follow_the_decision() {
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--user", "dragonfly_app", "SELECT * FROM ops.job_queue"],
            0,
            "allow",
        ),
        (
            &[
                "--user",
                "dragonfly_app",
                "SELECT ops.queue_job('x', '{}'::jsonb)",
            ],
            0,
            "allow",
        ),
        (
            &["--user", "dragonfly_app", "DELETE FROM ONLY ops.job_queue"],
            3,
            "protected-schemas",
        ),
        (
            &[
                "--user",
                "dragonfly_app",
                "SELECT 1; TRUNCATE intake.foil_datasets",
            ],
            3,
            "protected-schemas",
        ),
        (
            &[
                "--user",
                "dragonfly_app",
                "--search-path",
                "ops",
                "DELETE FROM job_queue",
            ],
            3,
            "protected-schemas",
        ),
        (
            &[
                "--user",
                "dragonfly_app",
                "--search-path",
                "public",
                "DELETE FROM scratch",
            ],
            0,
            "allow",
        ),
        (
            &[
                "--user",
                "dragonfly_app",
                "UPDATE public.judgments SET status = 'x'",
            ],
            3,
            "protected-tables",
        ),
        (
            &[
                "--user",
                "dragonfly_app",
                "DO $$BEGIN DELETE FROM ops.job_queue; END$$",
            ],
            3,
            "pgward.opaque",
        ),
        (&["--user", "dragonfly_app", "SELEC 1"], 3, "cannot parse"),
        (
            &["--user", "postgres", "DROP SCHEMA ops CASCADE"],
            0,
            "unrestricted",
        ),
        (
            &[
                "--user",
                "someone_else",
                "INSERT INTO ops.job_queue DEFAULT VALUES",
            ],
            3,
            "class app",
        ),
    ];
    for (args, code, needle) in cases {
        let mut full = vec!["check", "--config", "policy.yaml"];
        full.extend_from_slice(args);
        let out = pgward(&full);
        assert_eq!(out.status.code(), Some(*code), "{args:?}:\n{}", text(&out));
        assert!(
            text(&out).contains(needle),
            "{args:?} output lacks {needle:?}:\n{}",
            text(&out)
        );
    }
}

fn write_config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

/// A bad file is refused before anything listens: exit 2, and the message
/// names the file, the YAML path and the line.
#[test]
fn bad_configuration_exits_2_with_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "server:\n  listen: 127.0.0.1:1\n  upstrem: x\n",
            "upstrem",
            "line 3",
        ),
        (
            "mode: enforce\nidentities:\n  default_class: nope\n  classes:\n    a: {}\n",
            "default_class",
            "line 3",
        ),
        (
            "protected:\n  - id: a\n    schemas: [ops]\n    allow: { ghost: [read] }\n",
            "protected[0].allow.ghost",
            "line 4",
        ),
        ("server: [unclosed\n", "policy.yaml", "line"),
    ];
    for (yaml, needle, line) in cases {
        let path = write_config(dir.path(), yaml);
        for args in [
            vec!["serve", "--config", &path],
            vec!["check", "--config", &path, "--user", "u", "SELECT 1"],
        ] {
            let out = pgward(&args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{yaml:?} {args:?}: {}",
                text(&out)
            );
            let msg = text(&out);
            assert!(
                msg.contains(needle) && msg.contains(line),
                "{yaml:?}: message {msg:?} lacks {needle:?} / {line:?}"
            );
            assert!(msg.contains("policy.yaml"), "{msg}");
        }
    }
    let out = pgward(&["serve", "--config", "/nonexistent/policy.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

fn policy_with_worker_actions(actions: &str) -> String {
    format!(
        "identities:\n  default_class: service\n  classes:\n    worker:\n      users: [dragonfly_app]\n    service:\n      restricted: false\n\
         protected:\n  - id: protected-schemas\n    schemas: [ops]\n    allow:\n      worker: [{actions}]\n"
    )
}

async fn worker_insert(proxy: &ProxyProcess, db: &str) -> Result<(), tokio_postgres::Error> {
    let client = proxy.connect(WORKER_USER, WORKER_PASSWORD, db).await;
    client
        .batch_execute("INSERT INTO ops.job_queue (job_type) VALUES ('reload_test')")
        .await
}

/// SREs reload without restart: SIGHUP and a file change both install a
/// valid new policy for the next statement; an invalid file is rejected and
/// the policy in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reloads_atomically_and_rejects_bad_files() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("cli_reload");
    pg.grant_worker_writes(&db);
    let proxy = ProxyProcess::start(pg.port(), &policy_with_worker_actions("read"));
    let config = proxy.dir().join("policy.yaml");

    let err = worker_insert(&proxy, &db)
        .await
        .expect_err("read-only worker must be refused");
    assert_eq!(sqlstate(&err), Some("42501"), "{}", describe_error(&err));

    // SIGHUP with a policy that allows writes.
    std::fs::write(&config, policy_with_worker_actions("read, write")).unwrap();
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("policy reloaded", Duration::from_secs(10)),
        "{}",
        proxy.log()
    );
    worker_insert(&proxy, &db)
        .await
        .unwrap_or_else(|e| panic!("after reload the write must pass: {}", describe_error(&e)));
    // A session that keeps repeating an allowed write (its decision is
    // remembered while nothing changes) and lives through the next reloads.
    let held = proxy.connect(WORKER_USER, WORKER_PASSWORD, &db).await;
    const INSERT: &str = "INSERT INTO ops.job_queue (job_type) VALUES ('reload_test')";
    for _ in 0..3 {
        held.batch_execute(INSERT)
            .await
            .unwrap_or_else(|e| panic!("held session: {}", describe_error(&e)));
    }

    // An invalid file: rejected, the permissive policy stays in force.
    std::fs::write(&config, "protected: [this is not a rule\n").unwrap();
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("reload rejected", Duration::from_secs(10)),
        "{}",
        proxy.log()
    );
    worker_insert(&proxy, &db)
        .await
        .unwrap_or_else(|e| panic!("the old policy must stay in force: {}", describe_error(&e)));

    // A plain file change (no signal) is picked up too.
    std::fs::write(&config, policy_with_worker_actions("read")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match worker_insert(&proxy, &db).await {
            Err(e) if sqlstate(&e) == Some("42501") => break,
            Err(e) => panic!("unexpected error: {}", describe_error(&e)),
            Ok(()) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(()) => panic!("file change was not picked up:\n{}", proxy.log()),
        }
    }
    // The held session's next identical write meets the new policy too.
    let err = held
        .batch_execute(INSERT)
        .await
        .expect_err("the reloaded read-only policy applies to open sessions");
    assert_eq!(sqlstate(&err), Some("42501"), "{}", describe_error(&err));
    let su = pg.connect_superuser(&db).await;
    let n: i64 = su
        .query_one(
            "SELECT count(*) FROM ops.job_queue WHERE job_type = 'reload_test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n >= 2, "the writes allowed by the reloaded policy ran: {n}");
}

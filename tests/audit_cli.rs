//! `pgward audit verify` and `pgward audit tail` on files written by the
//! audit library, through the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgward::audit::{
    AuditConfig, AuditDecision, AuditObject, Auditor, AuthRecord, FileSinkConfig, Outcome,
    SinksConfig, StatementRecord,
};
use pgward::inspect::Action;

fn pgward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(args)
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

fn statement(session: u64, identity: &str, sql: &str, decision: AuditDecision) -> StatementRecord {
    StatementRecord {
        session_id: session,
        peer: "127.0.0.1:40000".into(),
        identity: identity.into(),
        identity_class: "app".into(),
        upstream_user: "app_rw".into(),
        database: "app".into(),
        tenant: Some("acme".into()),
        statement_text: sql.into(),
        statement_kind: "UPDATE".into(),
        objects: vec![AuditObject {
            action: Action::Write,
            schema: Some("billing".into()),
            name: "invoices".into(),
        }]
        .into(),
        decision,
        rule: (decision == AuditDecision::Deny).then(|| "billing-readonly".into()),
        reason: "billing is read-only for app".into(),
        outcome: Some(match decision {
            AuditDecision::Deny => Outcome::Error("42501".into()),
            _ => Outcome::Tag("UPDATE 1".into()),
        }),
        rows: Some(1),
        duration_us: 250,
        ..Default::default()
    }
}

/// Writes `n` records (every third one denied) to `path` with the library.
fn produce(path: &Path, n: u64, rotate_bytes: Option<u64>) {
    let cfg = AuditConfig {
        sinks: SinksConfig {
            file: Some(FileSinkConfig {
                path: path.to_path_buf(),
                rotate_bytes,
                rotate_seconds: None,
            }),
            stdout: false,
        },
        ..AuditConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (auditor, task) = Auditor::start(&cfg).unwrap();
        auditor
            .record(AuthRecord {
                session_id: 1,
                identity: "svc".into(),
                ok: true,
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 1..n {
            let decision = if i % 3 == 0 {
                AuditDecision::Deny
            } else {
                AuditDecision::Allow
            };
            let sql = format!("UPDATE billing.invoices SET paid = true WHERE id = {i}");
            auditor
                .record(statement(1, "svc", &sql, decision))
                .await
                .unwrap();
        }
        auditor.shutdown().await.unwrap();
        task.await.unwrap();
    });
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn verify_intact_file_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    produce(&file, 6, None);
    let out = pgward(&["audit", "verify", p(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("intact: 6 record(s), seq 1..6"),
        "{}",
        text(&out)
    );
}

#[test]
fn verify_reports_tampering_with_file_and_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    produce(&file, 6, None);
    let original = fs::read_to_string(&file).unwrap();

    // An altered field on line 4.
    let mut lines: Vec<String> = original.lines().map(str::to_string).collect();
    lines[3] = lines[3].replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
    assert_ne!(
        lines[3],
        original.lines().nth(3).unwrap(),
        "line 4 is a denied statement"
    );
    fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = pgward(&["audit", "verify", p(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let expected = format!("{}:4:", file.display());
    assert!(text(&out).contains(&expected), "{}", text(&out));
    assert!(text(&out).contains("altered"), "{}", text(&out));

    // A deleted line 2.
    let mut lines: Vec<&str> = original.lines().collect();
    lines.remove(1);
    fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = pgward(&["audit", "verify", p(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{}:2:", file.display())),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("missing"), "{}", text(&out));
}

#[test]
fn verify_tolerates_a_torn_final_line_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    produce(&file, 3, None);
    let mut bytes = fs::read(&file).unwrap();
    bytes.extend_from_slice(b"{\"seq\":4,\"ts\":\"20");
    fs::write(&file, bytes).unwrap();
    let out = pgward(&["audit", "verify", p(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("torn final line (crash?)"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!("{}:4:", file.display())),
        "{stderr}"
    );
}

#[test]
fn verify_follows_the_chain_across_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    produce(&file, 20, Some(2000));
    let mut files: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f != &file)
        .collect();
    files.sort();
    assert!(!files.is_empty(), "rotated");
    files.push(file.clone());
    let args: Vec<&str> = ["audit", "verify"]
        .into_iter()
        .chain(files.iter().map(|f| p(f)))
        .collect();
    let out = pgward(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("intact: 20 record(s)"),
        "{}",
        text(&out)
    );

    // The live file alone does not start the chain.
    let out = pgward(&["audit", "verify", p(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = pgward(&["audit", "verify", "--allow-partial", p(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn verify_usage_and_io_errors_exit_2() {
    let out = pgward(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = pgward(&["audit", "verify", "/nonexistent/audit.jsonl"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent/audit.jsonl"),
        "{}",
        text(&out)
    );
}

#[test]
fn tail_denied_prints_refusals_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    produce(&file, 7, None);
    let out = pgward(&["audit", "tail", "--denied", p(&file)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in &lines {
        assert!(line.contains(" DENY "), "{line}");
        assert!(line.contains("svc[app] tenant=acme"), "{line}");
        assert!(line.contains("write:billing.invoices"), "{line}");
        assert!(
            line.contains("UPDATE billing.invoices SET paid = $1 WHERE id = $2"),
            "{line}"
        );
        assert!(line.contains("ERROR 42501"), "{line}");
    }
    let out = pgward(&["audit", "tail", "--identity", "nobody", p(&file)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let out = pgward(&["audit", "tail", "--tenant", "acme", "-n", "3", p(&file)]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

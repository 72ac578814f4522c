use super::*;

const SHIPPED: &str = include_str!("../../policy.yaml");

fn err(text: &str) -> ConfigError {
    match Config::from_str(text, "policy.yaml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// A small valid policy to break in tests.
const BASE: &str = "\
mode: enforce
identities:
  default_class: app
  classes:
    worker:
      restricted: true
      users: [dragonfly_app]
    service:
      restricted: false
      users: [service_role]
    app: {}
protected:
  - id: protected-schemas
    schemas: [ops]
    allow:
      worker: [read]
functions:
  worker:
    approved: [ops.queue_job]
";

#[test]
fn base_loads() {
    let c = Config::from_str(BASE, "policy.yaml").unwrap();
    assert_eq!(c.mode, Mode::Enforce);
    assert!(
        c.identities.classes["app"].restricted,
        "restricted defaults to true"
    );
    assert_eq!(c.protected[0].allow["worker"], vec![ActionName::Read]);
}

#[test]
fn shipped_policy_loads_and_encodes_the_worker_model() {
    let c = Config::from_str(SHIPPED, "policy.yaml").unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:6432");
    assert_eq!(c.server.upstream, "127.0.0.1:5432");
    assert_eq!(c.mode, Mode::Enforce);
    let worker = &c.identities.classes["worker"];
    assert!(worker.restricted);
    assert_eq!(worker.users, vec!["dragonfly_app"]);
    let service = &c.identities.classes["service"];
    assert!(!service.restricted);
    assert!(service.users.iter().any(|u| u == "service_role"));
    assert!(service.users.iter().any(|u| u == "postgres"));
    assert!(c.identities.classes[&c.identities.default_class].restricted);
    let schemas: Vec<&str> = c
        .protected
        .iter()
        .flat_map(|r| r.schemas.iter().map(String::as_str))
        .collect();
    assert_eq!(schemas, ["ops", "intake", "enforcement"]);
    let tables: Vec<&str> = c
        .protected
        .iter()
        .flat_map(|r| r.tables.iter().map(String::as_str))
        .collect();
    assert_eq!(
        tables,
        [
            "public.judgments",
            "public.plaintiffs",
            "public.enforcement_cases"
        ]
    );
    for r in &c.protected {
        assert_eq!(r.allow["worker"], vec![ActionName::Read], "rule {}", r.id);
    }
    let approved = &c.functions["worker"].approved;
    for f in [
        "ops.queue_job",
        "ops.claim_pending_job",
        "ops.upsert_judgment",
        "intake.store_foil_raw_rows_bulk",
    ] {
        assert!(approved.iter().any(|a| a == f), "{f} not approved");
    }
    assert!(!approved.iter().any(|a| a == "ops.reap_stuck_jobs"));
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, BASE).unwrap();
    Config::load(&p).unwrap();

    let missing = dir.path().join("nope.yaml");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("cannot read"), "{msg}");
}

#[test]
fn old_server_only_configs_still_load() {
    let c = Config::from_str("server:\n  listen: 0.0.0.0:1\n", "p.yaml").unwrap();
    assert_eq!(c.server.listen, "0.0.0.0:1");
    assert!(c.protected.is_empty());
}

#[test]
fn unknown_nested_key_names_path_and_line() {
    let text = BASE.replace(
        "      users: [dragonfly_app]",
        "      users: [dragonfly_app]\n      usres: [x]",
    );
    let e = err(&text);
    let msg = e.to_string();
    assert_eq!(
        e.yaml_path().unwrap().to_string(),
        "identities.classes.worker.usres",
        "{msg}"
    );
    assert_eq!(e.line(), Some(8), "{msg}");
    assert!(
        msg.starts_with("policy.yaml: identities.classes.worker.usres: unknown field `usres`"),
        "{msg}"
    );
    assert!(msg.ends_with("(line 8, column 7)"), "{msg}");
}

#[test]
fn unknown_key_in_rule_and_at_top_level() {
    let text = BASE.replace("    schemas: [ops]", "    schemas: [ops]\n    hnit: typo");
    let e = err(&text);
    assert_eq!(e.yaml_path().unwrap().to_string(), "protected[0].hnit");
    assert_eq!(e.line(), Some(15));

    let e = err(&format!("{BASE}tenants: {{}}\n"));
    assert_eq!(e.yaml_path().unwrap().to_string(), "tenants");
    assert_eq!(e.line(), Some(20));
}

#[test]
fn bad_action_names_path_and_line() {
    let e = err(&BASE.replace("worker: [read]", "worker: [read, wrte]"));
    let msg = e.to_string();
    assert_eq!(
        e.yaml_path().unwrap().to_string(),
        "protected[0].allow.worker[1]",
        "{msg}"
    );
    assert_eq!(e.line(), Some(16), "{msg}");
    assert!(msg.contains("unknown variant `wrte`"), "{msg}");
    assert!(msg.contains("(line 16, column 22)"), "{msg}");
}

#[test]
fn bad_mode_value() {
    let e = err(&BASE.replace("mode: enforce", "mode: enforcing"));
    assert_eq!(e.yaml_path().unwrap().to_string(), "mode");
    assert_eq!(e.line(), Some(1));
}

#[test]
fn unknown_class_in_allow() {
    let e = err(&BASE.replace("      worker: [read]", "      wrker: [read]"));
    let msg = e.to_string();
    assert_eq!(
        msg,
        "policy.yaml: protected[0].allow.wrker: unknown identity class \"wrker\" \
         (known: \"app\", \"service\", \"worker\") (line 16, column 7)"
    );
}

#[test]
fn unknown_class_in_functions() {
    let e = err(&BASE.replace("functions:\n  worker:", "functions:\n  workr:"));
    assert_eq!(e.yaml_path().unwrap().to_string(), "functions.workr");
    assert_eq!(e.line(), Some(18));
}

#[test]
fn duplicate_rule_ids() {
    let text = format!("{BASE}  - id: protected-schemas\n    tables: [public.judgments]\n")
        .replace("functions:\n  worker:\n    approved: [ops.queue_job]\n", "");
    let e = err(&text);
    let msg = e.to_string();
    assert_eq!(
        e.yaml_path().unwrap().to_string(),
        "protected[1].id",
        "{msg}"
    );
    assert!(
        msg.contains("duplicate rule id \"protected-schemas\""),
        "{msg}"
    );
    assert_eq!(e.line(), Some(17), "{msg}");
}

#[test]
fn user_in_two_classes() {
    let e = err(&BASE.replace(
        "users: [service_role]",
        "users: [service_role, dragonfly_app]",
    ));
    let msg = e.to_string();
    assert_eq!(
        e.yaml_path().unwrap().to_string(),
        "identities.classes.worker.users[0]",
        "{msg}"
    );
    assert!(msg.contains("already in class \"service\""), "{msg}");
    assert_eq!(e.line(), Some(7), "{msg}");
}

#[test]
fn default_class_must_exist() {
    let e = err(&BASE.replace("default_class: app", "default_class: nobody"));
    assert_eq!(
        e.yaml_path().unwrap().to_string(),
        "identities.default_class"
    );
    assert_eq!(e.line(), Some(3));
    let e = err(&BASE.replace("  default_class: app\n", ""));
    assert!(
        e.to_string().contains("missing field `default_class`"),
        "{e}"
    );
}

#[test]
fn bad_names() {
    let e = err(&BASE.replace("schemas: [ops]", "schemas: [ops.job_queue]"));
    assert_eq!(
        e.yaml_path().unwrap().to_string(),
        "protected[0].schemas[0]"
    );
    assert_eq!(e.line(), Some(14));
    let e = err(&BASE.replace("schemas: [ops]", "tables: [judgments]"));
    assert_eq!(e.yaml_path().unwrap().to_string(), "protected[0].tables[0]");
    let e = err(&BASE.replace("schemas: [ops]", "schemas: []"));
    assert_eq!(e.yaml_path().unwrap().to_string(), "protected[0]");
    assert_eq!(e.line(), Some(13));
    let e = err(&BASE.replace("approved: [ops.queue_job]", "approved: [queue_job]"));
    assert_eq!(
        e.yaml_path().unwrap().to_string(),
        "functions.worker.approved[0]"
    );
    assert_eq!(e.line(), Some(19));
}

#[test]
fn duplicate_map_keys_are_errors() {
    let e = err(&BASE.replace(
        "      worker: [read]",
        "      worker: [read]\n      worker: [write]",
    ));
    assert!(e.to_string().contains("duplicate key \"worker\""), "{e}");
    assert_eq!(e.line(), Some(17), "{e}");
}

#[test]
fn bad_yaml_syntax_has_line() {
    let e = err("mode: enforce\nidentities:\n  default_class: app\n classes: {}\n");
    let msg = e.to_string();
    assert!(e.line().is_some(), "{msg}");
    assert!(msg.starts_with("policy.yaml: "), "{msg}");
    assert!(msg.contains("(line "), "{msg}");
}

#[test]
fn worker_threads_is_optional_and_never_zero() {
    assert_eq!(
        Config::from_str(BASE, "policy.yaml")
            .unwrap()
            .server
            .worker_threads,
        None
    );
    let two = format!("server:\n  worker_threads: 2\n{BASE}");
    let c = Config::from_str(&two, "policy.yaml").unwrap();
    assert_eq!(c.server.worker_threads.map(|n| n.get()), Some(2));
    let e = err(&format!("server:\n  worker_threads: 0\n{BASE}"));
    assert_eq!(e.yaml_path().unwrap().to_string(), "server.worker_threads");
    assert_eq!(e.line(), Some(2), "{e}");
}

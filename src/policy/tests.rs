use super::*;
use crate::inspect::Access;

const SHIPPED: &str = include_str!("../../policy.yaml");

fn shipped() -> Policy {
    Policy::from_config(&Config::from_str(SHIPPED, "policy.yaml").unwrap())
}

fn obj(q: &str) -> ObjectName {
    match q.split_once('.') {
        Some((s, n)) => ObjectName {
            schema: Some(s.to_owned()),
            name: n.to_owned(),
        },
        None => ObjectName {
            schema: None,
            name: q.to_owned(),
        },
    }
}

fn stmt(kind: &str, accesses: &[(Action, &str)], functions: &[&str]) -> StatementInfo {
    StatementInfo {
        kind: kind.to_owned(),
        accesses: accesses
            .iter()
            .map(|(a, o)| Access {
                action: *a,
                object: obj(o),
            })
            .collect(),
        functions: functions.iter().map(|f| obj(f)).collect(),
        ..Default::default()
    }
}

fn public() -> SearchPath {
    SearchPath::Known(vec!["$user".into(), "public".into()])
}

use Action::{Ddl, Read, Write};
use Verdict::{Allow, Deny, MonitorWouldDeny};

struct Case {
    name: &'static str,
    user: &'static str,
    accesses: &'static [(Action, &'static str)],
    functions: &'static [&'static str],
    path: fn() -> SearchPath,
    verdict: Verdict,
    rule: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        name: "worker writes ops table",
        user: "dragonfly_app",
        accesses: &[(Write, "ops.job_queue")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "worker reads ops table",
        user: "dragonfly_app",
        accesses: &[(Read, "ops.job_queue")],
        functions: &[],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "worker reads protected public table",
        user: "dragonfly_app",
        accesses: &[(Read, "public.judgments")],
        functions: &[],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "worker writes enforcement",
        user: "dragonfly_app",
        accesses: &[(Write, "enforcement.anything")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "worker writes intake",
        user: "dragonfly_app",
        accesses: &[(Write, "intake.foil_raw_rows")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "worker writes unprotected public table",
        user: "dragonfly_app",
        accesses: &[(Write, "public.other")],
        functions: &[],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "unqualified write to protected table via [public]",
        user: "dragonfly_app",
        accesses: &[(Write, "judgments")],
        functions: &[],
        path: || SearchPath::Known(vec!["public".into()]),
        verdict: Deny,
        rule: Some("protected-tables"),
    },
    Case {
        name: "unqualified write to unprotected table via [public]",
        user: "dragonfly_app",
        accesses: &[(Write, "other")],
        functions: &[],
        path: || SearchPath::Known(vec!["public".into()]),
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "unqualified write with ops in path",
        user: "dragonfly_app",
        accesses: &[(Write, "other")],
        functions: &[],
        path: || SearchPath::Known(vec!["public".into(), "ops".into()]),
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "unqualified write with $user = a protected schema",
        user: "ops",
        accesses: &[(Write, "other")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "unqualified write, unknown path",
        user: "dragonfly_app",
        accesses: &[(Write, "other")],
        functions: &[],
        path: || SearchPath::Unknown,
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "unqualified ddl, unknown path",
        user: "dragonfly_app",
        accesses: &[(Ddl, "other")],
        functions: &[],
        path: || SearchPath::Unknown,
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "unqualified read, unknown path",
        user: "dragonfly_app",
        accesses: &[(Read, "judgments")],
        functions: &[],
        path: || SearchPath::Unknown,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "service_role writes ops",
        user: "service_role",
        accesses: &[(Write, "ops.job_queue"), (Ddl, "ops.*")],
        functions: &["ops.evil"],
        path: || SearchPath::Unknown,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "postgres drops a protected table",
        user: "postgres",
        accesses: &[(Ddl, "public.judgments")],
        functions: &[],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "approved function",
        user: "dragonfly_app",
        accesses: &[],
        functions: &["ops.queue_job"],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "unapproved function in protected schema",
        user: "dragonfly_app",
        accesses: &[],
        functions: &["ops.evil"],
        path: public,
        verdict: Deny,
        rule: Some("functions.worker.approved"),
    },
    Case {
        name: "approved name in the wrong schema",
        user: "dragonfly_app",
        accesses: &[],
        functions: &["intake.queue_job"],
        path: public,
        verdict: Deny,
        rule: Some("functions.worker.approved"),
    },
    Case {
        name: "unqualified and pg_catalog functions are built-ins",
        user: "dragonfly_app",
        accesses: &[],
        functions: &["now", "pg_catalog.set_config", "public.dragonfly_is_admin"],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "default class has no approved list",
        user: "someone",
        accesses: &[],
        functions: &["ops.evil"],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "default class is read-only",
        user: "someone",
        accesses: &[(Write, "ops.job_queue")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "DROP SCHEMA ops",
        user: "dragonfly_app",
        accesses: &[(Ddl, "ops.*")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-schemas"),
    },
    Case {
        name: "DDL on whole public schema hits protected tables",
        user: "dragonfly_app",
        accesses: &[(Ddl, "public.*")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-tables"),
    },
    Case {
        name: "DDL on protected table",
        user: "dragonfly_app",
        accesses: &[(Ddl, "public.judgments")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-tables"),
    },
    Case {
        name: "schema names are case-sensitive",
        user: "dragonfly_app",
        accesses: &[(Write, "OPS.job_queue")],
        functions: &[],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "table names are case-sensitive",
        user: "dragonfly_app",
        accesses: &[(Write, "public.Judgments")],
        functions: &[],
        path: public,
        verdict: Allow,
        rule: None,
    },
    Case {
        name: "read then write: the write decides",
        user: "dragonfly_app",
        accesses: &[(Read, "public.judgments"), (Write, "public.plaintiffs")],
        functions: &[],
        path: public,
        verdict: Deny,
        rule: Some("protected-tables"),
    },
];

#[test]
fn table() {
    let p = shipped();
    let mut failures = Vec::new();
    for c in CASES {
        let class = p.class_for_user(c.user);
        let s = stmt("TEST", c.accesses, c.functions);
        let d = p.decide(class, c.user, &s, &(c.path)());
        if d.verdict != c.verdict || d.rule.as_deref() != c.rule {
            failures.push(format!(
                "{}: got {:?} rule {:?} ({}), want {:?} rule {:?}",
                c.name, d.verdict, d.rule, d.reason, c.verdict, c.rule
            ));
        }
        assert_eq!(d.is_refused(), d.verdict == Deny);
        assert_eq!(d.accesses.len(), c.accesses.len());
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn classes() {
    let p = shipped();
    let w = p.class_for_user("dragonfly_app");
    assert_eq!(p.class_name(w), "worker");
    assert!(p.is_restricted(w));
    let s = p.class_for_user("service_role");
    assert_eq!(p.class_name(s), "service");
    assert!(!p.is_restricted(s));
    assert_eq!(p.class_for_user("postgres"), s);
    let d = p.class_for_user("nobody");
    assert_eq!(p.class_name(d), "app");
    assert!(p.is_restricted(d));
    // User names are exact too.
    assert_eq!(p.class_for_user("Dragonfly_App"), d);
}

#[test]
fn deny_reason_names_object_action_identity_class_rule_and_hint() {
    let p = shipped();
    let w = p.class_for_user("dragonfly_app");
    let d = p.decide(
        w,
        "dragonfly_app",
        &stmt("INSERT", &[(Write, "ops.job_queue")], &[]),
        &public(),
    );
    assert_eq!(
        d.reason,
        "pgward: write on ops.job_queue denied for dragonfly_app (class worker) by rule protected-schemas"
    );
    assert!(
        d.hint.as_deref().unwrap().contains("ops.queue_job"),
        "{:?}",
        d.hint
    );
    assert_eq!(
        d.accesses,
        vec![ResolvedAccess {
            action: Write,
            schema: Some("ops".into()),
            name: "job_queue".into()
        }]
    );

    let d = p.decide(
        w,
        "dragonfly_app",
        &stmt("INSERT", &[(Write, "judgments")], &[]),
        &public(),
    );
    assert!(
        d.reason.contains("judgments") && d.reason.contains("public.judgments"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("search_path"), "{}", d.reason);

    let d = p.decide(
        w,
        "dragonfly_app",
        &stmt("INSERT", &[(Write, "other")], &[]),
        &SearchPath::Unknown,
    );
    assert!(d.reason.contains("search_path is unknown"), "{}", d.reason);
    assert_eq!(d.accesses[0].schema, None);

    let d = p.decide(
        w,
        "dragonfly_app",
        &stmt("SELECT", &[], &["ops.evil"]),
        &public(),
    );
    assert!(
        d.reason.contains("ops.evil()") && d.reason.contains("dragonfly_app (class worker)"),
        "{}",
        d.reason
    );
    let hint = d.hint.unwrap();
    assert!(
        hint.contains("ops.queue_job") && hint.contains("intake.store_foil_raw_rows_bulk"),
        "{hint}"
    );

    let d = p.decide(
        w,
        "dragonfly_app",
        &stmt("DROP SCHEMA", &[(Ddl, "ops.*")], &[]),
        &public(),
    );
    assert!(
        d.reason.starts_with("pgward: ddl on schema ops denied"),
        "{}",
        d.reason
    );
}

#[test]
fn unrestricted_reason() {
    let p = shipped();
    let s = p.class_for_user("service_role");
    let d = p.decide(
        s,
        "service_role",
        &stmt("INSERT", &[(Write, "ops.job_queue")], &[]),
        &public(),
    );
    assert_eq!(d.verdict, Allow);
    assert_eq!(d.rule, None);
    assert_eq!(d.reason, "unrestricted class service");
    assert_eq!(d.accesses.len(), 1);
}

#[test]
fn opaque_is_denied_for_restricted_only() {
    let p = shipped();
    let w = p.class_for_user("dragonfly_app");
    for (o, needle) in [
        (Opaque::CodeBlock("DO".into()), "code block"),
        (Opaque::DynamicSql("dblink".into()), "dynamic SQL"),
        (Opaque::UnknownStatement("CREATE FOO".into()), "CREATE FOO"),
        (
            Opaque::ExecutePrepared("s1".into()),
            "cannot see what prepared statement s1 does",
        ),
    ] {
        let s = StatementInfo {
            kind: "X".into(),
            opaque: vec![o],
            ..Default::default()
        };
        let d = p.decide(w, "dragonfly_app", &s, &public());
        assert_eq!(d.verdict, Deny, "{needle}");
        assert_eq!(d.rule.as_deref(), Some(OPAQUE_RULE));
        assert!(
            d.reason.contains(needle) && d.reason.contains("dragonfly_app (class worker)"),
            "{}",
            d.reason
        );
        let svc = p.class_for_user("postgres");
        assert_eq!(p.decide(svc, "postgres", &s, &public()).verdict, Allow);
    }
}

#[test]
fn prepare_judges_the_inner_statement() {
    let p = shipped();
    let w = p.class_for_user("dragonfly_app");
    let inner = stmt("INSERT", &[(Write, "ops.job_queue")], &[]);
    let s = StatementInfo {
        kind: "PREPARE".into(),
        prepares: Some(("s1".into(), Box::new(inner))),
        ..Default::default()
    };
    let d = p.decide(w, "dragonfly_app", &s, &public());
    assert_eq!(d.verdict, Deny);
    assert!(
        d.reason.contains("PREPARE s1: ops.job_queue"),
        "{}",
        d.reason
    );
    let ok = StatementInfo {
        kind: "PREPARE".into(),
        prepares: Some((
            "s2".into(),
            Box::new(stmt("SELECT", &[(Read, "ops.job_queue")], &[])),
        )),
        ..Default::default()
    };
    assert_eq!(p.decide(w, "dragonfly_app", &ok, &public()).verdict, Allow);
}

/// Ordinary setting and search_path changes are the session's business (the
/// gate follows the path); only the tenant of classes whose tenant pgward
/// sets is off limits.
#[test]
fn ordinary_settings_pass_but_the_injected_tenant_does_not() {
    let p = shipped();
    let set = |names: &[&str]| StatementInfo {
        kind: "SET".into(),
        settings_changed: names.iter().map(|n| n.to_string()).collect(),
        search_path: Some(crate::inspect::SearchPathChange::Set {
            schemas: vec!["ops".into()],
            local: false,
        }),
        ..Default::default()
    };
    let app = p.class_for_user("someone_else");
    let d = p.decide(
        app,
        "someone_else",
        &set(&["statement_timeout", "app.current_tenant"]),
        &public(),
    );
    assert_eq!(d.verdict, Allow, "class app has no injected tenant: {d:?}");
    let w = p.class_for_user("dragonfly_app");
    assert_eq!(
        p.decide(w, "dragonfly_app", &set(&["statement_timeout"]), &public())
            .verdict,
        Allow
    );
    for tamper in [
        &["app.current_tenant"][..],
        &["*"],
        &["role"],
        &["session_authorization"],
    ] {
        let d = p.decide(w, "dragonfly_app", &set(tamper), &public());
        assert_eq!(d.verdict, Deny, "{tamper:?}");
        assert_eq!(d.rule.as_deref(), Some(TENANT_RULE), "{tamper:?}");
    }
}

const MODES: &str = "\
mode: {global}
identities:
  default_class: app
  classes:
    worker:
      users: [w]
      {class_mode}
    app: {}
protected:
  - id: schemas
    schemas: [ops]
    {rule_mode}
    allow: {{ worker: [read] }}
  - id: tables
    tables: [public.judgments]
    allow: {{ worker: [read] }}
functions:
  worker:
    approved: [ops.ok]
    {fn_mode}
";

fn modes(global: &str, class_mode: &str, rule_mode: &str, fn_mode: &str) -> Policy {
    let text = MODES
        .replace("{global}", global)
        .replace("{class_mode}", class_mode)
        .replace("{rule_mode}", rule_mode)
        .replace("{fn_mode}", fn_mode)
        .replace("{{", "{")
        .replace("}}", "}");
    Policy::from_config(&Config::from_str(&text, "modes.yaml").unwrap())
}

#[test]
fn mode_precedence_rule_over_class_over_global() {
    let write_ops = stmt("INSERT", &[(Write, "ops.t")], &[]);
    let write_tbl = stmt("INSERT", &[(Write, "public.judgments")], &[]);
    let call = stmt("SELECT", &[], &["ops.evil"]);
    let opaque = StatementInfo {
        kind: "DO".into(),
        opaque: vec![Opaque::CodeBlock("DO".into())],
        ..Default::default()
    };
    let judge = |p: &Policy, s: &StatementInfo| {
        let c = p.class_for_user("w");
        p.decide(c, "w", s, &public()).verdict
    };

    let p = modes("monitor", "", "", "");
    for s in [&write_ops, &write_tbl, &call, &opaque] {
        assert_eq!(judge(&p, s), MonitorWouldDeny, "{}", s.kind);
    }
    let d = p.decide(p.class_for_user("w"), "w", &write_ops, &public());
    assert!(
        d.reason.contains("would be denied (monitor mode)"),
        "{}",
        d.reason
    );
    assert!(!d.is_refused());

    // Class overrides global.
    let p = modes("monitor", "mode: enforce", "", "");
    assert_eq!(judge(&p, &write_ops), Deny);
    assert_eq!(judge(&p, &opaque), Deny);
    // Rule overrides class.
    let p = modes("enforce", "mode: enforce", "mode: monitor", "");
    assert_eq!(judge(&p, &write_ops), MonitorWouldDeny);
    assert_eq!(judge(&p, &write_tbl), Deny);
    assert_eq!(judge(&p, &call), Deny);
    // Function list override.
    let p = modes("enforce", "", "", "mode: monitor");
    assert_eq!(judge(&p, &call), MonitorWouldDeny);
    assert_eq!(judge(&p, &write_ops), Deny);

    // An enforced refusal wins over a monitored one in the same statement.
    let p = modes("enforce", "", "mode: monitor", "");
    let both = stmt(
        "MERGE",
        &[(Write, "ops.t"), (Write, "public.judgments")],
        &[],
    );
    let d = p.decide(p.class_for_user("w"), "w", &both, &public());
    assert_eq!(d.verdict, Deny);
    assert_eq!(d.rule.as_deref(), Some("tables"));
    // Unqualified: a monitored candidate does not hide an enforced one.
    let unq = stmt("INSERT", &[(Write, "judgments")], &[]);
    let path = SearchPath::Known(vec!["ops".into(), "public".into()]);
    let d = p.decide(p.class_for_user("w"), "w", &unq, &path);
    assert_eq!(d.verdict, Deny, "{}", d.reason);
    assert_eq!(d.rule.as_deref(), Some("tables"));
}

#[test]
fn no_rules_no_denials_even_with_unknown_path() {
    let p = Policy::from_config(&Config::from_str("server: {}\n", "p.yaml").unwrap());
    let c = p.class_for_user("anyone");
    assert!(p.is_restricted(c));
    let d = p.decide(
        c,
        "anyone",
        &stmt("INSERT", &[(Write, "t"), (Ddl, "x.*")], &["ops.f"]),
        &SearchPath::Unknown,
    );
    assert_eq!(d.verdict, Allow);
}

#[test]
fn implicit_schemas_can_be_protected() {
    let text = "\
identities:
  default_class: app
  classes: { app: {} }
protected:
  - id: catalog
    schemas: [pg_catalog]
    allow: { app: [read] }
";
    let p = Policy::from_config(&Config::from_str(text, "p.yaml").unwrap());
    let c = p.class_for_user("x");
    let s = stmt("UPDATE", &[(Write, "pg_proc")], &[]);
    assert_eq!(
        p.decide(c, "x", &s, &SearchPath::Known(vec!["public".into()]))
            .verdict,
        Deny
    );
    assert_eq!(
        p.decide(c, "x", &s, &SearchPath::Known(vec![])).verdict,
        Deny
    );
    let r = stmt("SELECT", &[(Read, "pg_proc")], &[]);
    assert_eq!(
        p.decide(c, "x", &r, &SearchPath::Known(vec![])).verdict,
        Allow
    );
}

/// Settings that would let the server read SQL differently from pgward, or
/// change later sessions behind pgward's back, are refused for restricted
/// classes only. Inspected from real SQL, so the inspector's labels are covered too.
#[test]
fn session_integrity_is_enforced_for_restricted_classes() {
    let p = shipped();
    // Class app: restricted, without an injected tenant (whose own rule
    // would answer some of these first for the worker).
    let worker = p.class_for_user("someone_else");
    let service = p.class_for_user("service_role");
    for sql in [
        "SET standard_conforming_strings = off",
        "SET client_encoding = 'SJIS'",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "ALTER ROLE CURRENT_USER SET search_path = ops",
        "ALTER DATABASE dragonfly SET search_path = ops",
        "SELECT set_config(current_user, 'x', false)",
    ] {
        let stmts = crate::inspect::inspect(sql).unwrap();
        let d = p.decide(worker, "someone_else", &stmts[0], &public());
        assert_eq!(d.verdict, Deny, "{sql}: {d:?}");
        assert_eq!(d.rule.as_deref(), Some(SESSION_RULE), "{sql}");
        let d = p.decide(service, "service_role", &stmts[0], &public());
        assert_eq!(d.verdict, Allow, "{sql}");
    }
    for sql in [
        "RESET ALL",
        "DISCARD ALL",
        "SET statement_timeout = 5000",
        "SET search_path = public",
    ] {
        let stmts = crate::inspect::inspect(sql).unwrap();
        let d = p.decide(worker, "someone_else", &stmts[0], &public());
        assert_eq!(d.verdict, Allow, "{sql}: {d:?}");
    }
}

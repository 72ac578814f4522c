//! Table-driven tests of the inspector. Accesses are written compactly as
//! `"W ops.t"` (Write), `"R t"` (Read of unqualified t), `"D s.*"` (Ddl).

use std::collections::BTreeSet;

use super::*;

fn one(sql: &str) -> StatementInfo {
    let mut v = inspect(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(v.len(), 1, "{sql}: expected one statement, got {v:?}");
    v.remove(0)
}

fn fmt_name(o: &ObjectName) -> String {
    match &o.schema {
        Some(s) => format!("{s}.{}", o.name),
        None => o.name.clone(),
    }
}

fn accesses(i: &StatementInfo) -> BTreeSet<String> {
    i.accesses
        .iter()
        .map(|a| {
            let tag = match a.action {
                Action::Read => "R",
                Action::Write => "W",
                Action::Ddl => "D",
            };
            format!("{tag} {}", fmt_name(&a.object))
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn functions(i: &StatementInfo) -> Vec<String> {
    i.functions.iter().map(fmt_name).collect()
}

/// (sql, kind, exact accesses)
const ACCESS_CASES: &[(&str, &str, &[&str])] = &[
    // --- identifiers as Postgres folds them
    (
        "DELETE FROM ONLY ops.job_queue",
        "DELETE",
        &["W ops.job_queue"],
    ),
    ("delete from OPS.Job_Queue", "DELETE", &["W ops.job_queue"]),
    (r#"DELETE FROM "OPS".x"#, "DELETE", &["W OPS.x"]),
    (
        r#"DELETE FROM ops.U&"d\0061t\+000061""#,
        "DELETE",
        &["W ops.data"],
    ),
    (r#"DELETE FROM mydb.ops.t"#, "DELETE", &["W ops.t"]),
    (
        "/* x */ INSERT /* y */ INTO -- z\n ops.t VALUES (1)",
        "INSERT",
        &["W ops.t"],
    ),
    // --- DML
    (
        "SELECT * FROM ops.t JOIN public.u ON true",
        "SELECT",
        &["R ops.t", "R public.u"],
    ),
    ("SELECT 1", "SELECT", &[]),
    ("TABLE ops.t", "SELECT", &["R ops.t"]),
    (
        "WITH d AS (DELETE FROM intake.a RETURNING *) SELECT * FROM d",
        "SELECT",
        &["W intake.a"],
    ),
    (
        "WITH d AS (SELECT 1) SELECT * FROM (WITH e AS (SELECT 2) SELECT * FROM e, d) s, e",
        "SELECT",
        // the outer `e` is out of scope of the inner WITH: a real relation
        &["R e"],
    ),
    (
        "WITH a AS (SELECT * FROM a) SELECT * FROM a",
        "SELECT",
        // non-recursive: the inner `a` is the real table
        &["R a"],
    ),
    (
        "WITH RECURSIVE a AS (SELECT 1 UNION ALL SELECT * FROM a) SELECT * FROM a",
        "SELECT",
        &[],
    ),
    (
        "WITH ops AS (SELECT 1) DELETE FROM ops",
        "DELETE",
        &["W ops"],
    ),
    (
        "WITH x AS (SELECT 1) INSERT INTO x SELECT * FROM x",
        "INSERT",
        &["W x"],
    ),
    (
        "INSERT INTO public.judgments AS j (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET id = j.id",
        "INSERT",
        &["W public.judgments"],
    ),
    (
        "INSERT INTO ops.t SELECT * FROM intake.a WHERE EXISTS (SELECT 1 FROM intake.b) RETURNING (SELECT max(x) FROM intake.c)",
        "INSERT",
        &["W ops.t", "R intake.a", "R intake.b", "R intake.c"],
    ),
    (
        "UPDATE ops.t SET a = 1 FROM public.x WHERE ops.t.id = x.id",
        "UPDATE",
        &["W ops.t", "R public.x"],
    ),
    (
        "UPDATE ops.t SET a = (SELECT b FROM public.y LIMIT 1)",
        "UPDATE",
        &["W ops.t", "R public.y"],
    ),
    (
        "DELETE FROM ops.t USING public.u WHERE ops.t.id IN (SELECT id FROM public.v)",
        "DELETE",
        &["W ops.t", "R public.u", "R public.v"],
    ),
    (
        "MERGE INTO ops.t USING public.s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "MERGE",
        &["W ops.t", "R public.s"],
    ),
    (
        "TRUNCATE a, ops.b, intake.c",
        "TRUNCATE",
        &["W a", "W ops.b", "W intake.c"],
    ),
    ("TRUNCATE ONLY ops.b", "TRUNCATE", &["W ops.b"]),
    (
        "SELECT * FROM ops.a UNION SELECT * FROM ops.b EXCEPT SELECT * FROM ops.c",
        "SELECT",
        &["R ops.a", "R ops.b", "R ops.c"],
    ),
    (
        "SELECT * FROM ops.a, LATERAL (SELECT * FROM ops.b WHERE b.x = a.x) l",
        "SELECT",
        &["R ops.a", "R ops.b"],
    ),
    (
        "SELECT (SELECT 1 FROM ops.s), x IN (SELECT y FROM ops.i) FROM (VALUES ((SELECT 1 FROM ops.v))) q(x)",
        "SELECT",
        &["R ops.s", "R ops.i", "R ops.v"],
    ),
    ("SELECT * FROM ops.t FOR UPDATE", "SELECT", &["R ops.t"]),
    (
        "WITH d AS (DELETE FROM intake.a RETURNING *) INSERT INTO ops.b SELECT * FROM d",
        "INSERT",
        &["W intake.a", "W ops.b"],
    ),
    (
        "SELECT * FROM (WITH u AS (UPDATE ops.x SET a = 1 RETURNING *) SELECT * FROM u) s",
        "SELECT",
        &["W ops.x"],
    ),
    (
        "SELECT * FROM XMLTABLE('/r' PASSING (SELECT x FROM ops.xml) COLUMNS a int)",
        "SELECT",
        &["R ops.xml"],
    ),
    (
        "SELECT * FROM ops.a WHERE a = ANY (ARRAY(SELECT b FROM ops.b)) ORDER BY (SELECT 1 FROM ops.c)",
        "SELECT",
        &["R ops.a", "R ops.b", "R ops.c"],
    ),
    (
        "SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM ops.f)) OVER (PARTITION BY (SELECT 1 FROM ops.w)) FROM ops.a",
        "SELECT",
        &["R ops.f", "R ops.w", "R ops.a"],
    ),
    (
        "EXPLAIN CREATE TABLE ops.n AS SELECT * FROM ops.t",
        "EXPLAIN",
        &["D ops.n", "R ops.t"],
    ),
    // --- COPY
    ("COPY ops.t FROM STDIN", "COPY FROM", &["W ops.t"]),
    (
        "COPY ops.t (a, b) FROM PROGRAM 'cat x'",
        "COPY FROM",
        &["W ops.t"],
    ),
    ("COPY ops.t TO STDOUT", "COPY TO", &["R ops.t"]),
    (
        "COPY (DELETE FROM ops.t RETURNING *) TO STDOUT",
        "COPY TO",
        &["W ops.t"],
    ),
    (
        "COPY (SELECT * FROM ops.t) TO STDOUT",
        "COPY TO",
        &["R ops.t"],
    ),
    // --- creating relations from queries
    (
        "SELECT * INTO ops.new FROM ops.t",
        "SELECT INTO",
        &["D ops.new", "R ops.t"],
    ),
    (
        "SELECT * INTO TEMP tmp FROM ops.t",
        "SELECT INTO",
        &["D pg_temp.tmp", "R ops.t"],
    ),
    (
        "CREATE TABLE ops.x AS SELECT 1",
        "CREATE TABLE AS",
        &["D ops.x"],
    ),
    (
        "CREATE MATERIALIZED VIEW ops.mv AS SELECT * FROM ops.t",
        "CREATE MATERIALIZED VIEW",
        &["D ops.mv", "R ops.t"],
    ),
    (
        "REFRESH MATERIALIZED VIEW ops.mv",
        "REFRESH MATERIALIZED VIEW",
        &["W ops.mv"],
    ),
    (
        "CREATE VIEW ops.v AS SELECT * FROM public.j",
        "CREATE VIEW",
        // A simple view is updatable: creating one over j is DDL on j.
        &["D ops.v", "D public.j"],
    ),
    // --- EXPLAIN / DECLARE
    ("EXPLAIN ANALYZE DELETE FROM ops.t", "EXPLAIN", &["W ops.t"]),
    ("EXPLAIN UPDATE ops.t SET a = 1", "EXPLAIN", &["W ops.t"]),
    ("EXPLAIN SELECT * FROM ops.t", "EXPLAIN", &["R ops.t"]),
    (
        "DECLARE c CURSOR FOR SELECT * FROM ops.t",
        "DECLARE CURSOR",
        &["R ops.t"],
    ),
    // --- DDL
    (
        "ALTER TABLE public.judgments DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE",
        &["D public.judgments"],
    ),
    (
        "ALTER TABLE public.judgments NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE",
        &["D public.judgments"],
    ),
    (
        "ALTER TABLE public.judgments OWNER TO eve",
        "ALTER TABLE",
        &["D public.judgments"],
    ),
    (
        "ALTER TABLE ops.t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES public.p (id)",
        "ALTER TABLE",
        // A foreign key puts triggers on the referenced table.
        &["D ops.t", "D public.p"],
    ),
    (
        "ALTER TABLE ops.parent ATTACH PARTITION ops.child FOR VALUES IN (1)",
        "ALTER TABLE",
        &["D ops.parent", "D ops.child"],
    ),
    (
        "ALTER TABLE ops.t INHERIT ops.p",
        "ALTER TABLE",
        &["D ops.t", "D ops.p"],
    ),
    (
        "ALTER TABLE ops.t RENAME TO u",
        "RENAME",
        &["D ops.t", "D ops.u"],
    ),
    (
        "ALTER TABLE ops.t RENAME COLUMN a TO b",
        "RENAME",
        &["D ops.t"],
    ),
    (
        "ALTER TABLE ops.t SET SCHEMA public",
        "ALTER SET SCHEMA",
        &["D ops.t", "D public.t"],
    ),
    (
        "ALTER INDEX ops.i RENAME TO j",
        "RENAME",
        &["D ops.i", "D ops.j"],
    ),
    (
        "ALTER SCHEMA ops RENAME TO ops2",
        "RENAME",
        &["D ops.*", "D ops2.*"],
    ),
    ("ALTER SCHEMA ops OWNER TO eve", "ALTER OWNER", &["D ops.*"]),
    (
        "ALTER FUNCTION ops.f(int) OWNER TO eve",
        "ALTER OWNER",
        &["D ops.f"],
    ),
    (
        "ALTER FUNCTION ops.f(int) SET search_path = evil",
        "ALTER FUNCTION",
        &["D ops.f"],
    ),
    (
        "ALTER FUNCTION ops.f(int) SET SCHEMA public",
        "ALTER SET SCHEMA",
        &["D ops.f", "D public.f"],
    ),
    (
        "ALTER SEQUENCE ops.s RESTART",
        "ALTER SEQUENCE",
        &["D ops.s"],
    ),
    ("CREATE SEQUENCE ops.s", "CREATE SEQUENCE", &["D ops.s"]),
    (
        "DROP TABLE ops.a, intake.b",
        "DROP",
        &["D ops.a", "D intake.b"],
    ),
    ("DROP VIEW IF EXISTS v", "DROP", &["D v"]),
    ("DROP INDEX CONCURRENTLY ops.i", "DROP", &["D ops.i"]),
    ("DROP SCHEMA ops CASCADE", "DROP", &["D ops.*"]),
    (
        "DROP SCHEMA ops, intake",
        "DROP",
        &["D ops.*", "D intake.*"],
    ),
    ("DROP FUNCTION ops.f(int), g()", "DROP", &["D ops.f", "D g"]),
    ("DROP TYPE ops.ty", "DROP", &["D ops.ty"]),
    ("DROP TRIGGER trg ON ops.q", "DROP", &["D ops.q"]),
    (
        "DROP POLICY p ON public.judgments",
        "DROP",
        &["D public.judgments"],
    ),
    ("CREATE SCHEMA ops", "CREATE SCHEMA", &["D ops.*"]),
    (
        "CREATE SCHEMA AUTHORIZATION bob",
        "CREATE SCHEMA",
        &["D bob.*"],
    ),
    (
        "CREATE SCHEMA s CREATE TABLE t (a int)",
        "CREATE SCHEMA",
        &["D s.*", "D t"],
    ),
    ("CREATE TABLE ops.x (a int)", "CREATE TABLE", &["D ops.x"]),
    (
        "CREATE TEMP TABLE x (a int)",
        "CREATE TABLE",
        &["D pg_temp.x"],
    ),
    (
        "CREATE TABLE ops.p1 PARTITION OF ops.p FOR VALUES IN (1)",
        "CREATE TABLE",
        &["D ops.p1", "D ops.p"],
    ),
    (
        "CREATE TABLE ops.c (b int) INHERITS (ops.p)",
        "CREATE TABLE",
        &["D ops.c", "D ops.p"],
    ),
    (
        "CREATE TABLE ops.c (LIKE public.j, a int REFERENCES public.k (id), d int DEFAULT ops.nextid())",
        "CREATE TABLE",
        &["D ops.c", "R public.j", "D public.k"],
    ),
    ("CREATE INDEX i ON ops.t (a)", "CREATE INDEX", &["D ops.t"]),
    (
        "GRANT ALL ON ALL TABLES IN SCHEMA ops TO x",
        "GRANT",
        &["D ops.*"],
    ),
    (
        "GRANT INSERT ON public.judgments TO x",
        "GRANT",
        &["D public.judgments"],
    ),
    ("GRANT USAGE ON SCHEMA ops TO x", "GRANT", &["D ops.*"]),
    (
        "GRANT EXECUTE ON FUNCTION ops.f(int) TO x",
        "GRANT",
        &["D ops.f"],
    ),
    (
        "REVOKE SELECT ON TABLE ops.a, ops.b FROM x",
        "REVOKE",
        &["D ops.a", "D ops.b"],
    ),
    (
        "ALTER DEFAULT PRIVILEGES IN SCHEMA ops GRANT SELECT ON TABLES TO x",
        "ALTER DEFAULT PRIVILEGES",
        &["D ops.*"],
    ),
    (
        "CREATE TRIGGER t BEFORE INSERT ON ops.q FOR EACH ROW EXECUTE FUNCTION f()",
        "CREATE TRIGGER",
        &["D ops.q"],
    ),
    (
        "CREATE RULE r AS ON INSERT TO ops.q DO INSTEAD NOTHING",
        "CREATE RULE",
        &["D ops.q"],
    ),
    (
        "CREATE RULE r AS ON INSERT TO ops.q DO ALSO DELETE FROM ops.other",
        "CREATE RULE",
        &["D ops.q", "W ops.other"],
    ),
    (
        "CREATE POLICY p ON public.judgments USING (true)",
        "CREATE POLICY",
        &["D public.judgments"],
    ),
    (
        "ALTER POLICY p ON public.judgments USING (false)",
        "ALTER POLICY",
        &["D public.judgments"],
    ),
    ("COMMENT ON TABLE ops.t IS 'x'", "COMMENT", &["D ops.t"]),
    ("COMMENT ON COLUMN ops.t.a IS 'x'", "COMMENT", &["D ops.t"]),
    ("COMMENT ON SCHEMA ops IS 'x'", "COMMENT", &["D ops.*"]),
    (
        "SECURITY LABEL ON TABLE ops.t IS 'secret'",
        "SECURITY LABEL",
        &["D ops.t"],
    ),
    (
        "CREATE STATISTICS ops.st ON a, b FROM ops.t",
        "CREATE STATISTICS",
        &["D ops.st", "D ops.t"],
    ),
    ("CLUSTER ops.t USING i", "CLUSTER", &["W ops.t"]),
    (
        "VACUUM FULL ops.t, ops.u",
        "VACUUM",
        &["W ops.t", "W ops.u"],
    ),
    ("ANALYZE ops.t", "ANALYZE", &["W ops.t"]),
    ("VACUUM", "VACUUM", &[]),
    ("REINDEX TABLE ops.t", "REINDEX", &["W ops.t"]),
    ("REINDEX SCHEMA ops", "REINDEX", &["W ops.*"]),
    (
        "LOCK TABLE ops.t IN ACCESS EXCLUSIVE MODE",
        "LOCK",
        &["W ops.t"],
    ),
    ("LOCK ops.t, ops.u", "LOCK", &["W ops.t", "W ops.u"]),
    ("LOCK ONLY ops.t IN ROW SHARE MODE", "LOCK", &["W ops.t"]),
    (
        "LOCK TABLE ops.t IN ACCESS SHARE MODE",
        "LOCK",
        &["R ops.t"],
    ),
    ("CREATE DOMAIN ops.d AS int", "CREATE DOMAIN", &["D ops.d"]),
    (
        "CREATE TYPE ops.e AS ENUM ('a')",
        "CREATE TYPE",
        &["D ops.e"],
    ),
    ("CREATE TYPE ops.c AS (a int)", "CREATE TYPE", &["D ops.c"]),
    // --- utility without accesses
    ("SHOW search_path", "SHOW", &[]),
    ("LISTEN ch", "LISTEN", &[]),
    ("NOTIFY ch, 'x'", "NOTIFY", &[]),
    ("FETCH 10 FROM c", "FETCH", &[]),
    ("MOVE 10 IN c", "MOVE", &[]),
    ("CLOSE c", "CLOSE", &[]),
    ("CHECKPOINT", "CHECKPOINT", &[]),
    ("DISCARD PLANS", "DISCARD", &[]),
];

#[test]
fn accesses_and_kinds() {
    let mut failures = Vec::new();
    for (sql, kind, expected) in ACCESS_CASES {
        let info = one(sql);
        let got = accesses(&info);
        if info.kind != *kind || got != set(expected) {
            failures.push(format!(
                "{sql}\n    kind {:?} (want {kind:?})\n    accesses {got:?}\n    want     {:?}",
                info.kind,
                set(expected)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Statements from the table above that must carry no opaque part.
#[test]
fn plain_statements_are_not_opaque() {
    for (sql, _, _) in ACCESS_CASES {
        let info = one(sql);
        assert!(info.opaque.is_empty(), "{sql}: {:?}", info.opaque);
    }
}

#[test]
fn read_is_subsumed_by_stronger_action() {
    let info = one("UPDATE ops.t SET a = (SELECT max(a) FROM ops.t)");
    assert_eq!(
        info.accesses,
        vec![Access {
            action: Action::Write,
            object: ObjectName {
                schema: Some("ops".into()),
                name: "t".into()
            }
        }]
    );
}

#[test]
fn prepare_execute_deallocate() {
    let info = one("PREPARE p AS DELETE FROM ops.t");
    assert_eq!(info.kind, "PREPARE");
    assert_eq!(accesses(&info), set(&["W ops.t"]));
    let (name, inner) = info.prepares.expect("prepares");
    assert_eq!(name, "p");
    assert_eq!(inner.kind, "DELETE");
    assert_eq!(accesses(&inner), set(&["W ops.t"]));

    let info = one("PREPARE q(int) AS SELECT dblink_exec('x') FROM ops.t WHERE a = $1");
    assert_eq!(accesses(&info), set(&["R ops.t"]));
    assert_eq!(info.opaque, vec![Opaque::DynamicSql("dblink_exec".into())]);

    let info = one("EXECUTE p(1)");
    assert_eq!(info.kind, "EXECUTE");
    assert_eq!(info.opaque, vec![Opaque::ExecutePrepared("p".into())]);
    assert!(info.accesses.is_empty());

    let info = one("EXPLAIN ANALYZE EXECUTE p");
    assert_eq!(info.opaque, vec![Opaque::ExecutePrepared("p".into())]);
    let info = one("CREATE TABLE ops.x AS EXECUTE p");
    assert_eq!(info.opaque, vec![Opaque::ExecutePrepared("p".into())]);
    assert_eq!(accesses(&info), set(&["D ops.x"]));

    assert_eq!(one("DEALLOCATE p").deallocates, Some(Some("p".into())));
    assert_eq!(
        one("DEALLOCATE PREPARE p").deallocates,
        Some(Some("p".into()))
    );
    assert_eq!(one("DEALLOCATE ALL").deallocates, Some(None));
    assert_eq!(one("SELECT 1").deallocates, None);
}

#[test]
fn code_blocks_and_dynamic_sql() {
    let info = one("DO $$ BEGIN DELETE FROM ops.t; END $$");
    assert_eq!(info.kind, "DO");
    assert_eq!(info.opaque, vec![Opaque::CodeBlock("DO".into())]);
    assert!(info.accesses.is_empty());

    let info = one(
        "CREATE FUNCTION ops.f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM ops.t; END $$",
    );
    assert_eq!(info.kind, "CREATE FUNCTION");
    assert_eq!(accesses(&info), set(&["D ops.f"]));
    assert_eq!(
        info.opaque,
        vec![Opaque::CodeBlock("CREATE FUNCTION".into())]
    );

    let info =
        one("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC DELETE FROM ops.t; END");
    assert_eq!(info.kind, "CREATE PROCEDURE");
    assert_eq!(accesses(&info), set(&["D p", "W ops.t"]));
    assert_eq!(
        info.opaque,
        vec![Opaque::CodeBlock("CREATE PROCEDURE".into())]
    );

    for (sql, f) in [
        ("SELECT dblink_exec('...')", "dblink_exec"),
        (
            "SELECT * FROM public.dblink('c', 'DELETE FROM x') AS t(a int)",
            "dblink",
        ),
        (
            "SELECT query_to_xml('DELETE FROM ops.t RETURNING *', true, true, '')",
            "query_to_xml",
        ),
        ("SELECT lo_import('/etc/passwd')", "lo_import"),
        ("SELECT * FROM ts_stat('SELECT v FROM ops.t')", "ts_stat"),
        ("INSERT INTO ops.t VALUES (DBLINK_EXEC('x'))", "dblink_exec"),
    ] {
        let info = one(sql);
        assert!(
            info.opaque.contains(&Opaque::DynamicSql(f.into())),
            "{sql}: {:?}",
            info.opaque
        );
    }
}

#[test]
fn function_calls() {
    let info = one("SELECT ops.queue_job('x', '{}'::jsonb)");
    assert_eq!(functions(&info), vec!["ops.queue_job"]);
    assert!(info.accesses.is_empty());
    assert!(info.opaque.is_empty());

    let info = one("SELECT lower(a) FROM ops.t WHERE Ops.Check(b) AND a IN (SELECT public.g())");
    assert_eq!(functions(&info), vec!["lower", "ops.check", "public.g"]);

    let info = one("SELECT * FROM ops.srf(1), LATERAL ops.srf2(2)");
    assert_eq!(functions(&info), vec!["ops.srf", "ops.srf2"]);

    let info = one("INSERT INTO ops.t (a) VALUES (ops.f()) RETURNING ops.g(a)");
    assert_eq!(functions(&info), vec!["ops.f", "ops.g"]);

    let info = one("CALL ops.do_work(ops.arg(1))");
    assert_eq!(info.kind, "CALL");
    assert_eq!(functions(&info), vec!["ops.do_work", "ops.arg"]);
    assert!(info.accesses.is_empty());

    let info = one("SELECT db.ops.f()");
    assert_eq!(functions(&info), vec!["ops.f"]);
}

#[test]
fn set_config_calls() {
    let info = one("SELECT set_config('app.current_tenant', 'x', true)");
    assert_eq!(info.settings_changed, vec!["app.current_tenant"]);
    assert_eq!(info.search_path, None);
    assert_eq!(functions(&info), vec!["set_config"]);

    let info = one("SELECT pg_catalog.set_config('search_path', 'ops', false)");
    assert_eq!(info.settings_changed, vec!["search_path"]);
    assert_eq!(info.search_path, Some(SearchPathChange::Unknown));

    let info = one("SELECT set_config('Search_Path'::text, 'ops', false)");
    assert_eq!(info.search_path, Some(SearchPathChange::Unknown));

    let info = one("SELECT set_config(name, 'x', false) FROM ops.names");
    assert_eq!(info.settings_changed, vec!["*"]);
    assert_eq!(info.search_path, Some(SearchPathChange::Unknown));

    let info = one("SELECT set_config('search' || '_path', 'x', false)");
    assert_eq!(info.settings_changed, vec!["*"]);

    let info =
        one("SELECT set_config(is_local => false, new_value => 'x', setting_name => 'app.t')");
    assert_eq!(info.settings_changed, vec!["app.t"]);

    let info = one("WITH x AS (SELECT set_config('search_path', 'evil', false)) DELETE FROM ops.t");
    assert_eq!(info.search_path, Some(SearchPathChange::Unknown));

    let info = one("UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'");
    assert_eq!(info.settings_changed, vec!["*"]);
    assert_eq!(info.search_path, Some(SearchPathChange::Unknown));

    // A view over pg_settings is updatable through pg_settings' own rule.
    for sql in [
        "CREATE TEMP VIEW v AS SELECT name, setting FROM pg_settings",
        "CREATE OR REPLACE VIEW public.v AS SELECT * FROM pg_catalog.pg_settings s WHERE s.name <> ''",
    ] {
        let info = one(sql);
        assert_eq!(info.settings_changed, vec!["*"], "{sql}");
        assert_eq!(info.search_path, Some(SearchPathChange::Unknown), "{sql}");
    }
    let info = one("CREATE VIEW public.v AS SELECT * FROM public.pg_settings_copy");
    assert!(info.settings_changed.is_empty());
}

#[test]
fn set_and_reset() {
    use SearchPathChange::*;
    let cases: &[(&str, &str, &[&str], Option<SearchPathChange>)] = &[
        (
            r#"SET search_path = ops, "Public""#,
            "SET",
            &["search_path"],
            Some(Set {
                schemas: vec!["ops".into(), "Public".into()],
                local: false,
            }),
        ),
        (
            r#"SET SESSION search_path TO "$user", 'A', public"#,
            "SET",
            &["search_path"],
            Some(Set {
                schemas: vec!["$user".into(), "A".into(), "public".into()],
                local: false,
            }),
        ),
        (
            "SET LOCAL search_path TO ops",
            "SET",
            &["search_path"],
            Some(Set {
                schemas: vec!["ops".into()],
                local: true,
            }),
        ),
        (
            r#"SET "SEARCH_PATH" = evil"#,
            "SET",
            &["search_path"],
            Some(Set {
                schemas: vec!["evil".into()],
                local: false,
            }),
        ),
        (
            "SET SCHEMA 'ops'",
            "SET",
            &["search_path"],
            Some(Set {
                schemas: vec!["ops".into()],
                local: false,
            }),
        ),
        (
            "SET LOCAL search_path TO DEFAULT",
            "SET",
            &["search_path"],
            Some(Reset { local: true }),
        ),
        (
            "SET search_path = DEFAULT",
            "SET",
            &["search_path"],
            Some(Reset { local: false }),
        ),
        (
            "RESET search_path",
            "RESET",
            &["search_path"],
            Some(Reset { local: false }),
        ),
        ("RESET ALL", "RESET", &["*"], Some(Reset { local: false })),
        (
            "DISCARD ALL",
            "DISCARD",
            &["*"],
            Some(Reset { local: false }),
        ),
        (
            "SET app.current_tenant = 'x'",
            "SET",
            &["app.current_tenant"],
            None,
        ),
        ("SET LOCAL App.Tenant TO 'x'", "SET", &["app.tenant"], None),
        ("SET ROLE admin", "SET", &["role"], None),
        ("RESET ROLE", "RESET", &["role"], None),
        (
            "SET SESSION AUTHORIZATION bob",
            "SET",
            &["session_authorization"],
            None,
        ),
        ("SET TIME ZONE 'UTC'", "SET", &["timezone"], None),
        (
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION",
            &[],
            None,
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET TRANSACTION",
            &[],
            None,
        ),
        (
            "SET search_path FROM CURRENT",
            "SET",
            &["search_path"],
            Some(Unknown),
        ),
        (
            "ALTER ROLE bob SET search_path = evil",
            "ALTER ROLE SET",
            &["search_path"],
            None,
        ),
        (
            "ALTER DATABASE d SET app.x = 1",
            "ALTER DATABASE SET",
            &["app.x"],
            None,
        ),
        ("ALTER ROLE bob RESET ALL", "ALTER ROLE SET", &["*"], None),
    ];
    for (sql, kind, settings, path) in cases {
        let info = one(sql);
        assert_eq!(info.kind, *kind, "{sql}");
        assert_eq!(info.settings_changed, *settings, "{sql}");
        assert_eq!(info.search_path, *path, "{sql}");
        assert!(info.accesses.is_empty(), "{sql}");
        assert!(info.opaque.is_empty(), "{sql}: {:?}", info.opaque);
    }
    assert_eq!(one("DISCARD ALL").deallocates, Some(None));
    // SET inside a function definition does not change this session.
    let info =
        one("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = evil AS 'SELECT 1'");
    assert_eq!(info.search_path, None);
    assert!(info.settings_changed.is_empty());
}

#[test]
fn transaction_control() {
    use TxnControl::*;
    for (sql, kind, txn) in [
        ("BEGIN", "BEGIN", Begin),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN", Begin),
        ("START TRANSACTION READ ONLY", "START TRANSACTION", Begin),
        ("COMMIT", "COMMIT", Commit),
        ("END", "COMMIT", Commit),
        ("COMMIT AND CHAIN", "COMMIT", Commit),
        ("ROLLBACK", "ROLLBACK", Rollback),
        ("ABORT", "ROLLBACK", Rollback),
        ("SAVEPOINT s", "SAVEPOINT", Savepoint),
        (
            "ROLLBACK TO SAVEPOINT s",
            "ROLLBACK TO",
            RollbackToSavepoint,
        ),
        ("ROLLBACK TO s", "ROLLBACK TO", RollbackToSavepoint),
        ("RELEASE SAVEPOINT s", "RELEASE", ReleaseSavepoint),
        ("PREPARE TRANSACTION 'g'", "PREPARE TRANSACTION", Prepare),
        ("COMMIT PREPARED 'g'", "COMMIT PREPARED", Other),
        ("ROLLBACK PREPARED 'g'", "ROLLBACK PREPARED", Other),
    ] {
        let info = one(sql);
        assert_eq!(info.kind, kind, "{sql}");
        assert_eq!(info.txn, Some(txn), "{sql}");
    }
    assert_eq!(one("SELECT 1").txn, None);
}

#[test]
fn multi_statement_strings() {
    let v = inspect("BEGIN; INSERT INTO ops.t VALUES (1); COMMIT").unwrap();
    let kinds: Vec<&str> = v.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(kinds, ["BEGIN", "INSERT", "COMMIT"]);
    assert_eq!(accesses(&v[1]), set(&["W ops.t"]));
    assert_eq!(v[0].txn, Some(TxnControl::Begin));

    let v = inspect("SELECT 1; DELETE FROM ops.t").unwrap();
    assert_eq!(v.len(), 2);
    assert!(v[0].accesses.is_empty());
    assert_eq!(accesses(&v[1]), set(&["W ops.t"]));

    // A `;` inside a literal, comment or dollar quote does not split.
    let v =
        inspect("SELECT ';DELETE FROM ops.t', $x$;DELETE FROM ops.t$x$ /* ; DELETE */").unwrap();
    assert_eq!(v.len(), 1);
    assert!(v[0].accesses.is_empty());
}

#[test]
fn empty_and_invalid_input() {
    assert_eq!(inspect("").unwrap(), vec![]);
    assert_eq!(
        inspect("  -- only a comment\n /* and another */ ").unwrap(),
        vec![]
    );
    assert_eq!(inspect(";;").unwrap(), vec![]);
    for bad in [
        "SELEC 1",
        "DELETE FROM",
        "SELECT 'unterminated",
        "SELECT 1; DELETE FROM ops.t WHERE",
        "SELECT \0 1",
        "/* unterminated comment",
    ] {
        assert!(
            matches!(inspect(bad), Err(InspectError::Parse(_))),
            "{bad:?} should not parse"
        );
    }
}

#[test]
fn unmodelled_statements_are_opaque() {
    for (sql, what) in [
        ("CREATE ROLE eve SUPERUSER", "CREATE ROLE"),
        ("ALTER ROLE eve SUPERUSER", "ALTER ROLE"),
        ("GRANT admin TO eve", "GRANT ROLE"),
        ("CREATE EXTENSION dblink", "CREATE EXTENSION"),
        ("ALTER SYSTEM SET search_path = evil", "ALTER SYSTEM"),
        ("LOAD 'evil.so'", "LOAD"),
        (
            "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
            "CREATE EVENT TRIGGER",
        ),
        ("DROP EXTENSION dblink", "DROP EXTENSION"),
        ("DROP DATABASE d", "DROP DATABASE"),
        ("GRANT CONNECT ON DATABASE d TO eve", "GRANT ON DATABASE"),
        (
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO x",
            "ALTER DEFAULT PRIVILEGES (all schemas)",
        ),
        ("COMMENT ON EXTENSION dblink IS 'x'", "COMMENT ON EXTENSION"),
        ("ALTER DATABASE d RENAME TO e", "ALTER DATABASE RENAME"),
        ("REASSIGN OWNED BY a TO b", "REASSIGN OWNED"),
    ] {
        let info = one(sql);
        assert!(
            info.opaque.contains(&Opaque::UnknownStatement(what.into())),
            "{sql}: {:?}",
            info.opaque
        );
    }
}

/// A tiny deterministic PRNG so the fuzz test needs no extra dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "INSERT INTO",
    "UPDATE",
    "DELETE FROM",
    "MERGE INTO",
    "WITH x AS (",
    ")",
    "(",
    ",",
    ";",
    "ops.t",
    "\"Q\".\"t\"",
    "U&\"d\\0061t\"",
    "*",
    "FROM",
    "WHERE",
    "SET",
    "a = 1",
    "VALUES (1)",
    "RETURNING *",
    "USING",
    "ON CONFLICT DO NOTHING",
    "COPY",
    "TO STDOUT",
    "FROM STDIN",
    "EXPLAIN",
    "ANALYZE",
    "PREPARE p AS",
    "EXECUTE p",
    "DO $$ x $$",
    "$$",
    "'",
    "''",
    "--",
    "/*",
    "*/",
    "\n",
    "set_config('search_path', 'x', false)",
    "dblink('x')",
    "UNION",
    "LATERAL",
    "JOIN",
    "ON true",
    "CREATE TABLE",
    "ALTER TABLE",
    "DROP",
    "GRANT ALL ON",
    "TO x",
    "TRUNCATE",
    "RESET ALL",
    "BEGIN",
    "COMMIT",
    "SAVEPOINT s",
    "CREATE FUNCTION f() RETURNS int AS",
    "LANGUAGE sql",
    "CALL p()",
    "SET search_path =",
    "DEFAULT",
    "ROW LEVEL SECURITY",
    "CREATE RULE r AS ON INSERT TO",
    "DO INSTEAD",
    "1",
    "NULL",
    "::int",
    "E'\\''",
    "[",
    "]",
    "$1",
    "IN (SELECT 1)",
    "EXISTS (",
    "CASE WHEN",
    "END",
];

#[test]
fn fuzz_never_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut parsed = 0usize;
    for _ in 0..4000 {
        let mut sql = String::new();
        for _ in 0..=rng.below(14) {
            if rng.below(8) == 0 {
                // A random byte sequence, made valid UTF-8 lossily.
                let bytes: Vec<u8> = (0..=rng.below(6)).map(|_| rng.next() as u8).collect();
                sql.push_str(&String::from_utf8_lossy(&bytes));
            } else {
                sql.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            }
            sql.push(' ');
        }
        if inspect(&sql).is_ok() {
            parsed += 1;
        }
    }
    // Make sure the generator also exercises the classifier, not only the parser.
    for case in ACCESS_CASES {
        let base = case.0;
        for _ in 0..5 {
            let mut s: Vec<char> = base.chars().collect();
            let i = rng.below(s.len() + 1);
            match rng.below(3) {
                0 if i < s.len() => {
                    s.remove(i);
                }
                1 => s.insert(i, ['(', ')', ';', '\'', '"', ' ', ','][rng.below(7)]),
                _ => s.truncate(i),
            }
            let mutated: String = s.into_iter().collect();
            if inspect(&mutated).is_ok() {
                parsed += 1;
            }
        }
    }
    assert!(parsed > 50, "fuzz corpus barely parses ({parsed})");
}

#[test]
fn deep_nesting_fails_closed_or_classifies() {
    let mut sql = String::from("DELETE FROM ops.t WHERE a IN ");
    for _ in 0..200 {
        sql.push_str("(SELECT ");
    }
    sql.push('1');
    for _ in 0..200 {
        sql.push(')');
    }
    match inspect(&sql) {
        Err(_) => {}
        Ok(v) => assert_eq!(accesses(&v[0]), set(&["W ops.t"])),
    }
}

/// Independent oracle for the generated `children()`: pg_query's protobuf
/// types also derive `serde::Serialize`, which reaches every field. Every
/// RangeVar and FuncCall in the serialized tree must also be reached by the
/// walk (a missed subtree would be a missed write).
#[test]
fn walk_reaches_every_relation_and_call() {
    use pg_query::NodeRef;

    fn count_json(v: &serde_json::Value, rv: &mut usize, fc: &mut usize) {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key("relname") && m.contains_key("relpersistence") {
                    *rv += 1;
                }
                if m.contains_key("funcname") && m.contains_key("agg_star") {
                    *fc += 1;
                }
                m.values().for_each(|x| count_json(x, rv, fc));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| count_json(x, rv, fc)),
            _ => {}
        }
    }
    fn count_walk(n: NodeRef<'_>, rv: &mut usize, fc: &mut usize) {
        match n {
            NodeRef::RangeVar(_) => *rv += 1,
            NodeRef::FuncCall(_) => *fc += 1,
            _ => {}
        }
        let mut kids = Vec::new();
        super::children::children(n, &mut kids);
        kids.into_iter().for_each(|k| count_walk(k, rv, fc));
    }

    let extra = [
        "SELECT f(a) FROM ops.a UNION ALL (SELECT g() FROM ops.b INTERSECT SELECT h() FROM ops.c)",
        "SELECT * FROM ROWS FROM (f(1), g(2)) WITH ORDINALITY AS r(a int, b int)",
        "SELECT * FROM JSON_TABLE((SELECT j FROM ops.j), '$[*]' COLUMNS (a int PATH '$.a' DEFAULT f() ON EMPTY))",
        "MERGE INTO ops.t USING (SELECT * FROM ops.s) s ON f(s.id) WHEN NOT MATCHED THEN INSERT VALUES (g()) RETURNING h()",
        "CREATE TABLE ops.c (a int CHECK (f(a)), b int GENERATED ALWAYS AS (g(a)) STORED) PARTITION BY RANGE (h(a))",
        "CREATE INDEX ON ops.t (f(a)) INCLUDE (b) WHERE g(b)",
        "ALTER TABLE ops.t ALTER COLUMN a SET DEFAULT f(), ADD CONSTRAINT c EXCLUDE USING gist (g(a) WITH =)",
        "CREATE POLICY p ON ops.t USING (f()) WITH CHECK (EXISTS (SELECT 1 FROM ops.u WHERE g()))",
        "CREATE TRIGGER t AFTER UPDATE ON ops.t REFERENCING NEW TABLE AS n FOR EACH STATEMENT WHEN (f()) EXECUTE FUNCTION g()",
        "COPY ops.t FROM STDIN WHERE f(a)",
        "SELECT a FROM ops.t GROUP BY GROUPING SETS ((f(a)), ()) HAVING g() WINDOW w AS (ORDER BY h())",
        "UPDATE ops.t SET (a, b) = (SELECT f(), g() FROM ops.u) WHERE CURRENT OF c",
        "SELECT * FROM ops.t TABLESAMPLE bernoulli (f()) REPEATABLE (g())",
        "INSERT INTO ops.t OVERRIDING SYSTEM VALUE SELECT * FROM ops.s ON CONFLICT (f(a)) WHERE g() DO UPDATE SET a = h() WHERE i()",
    ];
    let corpus = ACCESS_CASES.iter().map(|c| c.0).chain(extra);
    let mut total = 0;
    for sql in corpus {
        let parsed = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT).unwrap();
        let json = serde_json::to_value(&parsed.protobuf).unwrap();
        let (mut jr, mut jf, mut wr, mut wf) = (0, 0, 0, 0);
        count_json(&json, &mut jr, &mut jf);
        for raw in &parsed.protobuf.stmts {
            if let Some(n) = raw.stmt.as_deref().and_then(|n| n.node.as_ref()) {
                count_walk(n.to_ref(), &mut wr, &mut wf);
            }
        }
        assert_eq!(
            (wr, wf),
            (jr, jf),
            "{sql}: walk (rangevars, calls) vs serde"
        );
        total += jr + jf;
    }
    assert!(total > 150, "oracle saw too little ({total})");
}

/// Long but ordinary statements (a 60-term concatenation, a 50-way join) are
/// understood, not refused as too deep (prost's 100-level limit is lifted).
#[test]
fn long_legitimate_statements_are_understood() {
    let concat = format!("SELECT {} FROM public.j", vec!["a"; 60].join(" || "));
    let joins: String = (1..50)
        .map(|i| format!(" JOIN ops.q q{i} ON q{i}.id = q{}.id", i - 1))
        .collect();
    let join = format!("SELECT count(*) FROM ops.q q0{joins}");
    // Like the proxy's runtime threads, with STACK_BYTES of stack.
    let handle = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || {
            for sql in [concat, join] {
                let stmts = inspect(&sql).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(stmts.len(), 1);
                assert!(stmts[0].opaque.is_empty(), "{:?}", stmts[0].opaque);
            }
        })
        .unwrap();
    handle.join().unwrap();
}

/// The deepest statements the parser accepts inspect without overflowing a
/// thread with `STACK_BYTES` of stack.
#[test]
fn deepest_statements_fit_in_the_inspection_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(|| {
            for (open, close) in [("abs(", ")"), ("ARRAY[", "]"), ("(SELECT ", ")")] {
                let sql = format!("SELECT {}1{}", open.repeat(4950), close.repeat(4950));
                let _ = inspect(&sql);
            }
            let _ = inspect(&format!("SELECT {}true", "NOT ".repeat(4950)));
        })
        .unwrap();
    handle.join().expect("inspection overflowed its stack");
}

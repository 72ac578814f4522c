//! Enforcement: the worker corpus (issue #3) through pgward, with every
//! protocol, against a database that would accept every write.
//!
//! * `tests/corpus/worker.txt` lists statements from the worker identity
//!   (`dragonfly_app`) with what pgward must do with each under the shipped
//!   `policy.yaml`: REFUSE (SQLSTATE 42501, a message naming pgward, and a
//!   database fingerprint taken directly, not through pgward, that does not
//!   change) or ALLOW (success, and for allowed writes a superuser-side check
//!   that the write happened). Its header documents the format.
//! * The database is `sql/demo.sql` plus `sql/test_grants.sql`, which grants
//!   the worker every write privilege: PostgreSQL itself runs the
//!   data-changing REFUSE statements (the control test below proves it, with
//!   no pgward in between), so their refusal is pgward's. DDL that needs
//!   ownership PostgreSQL would refuse too; there the SQLSTATE 42501 message
//!   naming pgward shows who refused, and the fingerprint that nothing ran.
//! * Protocols: simple Query (`simple_query`), extended protocol with the
//!   unnamed statement (`query_typed`: Parse "" / Bind / Describe / Execute /
//!   Sync in one go), extended protocol with a named prepared statement
//!   (`prepare` then `query`). Multi-statement strings cannot be prepared and
//!   run only as simple Query (entries marked `@simple-only`). COPY entries
//!   run with a small raw protocol client (below), because tokio-postgres
//!   exposes COPY data only through `futures` traits this crate does not
//!   depend on; the raw client covers the same three protocols.
//! * After every entry the same session must still answer `SELECT <n>` with
//!   `<n>`: a refusal must leave the protocol in sync.
//!
//! The other tests cover what a per-statement table cannot: pipelined
//! batches and the FunctionCall message, transactions (COMMIT answered by
//! ROLLBACK), the unrestricted superuser, psql, protocol-level prepared
//! statements across search_path changes, SET LOCAL inside one extended
//! batch, startup settings, updatable views, and the control run without
//! pgward.

mod support;

use std::time::Duration;

use support::*;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Upper bound for any single client step; nothing may hang a test.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// The worker acts for tenant acme (RLS on tenant tables).
const TENANT_OPTIONS: &str = "-c app.current_tenant=acme";
/// At least this many corpus entries (issue #3).
const MIN_CORPUS_ENTRIES: usize = 150;

// ===========================================================================
// The corpus
// ===========================================================================

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Refuse,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum CopyMode {
    /// COPY ... FROM STDIN, fed these bytes.
    In(Vec<u8>),
    /// COPY ... TO STDOUT.
    Out,
}

#[derive(Debug, Clone)]
struct Entry {
    label: String,
    /// Line of the `===` header in worker.txt.
    line: usize,
    expect: Expect,
    sql: String,
    setup: Vec<String>,
    teardown: Vec<String>,
    su_setup: Vec<String>,
    check: Option<String>,
    simple_only: Option<String>,
    copy: Option<CopyMode>,
    superuser: bool,
}

fn unescape(text: &str) -> String {
    text.replace("\\t", "\t")
        .replace("\\r", "\r")
        .replace("\\n", "\n")
        .replace("\\f", "\u{c}")
}

fn parse_corpus(text: &str) -> Result<Vec<Entry>, String> {
    fn finish(
        entry: Option<(Entry, Vec<String>, bool)>,
        out: &mut Vec<Entry>,
    ) -> Result<(), String> {
        let Some((mut e, mut body, escapes)) = entry else {
            return Ok(());
        };
        while body.last().is_some_and(|l| l.trim().is_empty()) {
            body.pop();
        }
        if body.is_empty() {
            return Err(format!("line {}: entry {} has no SQL", e.line, e.label));
        }
        let sql = body.join("\n");
        e.sql = if escapes { unescape(&sql) } else { sql };
        if e.check.is_some() && e.expect == Expect::Refuse {
            return Err(format!("line {}: @check is for ALLOW entries", e.line));
        }
        if e.superuser && e.expect == Expect::Allow {
            return Err(format!("line {}: @superuser is for REFUSE entries", e.line));
        }
        out.push(e);
        Ok(())
    }

    let mut out = Vec::new();
    let mut current: Option<(Entry, Vec<String>, bool)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix("=== ") {
            finish(current.take(), &mut out)?;
            let mut words = header.split_whitespace();
            let expect = match words.next() {
                Some("REFUSE") => Expect::Refuse,
                Some("ALLOW") => Expect::Allow,
                other => return Err(format!("line {n}: unknown expectation {other:?}")),
            };
            let label = words
                .next()
                .ok_or_else(|| format!("line {n}: entry without a label"))?
                .to_string();
            if words.next().is_some() {
                return Err(format!("line {n}: labels have no spaces"));
            }
            current = Some((
                Entry {
                    label,
                    line: n,
                    expect,
                    sql: String::new(),
                    setup: Vec::new(),
                    teardown: Vec::new(),
                    su_setup: Vec::new(),
                    check: None,
                    simple_only: None,
                    copy: None,
                    superuser: false,
                },
                Vec::new(),
                false,
            ));
            continue;
        }
        let Some((entry, body, escapes)) = current.as_mut() else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!("line {n}: text outside an entry: {line:?}"));
        };
        if body.is_empty() && line.starts_with('@') {
            let (name, arg) = line.split_once(' ').unwrap_or((line, ""));
            let arg = arg.trim().to_string();
            match name {
                "@setup" => entry.setup.push(arg),
                "@teardown" => entry.teardown.push(arg),
                "@su-setup" => entry.su_setup.push(arg),
                "@check" => entry.check = Some(arg),
                "@simple-only" => entry.simple_only = Some(arg),
                "@copy-in" => entry.copy = Some(CopyMode::In(unescape(&arg).into_bytes())),
                "@copy-out" => entry.copy = Some(CopyMode::Out),
                "@superuser" => entry.superuser = true,
                "@escapes" => *escapes = true,
                other => return Err(format!("line {n}: unknown directive {other}")),
            }
            continue;
        }
        if body.is_empty() && line.trim().is_empty() {
            continue;
        }
        body.push(line.to_string());
    }
    finish(current, &mut out)?;
    Ok(out)
}

fn load_corpus() -> Vec<Entry> {
    let path = repo_path("tests/corpus/worker.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_corpus(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ===========================================================================
// Fixture: demo database with grant drift, scratch tables, the witness
// ===========================================================================

/// Tables the worker may write (nothing protects them) and the fingerprint
/// function, created by the superuser after demo.sql and test_grants.sql.
const FIXTURE_SQL: &str = r#"
CREATE TABLE public.scratch (
    id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    k    text UNIQUE,
    note text,
    n    integer NOT NULL DEFAULT 0
);
INSERT INTO public.scratch (k, note, n) VALUES ('seed', 'seed row', 1);
CREATE TABLE public.scratch_trunc (id integer);
INSERT INTO public.scratch_trunc VALUES (1), (2);
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON public.scratch, public.scratch_trunc TO dragonfly_app;
GRANT USAGE, SELECT ON SEQUENCE public.scratch_id_seq TO dragonfly_app;
CREATE SCHEMA witness;
REVOKE ALL ON SCHEMA witness FROM PUBLIC;
"#;

/// A copy of every table's rows as the fixture starts, and
/// `witness.restore()`, which puts them back (see [`Fixture::heal`]).
const SNAPSHOT_SQL: &str = r#"
CREATE TABLE witness.snapshots (rel text, snap text);
DO $$
DECLARE
    r record;
    i integer := 0;
BEGIN
    FOR r IN
        SELECT n.nspname, c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND USER_NAMESPACE
         ORDER BY 1, 2
    LOOP
        i := i + 1;
        EXECUTE format('CREATE TABLE witness.snap_%s AS SELECT * FROM %I.%I', i, r.nspname, r.relname);
        INSERT INTO witness.snapshots VALUES (format('%I.%I', r.nspname, r.relname), format('witness.snap_%s', i));
    END LOOP;
END
$$;
CREATE FUNCTION witness.restore() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    -- No foreign-key checks while tables are refilled one by one.
    SET LOCAL session_replication_role = replica;
    FOR r IN SELECT * FROM witness.snapshots LOOP
        EXECUTE format('DELETE FROM %s', r.rel);
        EXECUTE format('INSERT INTO %s OVERRIDING SYSTEM VALUE SELECT * FROM %s', r.rel, r.snap);
    END LOOP;
END
$$;
"#;

/// Objects of the database itself, as opposed to PostgreSQL's own schemas,
/// temporary schemas and the witness. `n` is the pg_namespace row.
const USER_NAMESPACE: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'witness') \
                              AND n.nspname !~ '^pg_(temp|toast)'";

/// `witness.fingerprint()`: one line per table/sequence (row count and md5 of
/// its rows) and per catalog aspect (row count and md5). Taken as the
/// superuser, directly: RLS does not hide anything from it.
const FINGERPRINT_FUNCTION: &str = r#"
CREATE FUNCTION witness.fingerprint() RETURNS text
LANGUAGE plpgsql AS $fp$
DECLARE
    r record;
    part text;
    result text := '';
BEGIN
    FOR r IN
        SELECT c.oid::regclass AS rel, c.relkind
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'S', 'm') AND USER_NAMESPACE
           -- Sequences are not transactional: a rolled-back allowed insert
           -- into the scratch table still consumes an identity value.
           AND c.oid <> 'public.scratch_id_seq'::regclass
         ORDER BY n.nspname, c.relname
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('SELECT t.last_value || '' '' || t.is_called FROM %s t', r.rel) INTO part;
        ELSE
            EXECUTE format(
                'SELECT count(*) || '' '' || coalesce(md5(string_agg(t::text, '','' ORDER BY t::text)), ''-'') FROM %s t',
                r.rel) INTO part;
        END IF;
        result := result || 'data ' || r.rel::text || ' ' || part || E'\n';
    END LOOP;
    FOR r IN SELECT * FROM (VALUES
        ('namespaces', $q$SELECT concat_ws(' ', n.nspname, n.nspowner::regrole, n.nspacl) FROM pg_namespace n WHERE n.nspname !~ '^pg_(temp|toast)'$q$),
        ('relations', $q$SELECT concat_ws(' ', n.nspname, c.relname, c.relkind, c.relowner::regrole, c.relacl, c.relrowsecurity, c.relforcerowsecurity, c.relhastriggers, c.relhasrules, c.relhasindex, c.relpersistence, c.relreplident, c.reloptions, c.relnatts, c.relispartition) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE USER_NAMESPACE$q$),
        ('columns', $q$SELECT concat_ws(' ', a.attrelid::regclass, a.attnum, a.attname, a.atttypid::regtype, a.attnotnull, a.atthasdef, a.attisdropped, a.attidentity, a.attgenerated, a.attacl) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attnum > 0 AND USER_NAMESPACE$q$),
        ('defaults', $q$SELECT concat_ws(' ', d.adrelid::regclass, d.adnum, pg_get_expr(d.adbin, d.adrelid)) FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE USER_NAMESPACE$q$),
        ('constraints', $q$SELECT concat_ws(' ', n.nspname, co.conname, co.conrelid::regclass, co.contype, co.convalidated, pg_get_constraintdef(co.oid)) FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace WHERE USER_NAMESPACE$q$),
        ('indexes', $q$SELECT pg_get_indexdef(i.indexrelid) || ' ' || i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE USER_NAMESPACE$q$),
        ('policies', $q$SELECT concat_ws(' ', p.polrelid::regclass, p.polname, p.polcmd, p.polpermissive, p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)) FROM pg_policy p$q$),
        ('triggers', $q$SELECT concat_ws(' ', t.tgrelid::regclass, t.tgname, t.tgenabled, t.tgisinternal, t.tgfoid::regprocedure) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE USER_NAMESPACE$q$),
        ('rules', $q$SELECT concat_ws(' ', r.ev_class::regclass, r.rulename, r.ev_type, r.ev_enabled, r.is_instead, md5(pg_get_ruledef(r.oid))) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace WHERE USER_NAMESPACE$q$),
        ('comments', $q$SELECT concat_ws(' ', d.classoid::regclass, d.objoid, d.objsubid, d.description) FROM pg_description d WHERE d.objoid >= 16384$q$),
        ('functions', $q$SELECT concat_ws(' ', p.oid::regprocedure, p.proowner::regrole, p.prosecdef, p.provolatile, p.proacl, p.proconfig, md5(p.prosrc)) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE USER_NAMESPACE$q$),
        ('types', $q$SELECT concat_ws(' ', n.nspname, t.typname, t.typtype, t.typowner::regrole, t.typacl) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE USER_NAMESPACE$q$),
        ('default_acls', $q$SELECT concat_ws(' ', d.defaclrole::regrole, d.defaclnamespace, d.defaclobjtype, d.defaclacl) FROM pg_default_acl d$q$),
        ('role_settings', $q$SELECT concat_ws(' ', s.setdatabase, s.setrole, s.setconfig) FROM pg_db_role_setting s WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))$q$),
        ('roles', $q$SELECT concat_ws(' ', r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolbypassrls, r.rolconnlimit) FROM pg_roles r WHERE r.rolname IN ('dragonfly_app', 'service_role')$q$),
        ('memberships', $q$SELECT concat_ws(' ', m.roleid::regrole, m.member::regrole) FROM pg_auth_members m WHERE m.member = 'dragonfly_app'::regrole OR m.roleid = 'dragonfly_app'::regrole$q$),
        ('extensions', $q$SELECT concat_ws(' ', e.extname, e.extversion) FROM pg_extension e$q$),
        ('large_objects', $q$SELECT l.oid::text FROM pg_largeobject_metadata l$q$),
        ('statistics', $q$SELECT concat_ws(' ', s.stxrelid::regclass, s.stxname) FROM pg_statistic_ext s$q$),
        ('database', $q$SELECT concat_ws(' ', d.datname, d.datdba::regrole, d.datacl) FROM pg_database d WHERE d.datname = current_database()$q$)
    ) AS v(label, q) ORDER BY 1
    LOOP
        EXECUTE format(
            'SELECT count(*) || '' '' || coalesce(md5(string_agg(x, E''\n'' ORDER BY x)), ''-'') FROM (%s) s(x)',
            r.q) INTO part;
        result := result || 'catalog ' || r.label || ' ' || part || E'\n';
    END LOOP;
    RETURN result;
END
$fp$;
REVOKE ALL ON FUNCTION witness.fingerprint() FROM PUBLIC;
"#;

struct Fixture {
    pg: &'static PgCluster,
    db: String,
    proxy: ProxyProcess,
}

impl Fixture {
    /// A demo database `name` the worker could write all over, and pgward in
    /// front of the shared cluster with the shipped policy.yaml.
    async fn new(name: &str) -> Fixture {
        let pg = PgCluster::shared();
        let db = pg.demo_database(name);
        pg.grant_worker_writes(&db);
        let su = pg.connect_superuser(&db).await;
        let fingerprint = FINGERPRINT_FUNCTION.replace("USER_NAMESPACE", USER_NAMESPACE);
        let snapshot = SNAPSHOT_SQL.replace("USER_NAMESPACE", USER_NAMESPACE);
        for sql in [FIXTURE_SQL, fingerprint.as_str(), snapshot.as_str()] {
            su.batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("fixture setup failed: {}", describe_error(&e)));
        }
        let policy_path = repo_path("policy.yaml");
        let policy = std::fs::read_to_string(&policy_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", policy_path.display()));
        let proxy = ProxyProcess::start(pg.port(), &policy);
        Fixture { pg, db, proxy }
    }

    /// The superuser, straight to PostgreSQL (the witness's side).
    async fn superuser(&self) -> Client {
        self.pg.connect_superuser(&self.db).await
    }

    /// The superuser through pgward (class `service`, unrestricted).
    async fn proxied_superuser(&self) -> Client {
        self.proxy
            .connect(SUPERUSER, SUPERUSER_PASSWORD, &self.db)
            .await
    }

    /// The worker through pgward, acting for tenant acme.
    async fn worker(&self) -> Client {
        self.worker_with_options(TENANT_OPTIONS).await
    }

    async fn worker_with_options(&self, options: &str) -> Client {
        connect_with_options(
            HOST,
            self.proxy.port(),
            WORKER_USER,
            WORKER_PASSWORD,
            &self.db,
            options,
        )
        .await
    }

    /// A raw protocol session of the worker through pgward.
    async fn raw_worker(&self, extra: &[(&str, &str)]) -> Result<raw::RawClient, String> {
        let mut params = vec![
            ("user", WORKER_USER),
            ("database", self.db.as_str()),
            ("options", TENANT_OPTIONS),
            ("application_name", "pgward-tests-raw"),
        ];
        params.extend_from_slice(extra);
        raw::RawClient::connect(self.proxy.port(), &params, WORKER_PASSWORD).await
    }

    /// After a statement got through and damaged the database: restores the
    /// demo schema and the grant drift (both files are re-runnable), then
    /// every table's rows as they were when the fixture started, so that
    /// later entries still have something to destroy and a witness that
    /// means something. (The corpus lists REFUSE entries before ALLOW ones,
    /// so nothing an allowed statement did is lost.)
    async fn heal(&self, su: &Client) {
        self.pg.run_sql_file(&self.db, &repo_path("sql/demo.sql"));
        self.pg.grant_worker_writes(&self.db);
        if let Err(e) = su.batch_execute("SELECT witness.restore()").await {
            eprintln!(
                "healing {}: restoring the rows failed: {}",
                self.db,
                describe_error(&e)
            );
        }
    }

    /// pgward's warnings and errors after byte offset `mark` of its log (at
    /// most `max`, the last ones), without the session prefix.
    fn log_since(&self, mark: usize, max: usize) -> Vec<String> {
        let log = self.proxy.log();
        let lines: Vec<String> = log
            .get(mark..)
            .unwrap_or("")
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(|l| match l.split_once("}: ") {
                Some((_, rest)) => rest.to_string(),
                None => l.to_string(),
            })
            .collect();
        if lines.is_empty() {
            return vec!["(no warning: pgward refused nothing)".to_string()];
        }
        lines[lines.len().saturating_sub(max)..].to_vec()
    }
}

/// Runs `future` with [`STEP_TIMEOUT`].
async fn step<T>(what: &str, future: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .map_err(|_| format!("{what}: no answer within {STEP_TIMEOUT:?}"))
}

async fn fingerprint(su: &Client) -> String {
    let rows = step(
        "fingerprint",
        su.simple_query("SELECT witness.fingerprint()"),
    )
    .await
    .and_then(|r| r.map_err(|e| describe_error(&e)))
    .unwrap_or_else(|e| panic!("cannot take the fingerprint: {e}"));
    first_value(&rows).unwrap_or_default()
}

/// The lines of two fingerprints that differ, for the failure message.
fn fingerprint_diff(before: &str, after: &str) -> String {
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let mut out = Vec::new();
    for line in &b {
        if !a.contains(line) {
            out.push(format!("- {line}"));
        }
    }
    for line in &a {
        if !b.contains(line) {
            out.push(format!("+ {line}"));
        }
    }
    out.join("; ")
}

/// The first column of the first row of a simple-query answer.
fn first_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
        _ => None,
    })
}

/// One value as the superuser, directly (for `@check`).
async fn su_value(su: &Client, sql: &str) -> Result<String, String> {
    let rows = step(sql, su.simple_query(sql))
        .await?
        .map_err(|e| describe_error(&e))?;
    first_value(&rows).ok_or_else(|| format!("{sql}: no row"))
}

// ===========================================================================
// Statements and their outcomes
// ===========================================================================

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Simple,
    Unnamed,
    Named,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Unnamed => "extended/unnamed",
            Protocol::Named => "extended/named",
        }
    }
}

/// How a statement failed.
#[derive(Debug, Clone)]
struct Failure {
    code: Option<String>,
    message: String,
    hint: Option<String>,
}

impl Failure {
    fn client(message: String) -> Failure {
        Failure {
            code: None,
            message,
            hint: None,
        }
    }

    fn from_pg(e: &tokio_postgres::Error) -> Failure {
        match e.as_db_error() {
            Some(db) => Failure {
                code: Some(db.code().code().to_string()),
                message: db.message().to_string(),
                hint: db.hint().map(str::to_string),
            },
            None => Failure::client(describe_error(e)),
        }
    }

    fn from_raw(e: &raw::DbError) -> Failure {
        Failure {
            code: Some(e.code.clone()),
            message: e.message.clone(),
            hint: e.hint.clone(),
        }
    }

    /// pgward's refusal: SQLSTATE 42501 and a message naming pgward.
    fn is_pgward_refusal(&self) -> bool {
        self.code.as_deref() == Some("42501") && self.message.contains("pgward")
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "[{}] {}",
            self.code.as_deref().unwrap_or("no SQLSTATE"),
            self.message
        );
        if let Some(hint) = &self.hint {
            text.push_str(&format!(" HINT: {hint}"));
        }
        text
    }
}

type Outcome = Result<String, Failure>;

/// Runs `sql` once with tokio-postgres over `protocol`. Ok carries a summary.
async fn run_statement(client: &Client, protocol: Protocol, sql: &str) -> Outcome {
    let timed_out = |e: String| Failure::client(e);
    match protocol {
        Protocol::Simple => {
            let messages = step("simple query", client.simple_query(sql))
                .await
                .map_err(timed_out)?
                .map_err(|e| Failure::from_pg(&e))?;
            let rows = messages
                .iter()
                .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
                .count();
            Ok(format!("{rows} rows"))
        }
        Protocol::Unnamed => {
            let rows = step("query_typed", client.query_typed(sql, &[]))
                .await
                .map_err(timed_out)?
                .map_err(|e| Failure::from_pg(&e))?;
            Ok(format!("{} rows", rows.len()))
        }
        Protocol::Named => {
            let statement = step("prepare", client.prepare(sql))
                .await
                .map_err(timed_out)?
                .map_err(|e| Failure::from_pg(&e))?;
            let rows = step("execute", client.query(&statement, &[]))
                .await
                .map_err(timed_out)?
                .map_err(|e| Failure::from_pg(&e))?;
            Ok(format!("prepared, then {} rows", rows.len()))
        }
    }
}

/// The session still answers `SELECT n` with n, over the same protocol.
async fn session_check(client: &Client, protocol: Protocol, n: i32) -> Result<(), String> {
    let sql = format!("SELECT {n}::int4");
    let got: i32 = match protocol {
        Protocol::Simple => {
            let rows = step(&sql, client.simple_query(&sql))
                .await?
                .map_err(|e| describe_error(&e))?;
            first_value(&rows)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{sql}: no value in {} messages", rows.len()))?
        }
        Protocol::Unnamed => step(&sql, client.query_typed(&sql, &[]))
            .await?
            .map_err(|e| describe_error(&e))?
            .first()
            .map(|r| r.get(0))
            .ok_or_else(|| format!("{sql}: no row"))?,
        Protocol::Named => {
            let st = step(&sql, client.prepare(&sql))
                .await?
                .map_err(|e| describe_error(&e))?;
            step(&sql, client.query(&st, &[]))
                .await?
                .map_err(|e| describe_error(&e))?
                .first()
                .map(|r| r.get(0))
                .ok_or_else(|| format!("{sql}: no row"))?
        }
    };
    if got == n {
        Ok(())
    } else {
        Err(format!("{sql} answered {got}: the session is out of sync"))
    }
}

// ===========================================================================
// Raw protocol client
// ===========================================================================

/// A minimal PostgreSQL wire-protocol client (SCRAM-SHA-256 or cleartext
/// auth, no TLS) for what tokio-postgres does not let a test control:
/// several statements before one Sync, exact command tags, COPY data,
/// arbitrary startup parameters.
mod raw {
    use bytes::BytesMut;
    use postgres_protocol::IsNull;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use postgres_protocol::message::backend::{ErrorResponseBody, Message};
    use postgres_protocol::message::frontend;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_postgres::fallible_iterator::FallibleIterator;

    use super::{HOST, STEP_TIMEOUT};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DbError {
        pub severity: String,
        pub code: String,
        pub message: String,
        pub hint: Option<String>,
    }

    /// What the server said, message by message.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Event {
        ParseComplete,
        BindComplete,
        CloseComplete,
        NoData,
        ParameterDescription,
        RowDescription,
        Row(Vec<Option<String>>),
        Complete(String),
        EmptyQuery,
        Error(DbError),
        CopyIn,
        CopyOut,
        CopyData(Vec<u8>),
        CopyDone,
        Ready(char),
        Other(String),
    }

    pub fn errors(events: &[Event]) -> Vec<&DbError> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Error(err) => Some(err),
                _ => None,
            })
            .collect()
    }

    pub fn tags(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Complete(tag) => Some(tag.as_str()),
                _ => None,
            })
            .collect()
    }

    fn io(e: impl std::fmt::Display) -> String {
        e.to_string()
    }

    fn db_error(body: &ErrorResponseBody) -> DbError {
        let mut err = DbError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            hint: None,
        };
        let mut fields = body.fields();
        while let Ok(Some(f)) = fields.next() {
            let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
            match f.type_() {
                b'V' => err.severity = value,
                b'S' if err.severity.is_empty() => err.severity = value,
                b'C' => err.code = value,
                b'M' => err.message = value,
                b'H' => err.hint = Some(value),
                _ => {}
            }
        }
        err
    }

    pub struct RawClient {
        stream: TcpStream,
        buf: BytesMut,
        /// SQLSTATEs of the NoticeResponses received (not in the events).
        pub notices: Vec<String>,
        /// FunctionCallResponses received (not in the events).
        pub function_results: usize,
    }

    impl RawClient {
        /// Connects and authenticates with these startup parameters.
        pub async fn connect(
            port: u16,
            params: &[(&str, &str)],
            password: &str,
        ) -> Result<RawClient, String> {
            let stream = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect((HOST, port)))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(io)?;
            let mut client = RawClient {
                stream,
                buf: BytesMut::new(),
                notices: Vec::new(),
                function_results: 0,
            };
            let mut out = BytesMut::new();
            frontend::startup_message(params.iter().copied(), &mut out).map_err(io)?;
            client.send(&out).await?;
            let mut scram: Option<ScramSha256> = None;
            loop {
                out.clear();
                match client.read().await? {
                    Message::AuthenticationOk => {}
                    Message::AuthenticationCleartextPassword => {
                        frontend::password_message(password.as_bytes(), &mut out).map_err(io)?;
                        client.send(&out).await?;
                    }
                    Message::AuthenticationSasl(_) => {
                        let s =
                            ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                            .map_err(io)?;
                        client.send(&out).await?;
                        scram = Some(s);
                    }
                    Message::AuthenticationSaslContinue(body) => {
                        let s = scram.as_mut().ok_or("SASL continue without SASL")?;
                        s.update(body.data()).map_err(io)?;
                        frontend::sasl_response(s.message(), &mut out).map_err(io)?;
                        client.send(&out).await?;
                    }
                    Message::AuthenticationSaslFinal(body) => {
                        let s = scram.as_mut().ok_or("SASL final without SASL")?;
                        s.finish(body.data()).map_err(io)?;
                    }
                    Message::ErrorResponse(body) => {
                        let e = db_error(&body);
                        return Err(format!(
                            "connection refused: {} [{}] {}",
                            e.severity, e.code, e.message
                        ));
                    }
                    Message::ReadyForQuery(_) => return Ok(client),
                    _ => {}
                }
            }
        }

        pub async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
            tokio::time::timeout(STEP_TIMEOUT, self.stream.write_all(bytes))
                .await
                .map_err(|_| "write timed out".to_string())?
                .map_err(io)
        }

        async fn read(&mut self) -> Result<Message, String> {
            loop {
                // FunctionCallResponse, which postgres-protocol does not parse.
                if self.buf.len() >= 5 && self.buf[0] == b'V' {
                    let len =
                        i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                    let whole = 1 + usize::try_from(len).map_err(io)?;
                    if self.buf.len() >= whole {
                        let _ = self.buf.split_to(whole);
                        self.function_results += 1;
                        continue;
                    }
                } else if let Some(m) = Message::parse(&mut self.buf).map_err(io)? {
                    return Ok(m);
                }
                let n = tokio::time::timeout(STEP_TIMEOUT, self.stream.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| format!("no answer within {STEP_TIMEOUT:?}"))?
                    .map_err(io)?;
                if n == 0 {
                    return Err("the connection was closed".to_string());
                }
            }
        }

        /// Reads until `readies` ReadyForQuery messages have arrived. A
        /// CopyInResponse is answered with `copy_in` (CopyData + CopyDone,
        /// then Sync when `sync_after_copy`), or with CopyFail.
        pub async fn collect(
            &mut self,
            readies: usize,
            copy_in: Option<&[u8]>,
            sync_after_copy: bool,
        ) -> Result<Vec<Event>, String> {
            let mut events = Vec::new();
            let mut seen = 0;
            while seen < readies {
                let event = match self.read().await? {
                    Message::ParseComplete => Event::ParseComplete,
                    Message::BindComplete => Event::BindComplete,
                    Message::CloseComplete => Event::CloseComplete,
                    Message::NoData => Event::NoData,
                    Message::ParameterDescription(_) => Event::ParameterDescription,
                    Message::RowDescription(_) => Event::RowDescription,
                    Message::DataRow(body) => {
                        let mut values = Vec::new();
                        let mut ranges = body.ranges();
                        while let Ok(Some(range)) = ranges.next() {
                            values.push(
                                range.map(|r| {
                                    String::from_utf8_lossy(&body.buffer()[r]).into_owned()
                                }),
                            );
                        }
                        Event::Row(values)
                    }
                    Message::CommandComplete(body) => {
                        Event::Complete(body.tag().map_err(io)?.to_string())
                    }
                    Message::EmptyQueryResponse => Event::EmptyQuery,
                    Message::ErrorResponse(body) => Event::Error(db_error(&body)),
                    Message::CopyInResponse(_) => {
                        let mut out = BytesMut::new();
                        match copy_in {
                            Some(data) => {
                                frontend::CopyData::new(data).map_err(io)?.write(&mut out);
                                frontend::copy_done(&mut out);
                            }
                            None => frontend::copy_fail("no data", &mut out).map_err(io)?,
                        }
                        if sync_after_copy {
                            frontend::sync(&mut out);
                        }
                        self.send(&out).await?;
                        Event::CopyIn
                    }
                    Message::CopyOutResponse(_) => Event::CopyOut,
                    Message::CopyData(body) => Event::CopyData(body.data().to_vec()),
                    Message::CopyDone => Event::CopyDone,
                    Message::ReadyForQuery(body) => {
                        seen += 1;
                        Event::Ready(body.status() as char)
                    }
                    Message::NoticeResponse(body) => {
                        let mut fields = body.fields();
                        while let Ok(Some(f)) = fields.next() {
                            if f.type_() == b'C' {
                                self.notices
                                    .push(String::from_utf8_lossy(f.value_bytes()).into_owned());
                            }
                        }
                        continue;
                    }
                    Message::ParameterStatus(_) | Message::NotificationResponse(_) => continue,
                    _ => Event::Other("unexpected message".to_string()),
                };
                events.push(event);
            }
            Ok(events)
        }

        /// One simple Query and everything up to its ReadyForQuery.
        pub async fn simple(&mut self, sql: &str) -> Result<Vec<Event>, String> {
            let mut out = BytesMut::new();
            query(sql, &mut out);
            self.send(&out).await?;
            self.collect(1, None, false).await
        }
    }

    // Message encoders (frontend messages into a buffer).

    pub fn query(sql: &str, out: &mut BytesMut) {
        frontend::query(sql, out).expect("encode Query");
    }

    pub fn parse(name: &str, sql: &str, out: &mut BytesMut) {
        frontend::parse(name, sql, std::iter::empty(), out).expect("encode Parse");
    }

    pub fn bind(portal: &str, statement: &str, out: &mut BytesMut) {
        let r = frontend::bind(
            portal,
            statement,
            std::iter::empty::<i16>(),
            std::iter::empty::<Option<&[u8]>>(),
            |_, _| Ok(IsNull::No),
            std::iter::empty::<i16>(),
            out,
        );
        assert!(r.is_ok(), "encode Bind");
    }

    pub fn describe_statement(name: &str, out: &mut BytesMut) {
        frontend::describe(b'S', name, out).expect("encode Describe");
    }

    pub fn describe_portal(name: &str, out: &mut BytesMut) {
        frontend::describe(b'P', name, out).expect("encode Describe");
    }

    pub fn execute(portal: &str, out: &mut BytesMut) {
        frontend::execute(portal, 0, out).expect("encode Execute");
    }

    pub fn close_statement(name: &str, out: &mut BytesMut) {
        frontend::close(b'S', name, out).expect("encode Close");
    }

    pub fn flush(out: &mut BytesMut) {
        frontend::flush(out);
    }

    pub fn sync(out: &mut BytesMut) {
        frontend::sync(out);
    }

    /// A FunctionCall message (the protocol's `F`, which postgres-protocol
    /// cannot encode) of pg_catalog.now(): no formats, no arguments, text
    /// result.
    pub fn call_now(out: &mut BytesMut) {
        out.extend_from_slice(b"F");
        out.extend_from_slice(&14i32.to_be_bytes());
        out.extend_from_slice(&1299u32.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }

    /// Parse/Bind/Describe/Execute of `sql` on the unnamed statement (no Sync).
    pub fn extended(sql: &str, out: &mut BytesMut) {
        parse("", sql, out);
        bind("", "", out);
        describe_portal("", out);
        execute("", out);
    }
}

use raw::Event;

/// Runs a COPY entry with a fresh raw session over `protocol`, then checks
/// that session with `SELECT n`.
async fn run_copy(
    fx: &Fixture,
    protocol: Protocol,
    sql: &str,
    mode: &CopyMode,
    n: i32,
) -> (Outcome, Result<(), String>) {
    let mut client = match fx.raw_worker(&[]).await {
        Ok(c) => c,
        Err(e) => return (Err(Failure::client(e)), Err("no session".into())),
    };
    let data = match mode {
        CopyMode::In(data) => Some(data.as_slice()),
        CopyMode::Out => None,
    };
    let copy_in = data.is_some();
    let mut out = bytes::BytesMut::new();
    let events = match protocol {
        Protocol::Simple => {
            raw::query(sql, &mut out);
            match client.send(&out).await {
                Ok(()) => client.collect(1, data, false).await,
                Err(e) => Err(e),
            }
        }
        Protocol::Unnamed => {
            raw::extended(sql, &mut out);
            // A Sync sent during COPY IN would be ignored: send it after the data.
            if copy_in {
                raw::flush(&mut out);
            } else {
                raw::sync(&mut out);
            }
            match client.send(&out).await {
                Ok(()) => client.collect(1, data, copy_in).await,
                Err(e) => Err(e),
            }
        }
        Protocol::Named => {
            raw::parse("corpus_copy", sql, &mut out);
            raw::describe_statement("corpus_copy", &mut out);
            raw::sync(&mut out);
            let prepared = match client.send(&out).await {
                Ok(()) => client.collect(1, None, false).await,
                Err(e) => Err(e),
            };
            match prepared {
                Ok(events) if raw::errors(&events).is_empty() => {
                    out.clear();
                    raw::bind("", "corpus_copy", &mut out);
                    raw::execute("", &mut out);
                    if copy_in {
                        raw::flush(&mut out);
                    } else {
                        raw::sync(&mut out);
                    }
                    let run = match client.send(&out).await {
                        Ok(()) => client.collect(1, data, copy_in).await,
                        Err(e) => Err(e),
                    };
                    out.clear();
                    raw::close_statement("corpus_copy", &mut out);
                    raw::sync(&mut out);
                    let closed = match client.send(&out).await {
                        Ok(()) => client.collect(1, None, false).await,
                        Err(e) => Err(e),
                    };
                    match (run, closed) {
                        (Ok(mut a), Ok(b)) => {
                            a.extend(b);
                            Ok(a)
                        }
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    }
                }
                other => other,
            }
        }
    };
    let outcome = match events {
        Err(e) => Err(Failure::client(e)),
        Ok(events) => match raw::errors(&events).first() {
            Some(err) => Err(Failure::from_raw(err)),
            None => {
                let copied = events
                    .iter()
                    .any(|e| matches!(e, Event::CopyIn | Event::CopyOut));
                let bytes: usize = events
                    .iter()
                    .map(|e| match e {
                        Event::CopyData(d) => d.len(),
                        _ => 0,
                    })
                    .sum();
                if copied {
                    Ok(format!(
                        "{} ({bytes} bytes out)",
                        raw::tags(&events).join(", ")
                    ))
                } else {
                    Err(Failure::client(format!("no COPY happened: {events:?}")))
                }
            }
        },
    };
    let check = match client.simple(&format!("SELECT {n}::int4")).await {
        Ok(events) => {
            let value = events.iter().find_map(|e| match e {
                Event::Row(v) => v.first().cloned().flatten(),
                _ => None,
            });
            if value == Some(n.to_string()) {
                Ok(())
            } else {
                Err(format!(
                    "SELECT {n} answered {events:?}: the session is out of sync"
                ))
            }
        }
        Err(e) => Err(e),
    };
    (outcome, check)
}

// ===========================================================================
// The corpus runner
// ===========================================================================

/// Runs every corpus entry through pgward over `protocol`, in its own
/// database, and fails with the list of every entry that did not behave.
async fn run_corpus(protocol: Protocol, db_name: &str) {
    let corpus = load_corpus();
    let fx = Fixture::new(db_name).await;
    let su = fx.superuser().await;
    let mut main = fx.worker().await;
    let mut problems_total: Vec<String> = Vec::new();
    let mut skipped = Vec::new();
    let (mut refused, mut allowed) = (0, 0);

    for (index, e) in corpus.iter().enumerate() {
        if protocol != Protocol::Simple && e.simple_only.is_some() {
            skipped.push(e.label.as_str());
            continue;
        }
        let n = 1000 + index as i32;
        let sql = e.sql.replace("{db}", &fx.db);
        let log_mark = fx.proxy.log().len();
        let mut problems: Vec<String> = Vec::new();

        for s in &e.su_setup {
            if let Err(err) = su.batch_execute(s).await {
                problems.push(format!("@su-setup {s:?} failed: {}", describe_error(&err)));
            }
        }
        let before = match e.expect {
            Expect::Refuse => Some(fingerprint(&su).await),
            Expect::Allow => None,
        };
        let check_before = match &e.check {
            Some(c) => Some(su_value(&su, c).await),
            None => None,
        };

        let (outcome, session) = if let Some(mode) = &e.copy {
            run_copy(&fx, protocol, &sql, mode, n).await
        } else {
            let fresh = if e.setup.is_empty() {
                None
            } else {
                Some(fx.worker().await)
            };
            let client = fresh.as_ref().unwrap_or(&main);
            let mut setup_ok = true;
            for s in &e.setup {
                match step(s, client.batch_execute(s)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        setup_ok = false;
                        problems.push(format!("@setup {s:?} failed: {}", describe_error(&err)));
                    }
                    Err(err) => {
                        setup_ok = false;
                        problems.push(err);
                    }
                }
            }
            let outcome = if setup_ok {
                run_statement(client, protocol, &sql).await
            } else {
                Err(Failure::client("not run: the setup failed".into()))
            };
            for s in &e.teardown {
                match step(s, client.batch_execute(s)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        problems.push(format!("@teardown {s:?} failed: {}", describe_error(&err)));
                    }
                    Err(err) => problems.push(err),
                }
            }
            let session = session_check(client, protocol, n).await;
            if session.is_err() && fresh.is_none() {
                // Keep going with a sound session; the failure is recorded.
                main = fx.worker().await;
            }
            (outcome, session)
        };

        match (e.expect, &outcome) {
            (Expect::Refuse, Err(f)) if f.is_pgward_refusal() => refused += 1,
            (Expect::Refuse, Err(f)) => problems.push(format!(
                "expected pgward's refusal (42501, message naming pgward), got an error from elsewhere: {}",
                f.describe()
            )),
            (Expect::Refuse, Ok(summary)) => {
                problems.push(format!("expected pgward's refusal, but it RAN ({summary})"))
            }
            (Expect::Allow, Ok(_)) => allowed += 1,
            (Expect::Allow, Err(f)) => {
                problems.push(format!("expected success, got: {}", f.describe()))
            }
        }
        if let Err(err) = session {
            problems.push(format!("session unusable afterwards: {err}"));
        }
        if let Some(before) = before {
            let after = fingerprint(&su).await;
            if after != before {
                problems.push(format!(
                    "the database CHANGED: {}",
                    fingerprint_diff(&before, &after)
                ));
                // Put the seed rows back, so that later entries still have
                // something to destroy and their witness stays meaningful.
                fx.heal(&su).await;
            }
        }
        if let (Some(c), Some(check_before)) = (&e.check, check_before) {
            let check_after = su_value(&su, c).await;
            match (check_before, check_after) {
                (Ok(b), Ok(a)) if a == b => problems.push(format!(
                    "the allowed write did not happen: {c:?} stayed {b:?}"
                )),
                (Ok(_), Ok(_)) => {}
                (b, a) => problems.push(format!("@check {c:?} failed: before {b:?}, after {a:?}")),
            }
        }

        if !problems.is_empty() {
            let mut report = format!(
                "[{}] {} {} (tests/corpus/worker.txt:{})\n    sql: {:?}\n",
                protocol.name(),
                match e.expect {
                    Expect::Refuse => "REFUSE",
                    Expect::Allow => "ALLOW",
                },
                e.label,
                e.line,
                sql
            );
            for p in &problems {
                report.push_str(&format!("    - {p}\n"));
            }
            for line in fx.log_since(log_mark, 4) {
                report.push_str(&format!("    pgward log: {line}\n"));
            }
            problems_total.push(report);
        }
    }

    eprintln!(
        "[{}] {} entries: {refused} refused as expected, {allowed} allowed as expected, {} failed, {} skipped (simple-only: {})",
        protocol.name(),
        corpus.len(),
        problems_total.len(),
        skipped.len(),
        skipped.join(", ")
    );
    assert!(
        problems_total.is_empty(),
        "{} of {} corpus entries misbehaved over the {} protocol:\n{}",
        problems_total.len(),
        corpus.len() - skipped.len(),
        protocol.name(),
        problems_total.join("")
    );
}

// ===========================================================================
// Tests: the corpus
// ===========================================================================

#[test]
fn corpus_is_well_formed_and_covers_issue_3() {
    let corpus = load_corpus();
    let refuse = corpus.iter().filter(|e| e.expect == Expect::Refuse).count();
    let allow = corpus.len() - refuse;
    assert!(
        corpus.len() >= MIN_CORPUS_ENTRIES,
        "the corpus has {} entries, issue #3 asks for at least {MIN_CORPUS_ENTRIES}",
        corpus.len()
    );
    assert!(
        refuse >= 100 && allow >= 50,
        "{refuse} REFUSE, {allow} ALLOW"
    );
    let mut labels: Vec<&str> = corpus.iter().map(|e| e.label.as_str()).collect();
    labels.sort_unstable();
    let before = labels.len();
    labels.dedup();
    assert_eq!(before, labels.len(), "corpus labels must be unique");
    // Every category issue #3 lists is present.
    for category in [
        "insert/",
        "update/",
        "delete/",
        "merge/",
        "truncate/",
        "copy/",
        "select-into/",
        "ctas/",
        "cte/",
        "explain-analyze/",
        "prepare/",
        "ddl/",
        "ident/",
        "path/",
        "multi/",
        "opaque/",
        "txn/",
        "read/",
        "rpc/",
        "show/",
        "set/",
        "explain/",
        "write/",
    ] {
        assert!(
            corpus.iter().any(|e| e.label.starts_with(category)),
            "no corpus entry for {category}"
        );
    }
    let sample = corpus.iter().filter(|e| e.superuser).count();
    assert!(
        sample >= 10,
        "only {sample} entries for the superuser sample"
    );
    for e in &corpus {
        assert!(!e.sql.trim().is_empty(), "{}: empty SQL", e.label);
    }
}

#[tokio::test]
async fn corpus_through_simple_query_protocol() {
    run_corpus(Protocol::Simple, "enf_corpus_simple").await;
}

#[tokio::test]
async fn corpus_through_extended_protocol_unnamed_statement() {
    run_corpus(Protocol::Unnamed, "enf_corpus_unnamed").await;
}

#[tokio::test]
async fn corpus_through_extended_protocol_named_statement() {
    run_corpus(Protocol::Named, "enf_corpus_named").await;
}

// ===========================================================================
// Tests: pipelining, transactions
// ===========================================================================

/// Whether the superuser sees a scratch row with this note.
async fn scratch_has(su: &Client, note: &str) -> bool {
    su.query_one(
        "SELECT count(*) FROM public.scratch WHERE note = $1",
        &[&note],
    )
    .await
    .expect("count scratch rows")
    .get::<_, i64>(0)
        > 0
}

fn expect_refusal(what: &str, result: Result<impl std::fmt::Debug, tokio_postgres::Error>) {
    match result {
        Err(e) => {
            let f = Failure::from_pg(&e);
            assert!(
                f.is_pgward_refusal(),
                "{what}: expected pgward's refusal, got {}",
                f.describe()
            );
        }
        Ok(v) => panic!("{what}: expected pgward's refusal, but it ran: {v:?}"),
    }
}

fn raw_refusal(events: &[Event]) -> bool {
    raw::errors(events)
        .iter()
        .any(|e| e.code == "42501" && e.message.contains("pgward"))
}

#[tokio::test]
async fn refusals_in_pipelined_batches_keep_the_session_in_sync() {
    let fx = Fixture::new("enf_pipeline").await;
    let su = fx.superuser().await;
    let before = fingerprint(&su).await;
    let worker = fx.worker().await;

    // tokio-postgres pipelines concurrent requests: each query_typed is
    // Parse/Bind/Describe/Execute/Sync, all written before any answer.
    let (a, b, c, d) = tokio::join!(
        worker.query_typed(
            "INSERT INTO public.scratch (note) VALUES ('pipe-1') RETURNING id",
            &[]
        ),
        worker.query_typed("DELETE FROM ops.job_queue RETURNING id", &[]),
        worker.query_typed(
            "INSERT INTO public.scratch (note) VALUES ('pipe-3') RETURNING id",
            &[]
        ),
        worker.query_typed("SELECT count(*) FROM ops.job_queue", &[]),
    );
    assert_eq!(a.expect("allowed insert before the refusal").len(), 1);
    expect_refusal("pipelined DELETE (unnamed)", b);
    assert_eq!(c.expect("allowed insert after the refusal").len(), 1);
    let jobs: i64 = d.expect("read after the refusal")[0].get(0);
    assert!(jobs >= 1, "the queue must still hold its seed job");

    // Named statements: Parse/Describe/Sync of each, pipelined.
    let (a, b, c) = tokio::join!(
        worker.query(
            "INSERT INTO public.scratch (note) VALUES ('pipe-named') RETURNING id",
            &[]
        ),
        worker.query("UPDATE public.judgments SET status = 'closed'", &[]),
        worker.query("SELECT 7::int4", &[]),
    );
    assert_eq!(a.expect("allowed named insert").len(), 1);
    expect_refusal("pipelined UPDATE (named)", b);
    assert_eq!(
        c.expect("named select after the refusal")[0].get::<_, i32>(0),
        7
    );

    // Simple queries, pipelined.
    let (a, b, c) = tokio::join!(
        worker.simple_query("INSERT INTO public.scratch (note) VALUES ('pipe-simple')"),
        worker.simple_query("TRUNCATE ops.worker_heartbeats"),
        worker.simple_query("SELECT 8"),
    );
    a.expect("allowed simple insert");
    expect_refusal("pipelined TRUNCATE (simple)", b);
    assert_eq!(
        first_value(&c.expect("simple select")).as_deref(),
        Some("8")
    );
    for note in ["pipe-1", "pipe-3", "pipe-named", "pipe-simple"] {
        assert!(
            scratch_has(&su, note).await,
            "allowed pipelined write {note} is missing"
        );
    }
    session_check(&worker, Protocol::Unnamed, 9).await.unwrap();

    // Raw protocol: several statements before ONE Sync. The refusal aborts
    // that implicit transaction (the insert before it is rolled back, the
    // one after it is skipped), exactly as if PostgreSQL had refused.
    let mut raw = fx.raw_worker(&[]).await.expect("raw session");
    let mut out = bytes::BytesMut::new();
    raw::extended(
        "INSERT INTO public.scratch (note) VALUES ('batch-a')",
        &mut out,
    );
    raw::extended("DELETE FROM ops.job_queue", &mut out);
    raw::extended(
        "INSERT INTO public.scratch (note) VALUES ('batch-b')",
        &mut out,
    );
    raw::sync(&mut out);
    raw::extended(
        "INSERT INTO public.scratch (note) VALUES ('batch-c')",
        &mut out,
    );
    raw::sync(&mut out);
    raw::parse(
        "refused_named",
        "UPDATE ops.job_queue SET status = 'failed'",
        &mut out,
    );
    raw::sync(&mut out);
    raw::bind("", "refused_named", &mut out);
    raw::execute("", &mut out);
    raw::sync(&mut out);
    raw::query("SELECT 42", &mut out);
    raw.send(&out).await.unwrap();
    let events = raw.collect(5, None, false).await.unwrap();
    let segments: Vec<&[Event]> = events
        .split_inclusive(|e| matches!(e, Event::Ready(_)))
        .collect();
    assert_eq!(segments.len(), 5, "{events:?}");
    // 1: insert ran, DELETE refused, rest of the batch skipped.
    assert_eq!(
        raw::tags(segments[0]),
        vec!["INSERT 0 1"],
        "{:?}",
        segments[0]
    );
    assert!(raw_refusal(segments[0]), "{:?}", segments[0]);
    assert_eq!(raw::errors(segments[0]).len(), 1, "{:?}", segments[0]);
    assert_eq!(segments[0].last(), Some(&Event::Ready('I')));
    // 2: the next batch runs normally.
    assert_eq!(
        raw::tags(segments[1]),
        vec!["INSERT 0 1"],
        "{:?}",
        segments[1]
    );
    assert!(raw::errors(segments[1]).is_empty(), "{:?}", segments[1]);
    // 3: a refused Parse into a named statement...
    assert!(raw_refusal(segments[2]), "{:?}", segments[2]);
    // 4: ...created nothing on the server.
    let missing = raw::errors(segments[3]);
    assert_eq!(missing.len(), 1, "{:?}", segments[3]);
    assert_eq!(missing[0].code, "26000", "{:?}", segments[3]);
    // 5: in sync.
    assert!(
        segments[4].contains(&Event::Row(vec![Some("42".into())])),
        "{:?}",
        segments[4]
    );

    // The FunctionCall message (no SQL to inspect) is refused, in sync.
    out.clear();
    raw::call_now(&mut out);
    raw::query("SELECT 43", &mut out);
    raw.send(&out).await.unwrap();
    let events = raw.collect(2, None, false).await.unwrap();
    assert!(raw_refusal(&events), "FunctionCall: {events:?}");
    assert!(
        events.contains(&Event::Row(vec![Some("43".into())])),
        "{events:?}"
    );

    assert!(
        !scratch_has(&su, "batch-a").await,
        "batch-a ran in the refused batch and was kept"
    );
    assert!(
        !scratch_has(&su, "batch-b").await,
        "batch-b came after the refusal and ran"
    );
    assert!(
        scratch_has(&su, "batch-c").await,
        "batch-c, in its own batch, is missing"
    );

    // Nothing protected changed through all of this.
    let after = fingerprint(&su).await;
    assert_eq!(
        without_scratch(&before),
        without_scratch(&after),
        "something besides public.scratch changed: {}",
        fingerprint_diff(&before, &after)
    );
}

/// A fingerprint minus the line of public.scratch, which allowed writes change.
fn without_scratch(fingerprint: &str) -> String {
    fingerprint
        .lines()
        .filter(|l| !l.starts_with("data scratch "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_refused_statement_fails_its_transaction_and_commit_rolls_back() {
    let fx = Fixture::new("enf_transaction").await;
    let su = fx.superuser().await;
    let before = fingerprint(&su).await;

    // tokio-postgres: the allowed write is gone after COMMIT.
    let mut worker = fx.worker().await;
    let tx = worker.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO public.scratch (note) VALUES ('tx-allowed')",
        &[],
    )
    .await
    .expect("allowed insert in the transaction");
    expect_refusal(
        "DELETE in a transaction",
        tx.execute("DELETE FROM ops.job_queue", &[]).await,
    );
    let after_refusal = tx.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(
        sqlstate(&after_refusal),
        Some("25P02"),
        "the transaction must be failed, as after a server-side error"
    );
    tx.commit()
        .await
        .expect("COMMIT of a failed transaction is answered, not refused");
    assert!(
        !scratch_has(&su, "tx-allowed").await,
        "the allowed write survived the failed transaction"
    );
    session_check(&worker, Protocol::Simple, 1).await.unwrap();

    // Raw protocol: exact tags and transaction states.
    let mut raw = fx.raw_worker(&[]).await.expect("raw session");
    let begin = raw.simple("BEGIN").await.unwrap();
    assert_eq!(raw::tags(&begin), vec!["BEGIN"]);
    assert_eq!(begin.last(), Some(&Event::Ready('T')));
    let insert = raw
        .simple("INSERT INTO public.scratch (note) VALUES ('raw-allowed')")
        .await
        .unwrap();
    assert_eq!(raw::tags(&insert), vec!["INSERT 0 1"], "{insert:?}");
    let refused = raw.simple("DELETE FROM ops.job_queue").await.unwrap();
    assert!(raw_refusal(&refused), "{refused:?}");
    assert_eq!(refused.last(), Some(&Event::Ready('E')), "{refused:?}");
    let commit = raw.simple("COMMIT").await.unwrap();
    assert_eq!(
        raw::tags(&commit),
        vec!["ROLLBACK"],
        "COMMIT of the failed transaction: {commit:?}"
    );
    assert_eq!(commit.last(), Some(&Event::Ready('I')));
    assert!(
        !scratch_has(&su, "raw-allowed").await,
        "the allowed write survived the failed transaction"
    );

    // The same with the refusal in an extended-protocol batch.
    raw.simple("BEGIN").await.unwrap();
    raw.simple("INSERT INTO public.scratch (note) VALUES ('raw-ext-allowed')")
        .await
        .unwrap();
    let mut out = bytes::BytesMut::new();
    raw::extended("UPDATE public.judgments SET status = 'closed'", &mut out);
    raw::sync(&mut out);
    raw.send(&out).await.unwrap();
    let refused = raw.collect(1, None, false).await.unwrap();
    assert!(raw_refusal(&refused), "{refused:?}");
    assert_eq!(refused.last(), Some(&Event::Ready('E')), "{refused:?}");
    let commit = raw.simple("COMMIT").await.unwrap();
    assert_eq!(raw::tags(&commit), vec!["ROLLBACK"], "{commit:?}");
    assert!(!scratch_has(&su, "raw-ext-allowed").await);
    let again = raw.simple("SELECT 5").await.unwrap();
    assert!(
        again.contains(&Event::Row(vec![Some("5".into())])),
        "{again:?}"
    );

    assert_eq!(fingerprint(&su).await, before, "the database changed");
}

// ===========================================================================
// Tests: the policy is per class
// ===========================================================================

#[tokio::test]
async fn the_unrestricted_superuser_runs_the_refused_sample_through_pgward() {
    let corpus = load_corpus();
    let sample: Vec<&Entry> = corpus.iter().filter(|e| e.superuser).collect();
    let fx = Fixture::new("enf_superuser").await;
    let su = fx.proxied_superuser().await;
    let mut problems = Vec::new();
    for e in &sample {
        let sql = e.sql.replace("{db}", &fx.db);
        for protocol in [Protocol::Simple, Protocol::Unnamed] {
            // Inside a transaction that is rolled back: each statement sees
            // the pristine database, and must change it.
            su.batch_execute("BEGIN").await.unwrap();
            let before = su
                .query_one("SELECT witness.fingerprint()", &[])
                .await
                .unwrap()
                .get::<_, String>(0);
            let outcome = run_statement(&su, protocol, &sql).await;
            let after = su.query_one("SELECT witness.fingerprint()", &[]).await;
            su.batch_execute("ROLLBACK").await.unwrap();
            match (outcome, after) {
                (Ok(_), Ok(after)) if after.get::<_, String>(0) != before => {}
                (Ok(_), Ok(_)) => problems.push(format!(
                    "[{}] {}: ran but changed nothing",
                    protocol.name(),
                    e.label
                )),
                (Err(f), _) => problems.push(format!(
                    "[{}] {}: {}",
                    protocol.name(),
                    e.label,
                    f.describe()
                )),
                (Ok(_), Err(err)) => problems.push(format!(
                    "[{}] {}: {}",
                    protocol.name(),
                    e.label,
                    describe_error(&err)
                )),
            }
        }
    }
    assert!(sample.len() >= 10, "sample of {}", sample.len());
    assert!(
        problems.is_empty(),
        "the superuser could not run the sample:\n{}",
        problems.join("\n")
    );
}

// ===========================================================================
// Tests: psql
// ===========================================================================

/// psql through pgward as the worker (tenant acme), no TLS, no psqlrc.
async fn psql_as_worker(fx: &Fixture, args: &[&str]) -> std::process::Output {
    let conninfo = format!(
        "host={HOST} port={} dbname={} user={WORKER_USER} sslmode=disable gssencmode=disable connect_timeout=10 options='{TENANT_OPTIONS}'",
        fx.proxy.port(),
        fx.db
    );
    let mut cmd = tokio::process::Command::new(fx.pg.bin_dir().join("psql"));
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    cmd.arg("-X")
        .arg("-d")
        .arg(conninfo)
        .args(args)
        .env("PGPASSWORD", WORKER_PASSWORD)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("psql did not finish within 30 s")
        .expect("cannot run psql")
}

#[tokio::test]
async fn psql_as_the_worker_shows_the_refusal_with_its_hint() {
    let fx = Fixture::new("enf_psql").await;
    let su = fx.superuser().await;
    let before = fingerprint(&su).await;

    let out = psql_as_worker(
        &fx,
        &[
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "DELETE FROM ops.job_queue",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "psql succeeded: {stderr}");
    for needle in [
        "ERROR:  42501: pgward: write on ops.job_queue denied for dragonfly_app (class worker) by rule protected-schemas",
        "HINT:  write through the approved SECURITY DEFINER functions, e.g. SELECT ops.queue_job(...)",
    ] {
        assert!(
            stderr.contains(needle),
            "psql's stderr lacks {needle:?}:\n{stderr}"
        );
    }

    let out = psql_as_worker(
        &fx,
        &["-A", "-t", "-c", "SELECT count(*) FROM ops.job_queue"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = su_value(&su, "SELECT count(*) FROM ops.job_queue")
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);

    // One -c per statement: the COMMIT of the failed transaction says ROLLBACK.
    let out = psql_as_worker(
        &fx,
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO public.scratch (note) VALUES ('psql-txn')",
            "-c",
            "DELETE FROM ops.job_queue",
            "-c",
            "COMMIT",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        tags,
        vec!["BEGIN", "INSERT 0 1", "ROLLBACK"],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!scratch_has(&su, "psql-txn").await);

    assert_eq!(fingerprint(&su).await, before, "the database changed");
}

// ===========================================================================
// Tests: ways around the per-statement view
// ===========================================================================

/// Rows of ops.job_queue as the superuser sees them (count and md5).
async fn job_queue_state(su: &Client) -> String {
    su_value(
        su,
        "SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '-') FROM ops.job_queue t",
    )
    .await
    .expect("job_queue state")
}

/// A statement the worker prepares while `job_queue` is its own temporary
/// table must not delete from ops.job_queue when executed after the
/// search_path changed: PostgreSQL re-parses a prepared statement with the
/// current search_path when it differs from the one it was planned with.
/// (The SQL PREPARE/EXECUTE form of this is in the corpus.)
#[tokio::test]
async fn a_named_prepared_statement_cannot_follow_a_later_search_path() {
    let fx = Fixture::new("enf_named_path").await;
    let su = fx.superuser().await;
    let before = fingerprint(&su).await;
    let worker = fx.worker().await;
    worker
        .batch_execute("CREATE TEMP TABLE job_queue (id uuid)")
        .await
        .expect("a temporary table is the worker's own");
    let statement = worker
        .prepare("DELETE FROM job_queue")
        .await
        .expect("deleting from its own temporary table is allowed");
    worker
        .batch_execute("DROP TABLE pg_temp.job_queue")
        .await
        .unwrap();
    worker.batch_execute("SET search_path = ops").await.unwrap();
    let outcome = step("execute", worker.execute(&statement, &[]))
        .await
        .unwrap();
    let after = fingerprint(&fx.superuser().await).await;
    session_check(&worker, Protocol::Named, 3).await.unwrap();
    assert!(
        after == before,
        "Bind/Execute of a statement prepared while job_queue was a temporary table, run after \
         SET search_path = ops, changed the database ({outcome:?}): {}",
        fingerprint_diff(&before, &after)
    );
    match outcome {
        Err(e) => assert!(
            Failure::from_pg(&e).is_pgward_refusal(),
            "{}",
            describe_error(&e)
        ),
        Ok(n) => panic!("the statement ran ({n} rows) without changing anything?"),
    }
}

/// PostgreSQL has one namespace for SQL `PREPARE` and protocol Parse, and
/// keeps the first definition of a name when a second one is refused (42P05),
/// or when a DEALLOCATE is refused in a failed block. pgward cannot see which
/// definition the server holds, so a name never gets a second meaning, and a
/// Bind of a name pgward did not see Parsed is refused. Each sequence below
/// deleted `ops.job_queue` before: a DELETE prepared while `job_queue` was the
/// worker's temporary table, then made harmless in pgward's eyes only.
#[tokio::test]
async fn prepared_statement_names_cannot_change_meaning() {
    let fx = Fixture::new("enf_names").await;
    let su = fx.superuser().await;
    let before = fingerprint(&su).await;
    let mut raw = fx.raw_worker(&[]).await.expect("raw session");
    let ok = |what: &str, events: &[Event]| {
        assert!(raw::errors(events).is_empty(), "{what}: {events:?}");
    };
    let refused = |what: &str, events: &[Event]| {
        assert!(
            raw_refusal(events),
            "{what} was not refused by pgward: {events:?}"
        );
    };

    let events = raw
        .simple("CREATE TEMP TABLE job_queue (id uuid)")
        .await
        .unwrap();
    ok("temporary table", &events);
    // Prepared under each name while job_queue is the temporary table.
    for sql in [
        "PREPARE by_sql AS DELETE FROM job_queue",
        "PREPARE redefined AS DELETE FROM job_queue",
        "PREPARE deallocated AS DELETE FROM job_queue",
    ] {
        ok(sql, &raw.simple(sql).await.unwrap());
    }
    let mut out = bytes::BytesMut::new();
    raw::parse("parsed", "DELETE FROM job_queue", &mut out);
    raw::sync(&mut out);
    raw.send(&out).await.unwrap();
    ok("Parse", &raw.collect(1, None, false).await.unwrap());

    // A second meaning for a name is refused, in both protocols.
    refused(
        "PREPARE of a used name with another text",
        &raw.simple("PREPARE redefined AS SELECT 1").await.unwrap(),
    );
    out.clear();
    raw::parse("parsed", "SELECT 1", &mut out);
    raw::sync(&mut out);
    raw.send(&out).await.unwrap();
    refused(
        "Parse of a used name with another text",
        &raw.collect(1, None, false).await.unwrap(),
    );
    // A DEALLOCATE the server refuses (failed block) frees nothing either.
    let events = raw.simple("BEGIN; SELECT 1/0").await.unwrap();
    assert!(!raw::errors(&events).is_empty(), "{events:?}");
    let events = raw.simple("DEALLOCATE deallocated").await.unwrap();
    assert_eq!(raw::errors(&events).len(), 1, "{events:?}");
    ok("ROLLBACK", &raw.simple("ROLLBACK").await.unwrap());
    refused(
        "PREPARE of a deallocated name with another text",
        &raw.simple("PREPARE deallocated AS SELECT 1").await.unwrap(),
    );

    // Now every one of them would name ops.job_queue.
    ok(
        "drop",
        &raw.simple("DROP TABLE pg_temp.job_queue; SET search_path = ops")
            .await
            .unwrap(),
    );
    for name in ["redefined", "deallocated"] {
        refused(
            &format!("EXECUTE {name}"),
            &raw.simple(&format!("EXECUTE {name}")).await.unwrap(),
        );
    }
    for name in ["by_sql", "parsed", "redefined"] {
        out.clear();
        raw::bind("", name, &mut out);
        raw::execute("", &mut out);
        raw::sync(&mut out);
        raw.send(&out).await.unwrap();
        refused(
            &format!("Bind of {name}"),
            &raw.collect(1, None, false).await.unwrap(),
        );
    }
    let after = fingerprint(&su).await;
    assert!(after == before, "{}", fingerprint_diff(&before, &after));

    // The same text under the same name stays usable (drivers re-prepare
    // what they closed).
    out.clear();
    raw::close_statement("again", &mut out);
    raw::parse("again", "SELECT 44", &mut out);
    raw::close_statement("again", &mut out);
    raw::parse("again", "SELECT 44", &mut out);
    raw::bind("", "again", &mut out);
    raw::execute("", &mut out);
    raw::sync(&mut out);
    raw.send(&out).await.unwrap();
    let events = raw.collect(1, None, false).await.unwrap();
    assert!(
        events.contains(&Event::Row(vec![Some("44".into())])),
        "{events:?}"
    );

    // An unrestricted identity may Bind what it prepared with SQL; the
    // execution is still recorded (by name: pgward never saw its text).
    let mut su_raw = raw::RawClient::connect(
        fx.proxy.port(),
        &[("user", SUPERUSER), ("database", fx.db.as_str())],
        SUPERUSER_PASSWORD,
    )
    .await
    .expect("raw superuser session");
    ok(
        "PREPARE",
        &su_raw.simple("PREPARE su_sql AS SELECT 45").await.unwrap(),
    );
    out.clear();
    raw::bind("", "su_sql", &mut out);
    raw::execute("", &mut out);
    raw::sync(&mut out);
    su_raw.send(&out).await.unwrap();
    let events = su_raw.collect(1, None, false).await.unwrap();
    assert!(
        events.contains(&Event::Row(vec![Some("45".into())])),
        "{events:?}"
    );
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    let recorded = loop {
        let found = fx.proxy.audit_records().into_iter().find(|r| {
            r["text"]
                .as_str()
                .is_some_and(|t| t == "EXECUTE \"su_sql\"")
        });
        if found.is_some() || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let record = recorded.expect("no audit record of the Execute of su_sql");
    assert_eq!(record["outcome"]["tag"], "SELECT 1", "{record}");
}

/// Each execution leaves the record of what the server ran, in the cases
/// where the answer has no CommandComplete or the statement's name changed
/// meaning between Bind and Execute (found in review: each of these left no
/// record, or the record of another statement).
#[tokio::test]
async fn audit_records_follow_what_the_server_ran() {
    use postgres_protocol::message::frontend as fe;
    let fx = Fixture::new("enf_audit_follow").await;
    let su = fx.superuser().await;
    let mut worker = fx.raw_worker(&[]).await.expect("raw worker");
    let mut admin = raw::RawClient::connect(
        fx.proxy.port(),
        &[("user", SUPERUSER), ("database", fx.db.as_str())],
        SUPERUSER_PASSWORD,
    )
    .await
    .expect("raw superuser session");
    let mut out = bytes::BytesMut::new();
    let run = async |client: &mut raw::RawClient, out: &mut bytes::BytesMut| {
        client.send(out).await.unwrap();
        out.clear();
        let events = client.collect(1, None, false).await.unwrap();
        assert!(raw::errors(&events).is_empty(), "{events:?}");
        events
    };

    // 1. An Execute cut short by its row limit: the INSERT ran whole.
    raw::parse(
        "",
        "INSERT INTO public.scratch (note) SELECT 'suspended' FROM generate_series(1, 3) RETURNING id",
        &mut out,
    );
    raw::bind("p1", "", &mut out);
    fe::execute("p1", 1, &mut out).unwrap();
    raw::sync(&mut out);
    let events = run(&mut worker, &mut out).await;
    assert_eq!(
        events.iter().filter(|e| matches!(e, Event::Row(_))).count(),
        1
    );
    assert_eq!(
        su_value(
            &su,
            "SELECT count(*) FROM public.scratch WHERE note = 'suspended'"
        )
        .await
        .unwrap(),
        "3"
    );
    // With a tenant, pgward's SET LOCAL goes first in each implicit
    // transaction: PostgreSQL's warning about it is not the client's.
    assert!(worker.notices.is_empty(), "notices: {:?}", worker.notices);

    // 2. The unnamed statement re-Parsed between Bind and Execute: the
    // portal still runs the DELETE.
    raw::parse(
        "",
        "DELETE FROM public.scratch WHERE note = 'suspended'",
        &mut out,
    );
    raw::bind("p2", "", &mut out);
    raw::parse("", "SELECT 1", &mut out);
    raw::execute("p2", &mut out);
    raw::sync(&mut out);
    run(&mut worker, &mut out).await;

    // 3. An unrestricted identity's Parse the server refuses (a statement
    // name that is not UTF-8) leaves no draft behind for the next one.
    out.extend_from_slice(b"P");
    out.extend_from_slice(&17i32.to_be_bytes());
    out.extend_from_slice(b"\xff\0SELECT 1\0\0\0");
    raw::sync(&mut out);
    admin.send(&out).await.unwrap();
    out.clear();
    let events = admin.collect(1, None, false).await.unwrap();
    assert_eq!(raw::errors(&events).len(), 1, "{events:?}");
    raw::extended(
        "UPDATE public.scratch SET note = 'admin' WHERE false",
        &mut out,
    );
    raw::sync(&mut out);
    run(&mut admin, &mut out).await;

    // 4. A FunctionCall (pg_catalog.now()) from an unrestricted identity.
    raw::call_now(&mut out);
    run(&mut admin, &mut out).await;
    assert_eq!(admin.function_results, 1);

    // 5. An extended-protocol batch whose implicit commit fails at Sync (a
    // deferred foreign key): the INSERT completed, then did not last.
    su.batch_execute(
        "CREATE TABLE public.deferred_parent (id int PRIMARY KEY);
         CREATE TABLE public.deferred_child (parent int REFERENCES public.deferred_parent
             DEFERRABLE INITIALLY DEFERRED);
         GRANT ALL ON public.deferred_child TO dragonfly_app;",
    )
    .await
    .unwrap();
    raw::parse("", "INSERT INTO public.deferred_child VALUES (7)", &mut out);
    raw::bind("", "", &mut out);
    raw::execute("", &mut out);
    raw::sync(&mut out);
    worker.send(&out).await.unwrap();
    out.clear();
    let events = worker.collect(1, None, false).await.unwrap();
    assert_eq!(raw::tags(&events), vec!["INSERT 0 1"], "{events:?}");
    assert_eq!(raw::errors(&events)[0].code, "23503", "{events:?}");

    // 6. A write pgward refuses after an error earlier in the same batch:
    // the server skips its stand-in, the client sees only the first error,
    // and the attempt is still recorded as refused.
    raw::extended("SELECT 1/0", &mut out);
    raw::parse("", "DELETE FROM ops.job_queue", &mut out);
    raw::bind("", "", &mut out);
    raw::execute("", &mut out);
    raw::sync(&mut out);
    worker.send(&out).await.unwrap();
    out.clear();
    let events = worker.collect(1, None, false).await.unwrap();
    let errors = raw::errors(&events);
    assert_eq!(errors.len(), 1, "{events:?}");
    assert_eq!(errors[0].code, "22012", "{events:?}");

    let wanted: [(&str, &str, &str); 4] = [
        ("INSERT", "scratch", "PORTAL SUSPENDED"),
        ("DELETE", "scratch", "DELETE 3"),
        ("UPDATE", "scratch", "UPDATE 0"),
        ("", "", "FUNCTION CALL"),
    ];
    let refused_delete = |r: &serde_json::Value| {
        r["decision"] == "deny"
            && r["kind"] == "DELETE"
            && r["outcome"]["sqlstate"] == "42501"
            && r["objects"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["name"] == "job_queue"))
    };
    let failed_commit = |r: &serde_json::Value| {
        r["kind"] == "COMMIT" && r["outcome"]["sqlstate"] == "23503" && r["identity"] == WORKER_USER
    };
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let records = fx.proxy.audit_records();
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(kind, object, tag)| {
                !records.iter().any(|r| {
                    r["outcome"]["tag"] == *tag
                        && (kind.is_empty() || r["kind"] == *kind)
                        && (object.is_empty()
                            || r["objects"]
                                .as_array()
                                .is_some_and(|o| o.iter().any(|o| o["name"] == *object)))
                })
            })
            .collect();
        if missing.is_empty()
            && records.iter().any(failed_commit)
            && records.iter().any(refused_delete)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no record of {missing:?}, of the failed commit or of the refused DELETE in {records:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // And nothing recorded the SELECT 1 as what p2 ran; only the failed
    // implicit commit was recorded, not the ones that succeeded.
    let records = fx.proxy.audit_records();
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "COMMIT").count(),
        1,
        "{records:#?}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["kind"] == "SELECT" && r["outcome"]["tag"] == "DELETE 3"),
        "{records:#?}"
    );
}

/// A session reuses the decision on a statement it repeats (see
/// `relay::repeat`), but never across a search_path change: the same text,
/// allowed while it named the worker's temporary table, is refused once the
/// path makes it name `ops.job_queue`, in both protocols.
#[tokio::test]
async fn a_repeated_statement_is_judged_again_after_the_search_path_changes() {
    let fx = Fixture::new("enf_repeat_path").await;
    let su = fx.superuser().await;
    let worker = fx.worker().await;
    worker
        .batch_execute("CREATE TEMP TABLE job_queue (id uuid)")
        .await
        .expect("a temporary table is the worker's own");
    const SQL: &str = "DELETE FROM job_queue";
    for round in 0..3 {
        step("simple", worker.simple_query(SQL))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: simple: {}", describe_error(&e)));
        step("extended", worker.query_typed(SQL, &[]))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: extended: {}", describe_error(&e)));
    }
    // Nothing allowed in between: the remembered decision is the DELETE's.
    // (PostgreSQL would still find the temporary table first; pgward,
    // following search_path only, must assume ops.job_queue.)
    worker.batch_execute("SET search_path = ops").await.unwrap();
    let before = fingerprint(&su).await;
    let simple = step("simple", worker.simple_query(SQL)).await.unwrap();
    let extended = step("extended", worker.query_typed(SQL, &[]))
        .await
        .unwrap();
    let after = fingerprint(&su).await;
    assert!(after == before, "{}", fingerprint_diff(&before, &after));
    for (what, outcome) in [
        ("simple", simple.map(|_| ())),
        ("extended", extended.map(|_| ())),
    ] {
        match outcome {
            Err(e) => assert!(
                Failure::from_pg(&e).is_pgward_refusal(),
                "{what}: {}",
                describe_error(&e)
            ),
            Ok(()) => panic!("{what}: DELETE FROM job_queue ran under search_path = ops"),
        }
    }
    session_check(&worker, Protocol::Simple, 4).await.unwrap();
}

/// SET LOCAL outside a transaction block still applies to the rest of the
/// implicit transaction: the statements after it before the same Sync (the
/// simple-Query form, `SET LOCAL ...; DELETE ...`, is in the corpus).
#[tokio::test]
async fn set_local_before_a_write_in_the_same_extended_batch() {
    let fx = Fixture::new("enf_set_local_batch").await;
    let su = fx.superuser().await;
    let before = fingerprint(&su).await;
    let mut raw = fx.raw_worker(&[]).await.expect("raw session");
    let mut out = bytes::BytesMut::new();
    raw::extended("SET LOCAL search_path = ops", &mut out);
    raw::extended("DELETE FROM job_queue", &mut out);
    raw::sync(&mut out);
    raw.send(&out).await.unwrap();
    let events = raw.collect(1, None, false).await.unwrap();
    let after = fingerprint(&su).await;
    let check = raw.simple("SELECT 11").await.unwrap();
    assert!(
        check.contains(&Event::Row(vec![Some("11".into())])),
        "{check:?}"
    );
    assert!(
        after == before && raw_refusal(&events),
        "Parse/Bind/Execute `SET LOCAL search_path = ops`, then `DELETE FROM job_queue`, one Sync: \
         expected pgward's refusal and no change; got {events:?}; changes: {}",
        fingerprint_diff(&before, &after)
    );
}

/// Settings a client sets at connection time, where no statement can be
/// refused: pgward must follow them or refuse the session.
#[tokio::test]
async fn startup_settings_do_not_blind_pgward() {
    let fx = Fixture::new("enf_startup").await;
    let su = fx.superuser().await;
    let mut problems = Vec::new();

    // options=-c search_path=ops (libpq's way): followed.
    let before = fingerprint(&su).await;
    let worker = fx
        .worker_with_options(&format!("{TENANT_OPTIONS} -c search_path=ops"))
        .await;
    let count = worker
        .query_one("SELECT count(*) FROM job_queue", &[])
        .await;
    assert!(
        count.is_ok(),
        "unqualified read with search_path=ops: {count:?}"
    );
    expect_refusal(
        "DELETE FROM job_queue with options -c search_path=ops",
        worker.simple_query("DELETE FROM job_queue").await,
    );
    assert_eq!(fingerprint(&su).await, before);

    // search_path as a startup parameter of its own (pgjdbc's currentSchema
    // sends it this way).
    let before = fingerprint(&su).await;
    match fx.raw_worker(&[("search_path", "ops")]).await {
        Err(e) => eprintln!("startup parameter search_path: session refused ({e})"),
        Ok(mut raw) => {
            let events = raw.simple("DELETE FROM job_queue").await.unwrap();
            let after = fingerprint(&su).await;
            if after != before || !raw_refusal(&events) {
                problems.push(format!(
                    "startup parameter search_path=ops, then `DELETE FROM job_queue`: {events:?}; changes: {}",
                    fingerprint_diff(&before, &after)
                ));
                fx.heal(&su).await;
            }
        }
    }

    // standard_conforming_strings=off: the server then reads `\'` inside a
    // literal as an escaped quote, pgward does not. What pgward parses as
    // `SELECT '\' , '...'` (two strings) the server runs as a SELECT and a
    // DELETE.
    let smuggle = r"SELECT '\' , '; DELETE FROM ops.job_queue; --'";
    let before = fingerprint(&su).await;
    let options = format!("{TENANT_OPTIONS} -c standard_conforming_strings=off");
    let mut config = pg_config(HOST, fx.proxy.port(), WORKER_USER, WORKER_PASSWORD, &fx.db);
    config.options(&options);
    match try_connect_config(&config).await {
        Err(e) => eprintln!(
            "options standard_conforming_strings=off: session refused ({})",
            describe_error(&e)
        ),
        Ok(worker) => {
            let outcome = worker.simple_query(smuggle).await;
            let after = fingerprint(&su).await;
            let refused = outcome
                .as_ref()
                .err()
                .is_some_and(|e| Failure::from_pg(e).is_pgward_refusal());
            if after != before || !refused {
                problems.push(format!(
                    "options -c standard_conforming_strings=off, then {smuggle:?}: {}; changes: {}",
                    match &outcome {
                        Ok(m) => format!("ran ({} messages)", m.len()),
                        Err(e) => describe_error(e),
                    },
                    fingerprint_diff(&before, &after)
                ));
                fx.heal(&su).await;
            }
        }
    }
    let before = fingerprint(&su).await;
    match fx
        .raw_worker(&[("standard_conforming_strings", "off")])
        .await
    {
        Err(e) => eprintln!("startup parameter standard_conforming_strings: session refused ({e})"),
        Ok(mut raw) => {
            let events = raw.simple(smuggle).await.unwrap();
            let after = fingerprint(&su).await;
            if after != before || !raw_refusal(&events) {
                problems.push(format!(
                    "startup parameter standard_conforming_strings=off, then {smuggle:?}: {events:?}; changes: {}",
                    fingerprint_diff(&before, &after)
                ));
                fx.heal(&su).await;
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A view the worker may create in public over a protected table is
/// automatically updatable, and writes through it run with the view owner's
/// (the worker's) privileges: it must not become a way to write the table.
#[tokio::test]
async fn an_updatable_view_is_not_a_way_around_the_policy() {
    let fx = Fixture::new("enf_view").await;
    let su = fx.superuser().await;
    let before = job_queue_state(&su).await;
    let worker = fx.worker().await;
    let create = worker
        .simple_query("CREATE VIEW public.jq AS SELECT * FROM ops.job_queue")
        .await;
    let write = match &create {
        Ok(_) => Some(worker.simple_query("DELETE FROM public.jq").await),
        Err(_) => None,
    };
    let after = job_queue_state(&su).await;
    let refused = |r: &Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>| {
        r.as_ref()
            .err()
            .is_some_and(|e| Failure::from_pg(e).is_pgward_refusal())
    };
    let describe = |r: &Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>| match r {
        Ok(_) => "ran".to_string(),
        Err(e) => describe_error(e),
    };
    assert!(
        after == before && (refused(&create) || write.as_ref().is_some_and(refused)),
        "CREATE VIEW public.jq AS SELECT * FROM ops.job_queue: {}; DELETE FROM public.jq: {}; \
         ops.job_queue before: {before}, after: {after}",
        describe(&create),
        write
            .as_ref()
            .map(describe)
            .unwrap_or_else(|| "not run".into())
    );
}

// ===========================================================================
// Control: without pgward, the database runs the refused writes
// ===========================================================================

/// Categories of REFUSE entries whose statements change data: straight to
/// PostgreSQL (no pgward), each must run, so the corpus's refusals of them
/// can only be pgward's. (DDL entries are often refused by PostgreSQL too,
/// for want of ownership; there the message naming pgward is the proof.)
const DATA_CATEGORIES: &[&str] = &[
    "insert/",
    "update/",
    "delete/",
    "merge/",
    "truncate/",
    "cte/",
    "explain-analyze/",
    "select-into/",
    "ctas/",
    "ident/",
    "sequence/",
];

/// Data-changing entries PostgreSQL itself rejects, and why.
const REJECTED_BY_POSTGRES: &[(&str, &str)] = &[
    (
        "insert/default-values",
        "ops.ingest_batches.source is NOT NULL",
    ),
    (
        "delete/alias-returning",
        "enforcement.actions references the cases",
    ),
    (
        "cte/in-subquery",
        "a data-modifying WITH must be at the top level",
    ),
    (
        "cte/inside-insert-select",
        "a data-modifying WITH must be at the top level",
    ),
];

#[tokio::test]
async fn control_postgres_itself_accepts_the_refused_writes() {
    let corpus = load_corpus();
    let fx = Fixture::new("enf_control").await;
    let su = fx.superuser().await;
    su.batch_execute(
        "CREATE FUNCTION witness.fingerprint_definer() RETURNS text LANGUAGE sql \
         SECURITY DEFINER AS 'SELECT witness.fingerprint()';
         GRANT USAGE ON SCHEMA witness TO dragonfly_app;
         GRANT EXECUTE ON FUNCTION witness.fingerprint_definer() TO dragonfly_app;",
    )
    .await
    .unwrap();
    let direct = connect_with_options(
        HOST,
        fx.pg.port(),
        WORKER_USER,
        WORKER_PASSWORD,
        &fx.db,
        TENANT_OPTIONS,
    )
    .await;
    let mut problems = Vec::new();
    let (mut accepted, mut total) = (0, 0);
    for e in corpus
        .iter()
        .filter(|e| e.expect == Expect::Refuse && e.setup.is_empty() && e.simple_only.is_none())
    {
        total += 1;
        let sql = e.sql.replace("{db}", &fx.db);
        let data = DATA_CATEGORIES.iter().any(|c| e.label.starts_with(c));
        let known = REJECTED_BY_POSTGRES.iter().find(|(l, _)| *l == e.label);
        // Run and roll back, so each statement meets the pristine database
        // (CREATE INDEX CONCURRENTLY, VACUUM and the like refuse to run in
        // a transaction block: they count as not accepted).
        direct.batch_execute("BEGIN").await.unwrap();
        let before = fingerprint_in(&direct).await;
        let outcome = direct.simple_query(&sql).await;
        let changed = match &outcome {
            Ok(_) => fingerprint_in(&direct).await != before,
            Err(_) => false,
        };
        let _ = direct.batch_execute("ROLLBACK").await;
        if outcome.is_ok() {
            accepted += 1;
        }
        match (data, known, &outcome) {
            (true, None, Ok(_)) if changed => {}
            (true, None, Ok(_)) => {
                problems.push(format!("{}: ran directly but changed nothing", e.label))
            }
            (true, None, Err(err)) => problems.push(format!(
                "{}: PostgreSQL refused it directly: {}",
                e.label,
                describe_error(err)
            )),
            (true, Some(_), Ok(_)) => problems.push(format!(
                "{}: listed as rejected by PostgreSQL, but ran",
                e.label
            )),
            _ => {}
        }
    }
    eprintln!(
        "control: PostgreSQL ran {accepted} of the {total} REFUSE entries without setup directly"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `witness.fingerprint()` from inside `client`'s transaction (a SECURITY
/// DEFINER wrapper owned by the superuser: it sees the transaction's own
/// uncommitted changes, and no row-level security hides rows from it).
async fn fingerprint_in(client: &Client) -> String {
    let rows = client
        .simple_query("SELECT witness.fingerprint_definer()")
        .await
        .unwrap_or_else(|e| panic!("fingerprint_definer: {}", describe_error(&e)));
    first_value(&rows).unwrap_or_default()
}

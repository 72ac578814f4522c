//! The per-session checkpoint where statements are judged before they reach
//! the server: inspection (cached) → policy decision → session bookkeeping
//! (search_path, SQL-level prepared statements).

use std::collections::HashMap;
use std::sync::Arc;

use super::notes::{Draft, Drafts, Notes, statement_text};
use super::repeat::LastAllowed;
use super::search_path::{Certainty, PathTracker};
use super::shared::SessionShared;
use crate::audit::{Protocol, StatementRecord};
use crate::context::ProxyContext;
use crate::inspect::cache::Inspection;
use crate::inspect::{Opaque, StatementInfo};
use crate::policy::{ClassId, Decision, Policy, SearchPath, Verdict as PolicyVerdict};
use crate::protocol::TxnStatus;
use crate::protocol::reply::{PgError, Severity};
use crate::startup::identity::Identity;
use crate::tenant::inject::{Rewrite, TenantInjector};

/// SQLSTATE insufficient_privilege: what PostgreSQL itself answers when a
/// privilege check fails, so clients handle pgward's refusals the same way.
pub const REFUSED: &str = "42501";

/// Statement names one session may use (see `Gate::names`): the map lives as
/// long as the session, so it is bounded.
const MAX_STATEMENT_NAMES: usize = 10_000;

/// What happens to one client message.
#[derive(Debug)]
pub enum Verdict {
    Forward,
    /// Forward this text instead (the tenant statement spliced in).
    Rewrite(Rewrite),
    Refuse(PgError),
}

/// A statement created with SQL `PREPARE`, judged again at each `EXECUTE`
/// with the search_path it was prepared under (PostgreSQL resolves its names
/// then, not at EXECUTE).
#[derive(Debug)]
struct SqlPrepared {
    info: StatementInfo,
    path: SearchPath,
}

/// Judges one session's statements.
pub struct Gate {
    ctx: Arc<ProxyContext>,
    identity: Identity,
    path: PathTracker,
    sql_prepared: HashMap<String, Arc<SqlPrepared>>,
    /// Present when pgward sets this session's tenant.
    tenant: Option<TenantInjector>,
    /// Extended protocol: what each prepared statement is, and the path
    /// generation it was judged under (PostgreSQL re-analyses a prepared
    /// statement with the search_path current when it runs, so a changed
    /// path means judging it again at Bind).
    statements: HashMap<String, Prepared>,
    /// Which statement each portal runs, for tenant injection: BEGIN and
    /// COMMIT take effect when executed, not when parsed.
    portals: HashMap<String, Portal>,
    /// The one text each statement name (Parse or SQL `PREPARE`, which share
    /// PostgreSQL's namespace) may stand for in this session. pgward does not
    /// see which definitions the server accepted (a duplicate name, or a
    /// DEALLOCATE in a failed block, is refused there), so a name is never
    /// given a second meaning: whatever the server holds under it was
    /// prepared from this text.
    names: HashMap<String, Arc<str>>,
    /// Names went unrecorded (an unrestricted session past the bound): a
    /// name missing from `names` may then exist on the server.
    names_overflowed: bool,
    /// Audit drafts of the message being judged.
    notes: Notes,
    /// The draft each Sync carries (see `on_sync`), built once.
    implicit_commit: Draft,
    /// The last statement allowed on its own, reused while its inputs hold.
    last_allowed: Option<LastAllowed>,
}

/// A portal: the statement it was bound to, and what that statement was at
/// the Bind (`None`: one pgward did not see Parsed).
struct Portal {
    statement: String,
    run: Option<(Inspection, Drafts)>,
}

/// A statement prepared with Parse: its inspection, the path generation it
/// was judged under, and the drafts of its records (one per statement, copied
/// at every Execute).
struct Prepared {
    inspection: Inspection,
    generation: u64,
    drafts: Drafts,
}

impl Gate {
    pub fn new(
        ctx: Arc<ProxyContext>,
        identity: Identity,
        initial_path: SearchPath,
        tenant: Option<TenantInjector>,
        audit_base: StatementRecord,
    ) -> Self {
        Gate {
            ctx,
            identity,
            path: PathTracker::new(initial_path),
            sql_prepared: HashMap::new(),
            tenant,
            statements: HashMap::new(),
            portals: HashMap::new(),
            names: HashMap::new(),
            names_overflowed: false,
            implicit_commit: implicit_commit_draft(&audit_base),
            notes: Notes::new(audit_base),
            last_allowed: None,
        }
    }

    /// The audit drafts of the message just judged (statements to run, or
    /// the one refused).
    pub fn take_drafts(&mut self) -> Drafts {
        self.notes.take()
    }

    /// A simple Query: every statement in it is judged before any is sent;
    /// one refusal refuses the whole message.
    pub fn on_query(&mut self, sql: Option<&str>, shared: &SessionShared) -> Verdict {
        let (verdict, inspection) =
            self.judge_text(sql, Certainty::Alone, Protocol::Simple, shared);
        if let Verdict::Forward = verdict {
            self.path.end_of_implicit_transaction();
        }
        let (Verdict::Forward, Some(inspection), Some(sql)) = (&verdict, inspection, sql) else {
            return verdict;
        };
        let Some(injector) = self.tenant.as_mut() else {
            return verdict;
        };
        let failed = sync_injector(injector, shared);
        match inspection.as_ref() {
            Ok(statements) => match injector.plan_query(sql, statements, failed) {
                Some(rewrite) => Verdict::Rewrite(rewrite),
                None => verdict,
            },
            // Unparseable text from an unrestricted identity: no transaction
            // pgward can see into, so no tenant and no rows under RLS.
            Err(_) => verdict,
        }
    }

    /// A Parse message. The decision is made here, once: Bind and Execute
    /// only run what Parse created, and a refused Parse creates nothing.
    pub fn on_parse(
        &mut self,
        name: Option<&str>,
        sql: Option<&str>,
        shared: &SessionShared,
    ) -> Verdict {
        let text = sql.unwrap_or("<not valid UTF-8>");
        if let Some(refused) = self.claim_name(name, text, Protocol::Extended) {
            return refused;
        }
        // Extended-protocol statements run later, if at all.
        let (verdict, inspection) =
            self.judge_text(sql, Certainty::Deferred, Protocol::Extended, shared);
        if !matches!(verdict, Verdict::Forward) {
            return verdict;
        }
        // Records are per Execute: the drafts go with the statement, or
        // nowhere (they must not be left for the next message to take).
        let drafts = self.notes.take();
        let (Some(inspection), Some(name)) = (inspection, name) else {
            // Text that is not UTF-8 from an unrestricted identity: the server
            // refuses it, and a failed Parse of the unnamed statement drops
            // the previous one. (An Execute of it is recorded by name.)
            if name == Some("") {
                self.statements.remove("");
            }
            return verdict;
        };
        self.bind_name(name, text);
        let prepared = Prepared {
            inspection,
            generation: self.path.generation(),
            drafts,
        };
        // Clients re-Parse the unnamed statement for every query: replace
        // it in place rather than allocate its name again.
        match self.statements.get_mut(name) {
            Some(entry) => *entry = prepared,
            None => {
                self.statements.insert(name.to_string(), prepared);
            }
        }
        verdict
    }

    /// Before a Bind, Execute or FunctionCall: whether the tenant statement
    /// must go first (and its SQL). Call once per such message.
    pub fn tenant_before_execution(&mut self, shared: &SessionShared) -> Option<&str> {
        let injector = self.tenant.as_mut()?;
        let failed = sync_injector(injector, shared);
        if injector.before_execution(failed) {
            Some(injector.set_local())
        } else {
            None
        }
    }

    /// A Bind: the statement runs now, with the current search_path. If the
    /// path may have changed since it was judged, it is judged again.
    pub fn on_bind(&mut self, portal: Option<&str>, statement: Option<&str>) -> Verdict {
        if let Some(refused) = self.unknown_statement(statement) {
            return refused;
        }
        let (Some(portal), Some(statement)) = (portal, statement) else {
            return Verdict::Forward;
        };
        let generation = self.path.generation();
        if let Some(prepared) = self.statements.get(statement)
            && prepared.generation != generation
        {
            let inspection = prepared.inspection.clone();
            let policy = self.ctx.policy.load();
            let class = self.identity.class(&policy);
            let mut drafts = Drafts::new();
            if let Ok(stmts) = inspection.as_ref() {
                for stmt in stmts {
                    let decision = self.judge(&policy, class, stmt, self.path.current());
                    let text = prepared_text(&self.statements, statement);
                    let draft = self
                        .notes
                        .draft(Protocol::Extended, &text, Some(stmt), &decision);
                    if decision.is_refused() {
                        self.notes.replace_all(draft);
                        return self.refuse(refusal_error(&decision));
                    }
                    drafts.push(draft);
                }
            }
            if let Some(entry) = self.statements.get_mut(statement) {
                entry.generation = generation;
                entry.drafts = drafts;
            }
        }
        // The portal runs what the statement is now, whatever the name holds
        // by its Execute (a re-Parse of the unnamed statement, a Close).
        // Clients reuse the same (often unnamed) portal for every execution:
        // update in place rather than allocate per Bind.
        let run = self
            .statements
            .get(statement)
            .map(|p| (p.inspection.clone(), p.drafts.clone()));
        match self.portals.get_mut(portal) {
            Some(p) => {
                if p.statement != statement {
                    statement.clone_into(&mut p.statement);
                }
                p.run = run;
            }
            None => {
                self.portals.insert(
                    portal.to_string(),
                    Portal {
                        statement: statement.to_string(),
                        run,
                    },
                );
            }
        }
        Verdict::Forward
    }

    /// An Execute: queues the records of what the portal runs, and follows
    /// its transaction effects for tenant injection.
    pub fn on_execute(&mut self, portal: Option<&str>) {
        let Some(bound) = portal.and_then(|p| self.portals.get(p)) else {
            return;
        };
        let Some((inspection, drafts)) = &bound.run else {
            // A statement pgward did not see Parsed (only unrestricted
            // identities get this far, see `unknown_statement`): recorded
            // as the SQL EXECUTE of its name, since its text is the
            // server's alone.
            let text = execute_text(&bound.statement);
            let policy = self.ctx.policy.load();
            let decision = allowed(policy.class_name(self.identity.class(&policy)));
            let draft = self.notes.draft(Protocol::Extended, &text, None, &decision);
            self.notes.push(draft);
            return;
        };
        for draft in drafts {
            let mut draft = draft.clone();
            draft.received = std::time::Instant::now();
            self.notes.push(draft);
        }
        if let (Some(injector), Ok(statements)) = (self.tenant.as_mut(), inspection.as_ref()) {
            for stmt in statements {
                injector.executed(stmt);
            }
        }
    }

    /// Close of a statement (`kind` b'S') or portal (b'P').
    pub fn on_close(&mut self, kind: Option<u8>, name: Option<&str>) {
        match (kind, name) {
            (Some(b'S'), Some(name)) => {
                self.statements.remove(name);
            }
            (Some(b'P'), Some(name)) => {
                self.portals.remove(name);
            }
            _ => {}
        }
    }

    /// A Sync; returns the draft of the implicit transaction's commit, which
    /// is recorded only if the server reports it failed (a deferred
    /// constraint, a serialization failure): the statements before it were
    /// recorded as completed, and this record says they did not last.
    pub fn on_sync(&mut self) -> Drafts {
        self.path.end_of_implicit_transaction();
        if let Some(injector) = self.tenant.as_mut() {
            injector.synced();
        }
        let mut commit = self.implicit_commit.clone();
        commit.received = std::time::Instant::now();
        smallvec::smallvec![commit]
    }

    /// FunctionCall carries a function OID and no SQL: nothing to inspect.
    pub fn on_function_call(&mut self) -> Verdict {
        let policy = self.ctx.policy.load();
        let class = self.identity.class(&policy);
        const TEXT: &str = "<FunctionCall message>";
        if !policy.is_restricted(class) {
            let decision = allowed(policy.class_name(class));
            let draft = self
                .notes
                .draft(Protocol::FunctionCall, TEXT, None, &decision);
            self.notes.push(draft);
            return Verdict::Forward;
        }
        let err = PgError::new(
            Severity::Error,
            REFUSED,
            format!(
                "pgward: the FunctionCall protocol message is refused for {} (class {}) by rule {}: it carries no SQL to inspect",
                self.identity.name(),
                policy.class_name(class),
                crate::policy::OPAQUE_RULE
            ),
        )
        .with_hint("call the function with SELECT instead");
        let draft = self
            .notes
            .draft(Protocol::FunctionCall, TEXT, None, &denied(&err));
        self.notes.replace_all(draft);
        self.refuse(err)
    }

    fn judge_text(
        &mut self,
        sql: Option<&str>,
        certainty: Certainty,
        protocol: Protocol,
        shared: &SessionShared,
    ) -> (Verdict, Option<Inspection>) {
        let inspection = sql.map(|sql| self.ctx.inspections.get(sql));
        let verdict = self.judge_inspection(
            sql.unwrap_or("<not valid UTF-8>"),
            inspection.as_ref(),
            certainty,
            protocol,
            shared,
        );
        (verdict, inspection)
    }

    fn judge_inspection(
        &mut self,
        sql: &str,
        inspection: Option<&Inspection>,
        certainty: Certainty,
        protocol: Protocol,
        shared: &SessionShared,
    ) -> Verdict {
        let policy = self.ctx.policy.load();
        let class = self.identity.class(&policy);
        let restricted = policy.is_restricted(class);
        let unreadable = match inspection.map(|i| i.as_ref()) {
            None => Some("a statement that is not valid UTF-8".to_string()),
            Some(Err(e)) => Some(format!("a statement pgward cannot parse ({e})")),
            Some(Ok(_)) => None,
        };
        if let Some(what) = unreadable {
            if !restricted {
                // PostgreSQL reports the error itself.
                let draft =
                    self.notes
                        .draft(protocol, sql, None, &allowed(policy.class_name(class)));
                self.notes.push(draft);
                return Verdict::Forward;
            }
            // From a restricted identity, what pgward cannot read does not pass.
            return self.refuse_opaque(&policy, class, protocol, sql, &what);
        }
        let Some(Ok(statements)) = inspection.map(|i| i.as_ref()) else {
            return Verdict::Forward;
        };
        let certainty = if statements.len() > 1 {
            Certainty::Batched
        } else {
            certainty
        };
        let stateful = statements.iter().any(|s| {
            PathTracker::affected_by(s) || s.prepares.is_some() || s.deallocates.is_some()
        });
        if !stateful {
            // The common case: judge against the current state, change nothing.
            if let (Some(inspection), [stmt]) = (inspection, statements.as_slice())
                && executed_statement(stmt).is_none()
            {
                let text = statement_text(sql, statements, 0);
                return self.judge_alone(&policy, class, inspection, stmt, text, protocol);
            }
            for (i, stmt) in statements.iter().enumerate() {
                let decision = self.judge(&policy, class, stmt, self.path.current());
                if let Some(refused) = self.settle(
                    protocol,
                    statement_text(sql, statements, i),
                    stmt,
                    &decision,
                ) {
                    return refused;
                }
            }
            return Verdict::Forward;
        }
        // Statements can change the path for the ones after them: judge them
        // in order on a copy, and keep the copy only if all pass.
        let mut path = self.path.clone();
        let mut prepared = Vec::new();
        let mut claimed = Vec::new();
        let mut deallocated = Vec::new();
        for (i, stmt) in statements.iter().enumerate() {
            let text = statement_text(sql, statements, i);
            if let Some((name, _)) = &stmt.prepares
                && let Some(refused) = self.claim_name(Some(name), text, protocol)
            {
                return refused;
            }
            let decision = self.judge(&policy, class, stmt, path.current());
            if let Some(refused) = self.settle(protocol, text, stmt, &decision) {
                return refused;
            }
            let clean_commit = !shared.busy() && shared.txn_status() == TxnStatus::InBlock;
            path.apply(stmt, certainty, clean_commit);
            if let Some((name, inner)) = &stmt.prepares {
                claimed.push((name.as_str(), text));
                prepared.push((
                    name.clone(),
                    Arc::new(SqlPrepared {
                        info: (**inner).clone(),
                        path: path.current().clone(),
                    }),
                ));
            }
            if let Some(name) = &stmt.deallocates {
                deallocated.push(name.clone());
            }
        }
        self.path = path;
        for (name, text) in claimed {
            self.bind_name(name, text);
        }
        for name in deallocated {
            match name {
                Some(name) => self.sql_prepared.remove(&name),
                None => {
                    self.sql_prepared.clear();
                    None
                }
            };
        }
        self.sql_prepared.extend(prepared);
        Verdict::Forward
    }

    /// One stateless statement on its own (the usual message): judged, or
    /// the same decision as last time when nothing it depends on changed
    /// (see `repeat`).
    fn judge_alone(
        &mut self,
        policy: &Arc<Policy>,
        class: ClassId,
        inspection: &Inspection,
        stmt: &StatementInfo,
        text: &str,
        protocol: Protocol,
    ) -> Verdict {
        let generation = self.path.generation();
        if let Some(draft) = self
            .last_allowed
            .as_ref()
            .and_then(|last| last.reuse(inspection, policy, generation, protocol, text))
        {
            self.notes.push(draft);
            return Verdict::Forward;
        }
        let decision = self.judge(policy, class, stmt, self.path.current());
        if let Some(refused) = self.settle(protocol, text, stmt, &decision) {
            return refused;
        }
        if decision.verdict == PolicyVerdict::Allow
            && let Some(draft) = self.notes.last()
        {
            self.last_allowed = Some(LastAllowed::new(
                inspection.clone(),
                policy.clone(),
                generation,
                draft.clone(),
            ));
        }
        Verdict::Forward
    }

    /// Records the decision on one statement; the refusal when it is one.
    fn settle(
        &mut self,
        protocol: Protocol,
        text: &str,
        stmt: &StatementInfo,
        decision: &Decision,
    ) -> Option<Verdict> {
        let draft = self.notes.draft(protocol, text, Some(stmt), decision);
        match decision.verdict {
            PolicyVerdict::Allow => {
                self.notes.push(draft);
                None
            }
            PolicyVerdict::MonitorWouldDeny => {
                tracing::warn!(
                    rule = decision.rule.as_deref().unwrap_or(""),
                    "monitor mode, would refuse: {}",
                    decision.reason
                );
                self.notes.push(draft);
                None
            }
            PolicyVerdict::Deny => {
                self.notes.replace_all(draft);
                Some(self.refuse(refusal_error(decision)))
            }
        }
    }

    /// Judges one statement.
    fn judge(
        &self,
        policy: &Policy,
        class: ClassId,
        stmt: &StatementInfo,
        path: &SearchPath,
    ) -> Decision {
        match executed_statement(stmt) {
            // PostgreSQL resolves names with the path current at PREPARE,
            // but re-analyses with the path current at EXECUTE when anything
            // it depends on changed: both must pass.
            Some(name) => match self.sql_prepared.get(name) {
                Some(p) => {
                    let then = policy.decide(class, self.identity.name(), &p.info, &p.path);
                    if then.verdict != PolicyVerdict::Allow {
                        then
                    } else {
                        policy.decide(class, self.identity.name(), &p.info, path)
                    }
                }
                None if policy.is_restricted(class) => denied(&self.opaque_error(
                    policy,
                    class,
                    &format!(
                        "EXECUTE of prepared statement {name:?}, which pgward did not see prepared"
                    ),
                )),
                None => allowed(policy.class_name(class)),
            },
            None => policy.decide(class, self.identity.name(), stmt, path),
        }
    }

    /// Refuses (restricted identities) a statement name that already stands
    /// for another text in this session, or one too many names. The unnamed
    /// statement is redefined by every Parse, as in PostgreSQL.
    fn claim_name(
        &mut self,
        name: Option<&str>,
        text: &str,
        protocol: Protocol,
    ) -> Option<Verdict> {
        if name == Some("") {
            return None;
        }
        let policy = self.ctx.policy.load();
        let class = self.identity.class(&policy);
        if !policy.is_restricted(class) {
            return None;
        }
        let what = match name {
            None => "a statement name that is not valid UTF-8".to_owned(),
            Some(name) => match self.names.get(name) {
                Some(bound) if **bound == *text => return None,
                Some(_) => format!(
                    "preparing statement {name:?} again with another text (PostgreSQL may still hold its first definition; use a new name)"
                ),
                None if self.names.len() < MAX_STATEMENT_NAMES => return None,
                None => format!(
                    "statement name {name:?} (more than {MAX_STATEMENT_NAMES} names in one session)"
                ),
            },
        };
        Some(self.refuse_opaque(&policy, class, protocol, text, &what))
    }

    /// Remembers the text a statement name stands for (see `names`).
    fn bind_name(&mut self, name: &str, text: &str) {
        if name.is_empty() || self.names.contains_key(name) {
            return;
        }
        if self.names.len() < MAX_STATEMENT_NAMES {
            self.names.insert(name.to_owned(), Arc::from(text));
        } else {
            // Only unrestricted identities get past `claim_name` here.
            self.names_overflowed = true;
        }
    }

    /// Refuses (restricted identities) a Bind of a statement pgward has no
    /// current Parse of but the server may hold: one prepared with SQL
    /// `PREPARE` (the same namespace in PostgreSQL), or one closed or
    /// deallocated (the server may have refused that). Its meaning there
    /// cannot be judged against the current search_path. A name never
    /// prepared at all cannot exist on the server: PostgreSQL answers that.
    fn unknown_statement(&mut self, statement: Option<&str>) -> Option<Verdict> {
        let judged = |s: &str| s.is_empty() || self.statements.contains_key(s);
        let never_prepared = |s: &str| !self.names_overflowed && !self.names.contains_key(s);
        if statement.is_some_and(|s| judged(s) || never_prepared(s)) {
            return None;
        }
        let policy = self.ctx.policy.load();
        let class = self.identity.class(&policy);
        if !policy.is_restricted(class) {
            return None;
        }
        let what = match statement {
            Some(name) => format!(
                "Bind of prepared statement {name:?}, which pgward did not see prepared with Parse"
            ),
            None => "Bind of a statement name that is not valid UTF-8".to_owned(),
        };
        let text = execute_text(statement.unwrap_or("?"));
        Some(self.refuse_opaque(&policy, class, Protocol::Extended, &text, &what))
    }

    fn opaque_error(&self, policy: &Policy, class: ClassId, what: &str) -> PgError {
        PgError::new(
            Severity::Error,
            REFUSED,
            format!(
                "pgward: {what} is refused for {} (class {}) by rule {}",
                self.identity.name(),
                policy.class_name(class),
                crate::policy::OPAQUE_RULE
            ),
        )
    }

    /// Refuses what pgward cannot judge (rule `pgward.opaque`): the record
    /// of `text` says so, and replaces the message's other drafts.
    fn refuse_opaque(
        &mut self,
        policy: &Policy,
        class: ClassId,
        protocol: Protocol,
        text: &str,
        what: &str,
    ) -> Verdict {
        let err = self.opaque_error(policy, class, what);
        let draft = self.notes.draft(protocol, text, None, &denied(&err));
        self.notes.replace_all(draft);
        self.refuse(err)
    }

    fn refuse(&self, err: PgError) -> Verdict {
        tracing::warn!(identity = %self.identity.name(), "refused: {}", err.message);
        Verdict::Refuse(err)
    }
}

/// Brings the injector up to date with the server when nothing is in flight;
/// returns whether the server reports a failed transaction block.
fn sync_injector(injector: &mut TenantInjector, shared: &SessionShared) -> bool {
    if shared.busy() {
        return false;
    }
    let status = shared.txn_status();
    injector.sync_with_server(status);
    status == TxnStatus::Failed
}

/// The name of the SQL-level prepared statement an `EXECUTE` runs.
fn executed_statement(stmt: &StatementInfo) -> Option<&str> {
    stmt.opaque.iter().find_map(|o| match o {
        Opaque::ExecutePrepared(name) => Some(name.as_str()),
        _ => None,
    })
}

/// How a record names the run of a prepared statement pgward has no text of:
/// as the SQL that would run it (`EXECUTE "name"`), which the audit can
/// normalise like any statement.
fn execute_text(name: &str) -> String {
    format!("EXECUTE \"{}\"", name.replace('"', "\"\""))
}

/// The record of an extended-protocol batch's implicit commit at Sync.
fn implicit_commit_draft(base: &StatementRecord) -> Draft {
    let mut record = base.clone();
    record.protocol = Protocol::Extended;
    record.statement_text = Arc::from("COMMIT");
    record.statement_kind = Arc::from("COMMIT");
    record.set_decision(&Decision {
        verdict: PolicyVerdict::Allow,
        rule: None,
        reason: "the implicit commit of an extended-protocol batch, at its Sync".to_owned(),
        hint: None,
        accesses: Vec::new(),
    });
    Draft {
        record,
        received: std::time::Instant::now(),
    }
}

/// The decision recorded for something allowed without a rule looking at it.
fn allowed(class: &str) -> Decision {
    Decision {
        verdict: PolicyVerdict::Allow,
        rule: None,
        reason: format!("unrestricted class {class}"),
        hint: None,
        accesses: Vec::new(),
    }
}

/// The decision recorded for a refusal that no policy rule produced (what
/// pgward cannot inspect).
fn denied(err: &PgError) -> Decision {
    Decision {
        verdict: PolicyVerdict::Deny,
        rule: Some(crate::policy::OPAQUE_RULE.to_string()),
        reason: err.message.clone(),
        hint: err.hint.clone(),
        accesses: Vec::new(),
    }
}

/// The text of a Parse'd statement, for a record made at Bind.
fn prepared_text(statements: &HashMap<String, Prepared>, name: &str) -> Arc<str> {
    statements
        .get(name)
        .and_then(|p| p.drafts.first())
        .map(|d| d.record.statement_text.clone())
        .unwrap_or_default()
}

fn refusal_error(decision: &Decision) -> PgError {
    let err = PgError::new(Severity::Error, REFUSED, decision.reason.clone());
    match &decision.hint {
        Some(hint) => err.with_hint(hint.clone()),
        None => err,
    }
}

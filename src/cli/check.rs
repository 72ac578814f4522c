//! `pgward check`: what pgward would decide for some SQL, without a server.
//! SREs use it to test a policy change before reloading it.

use std::path::PathBuf;

use super::EXIT_CONFIG;
use crate::config::Config;
use crate::inspect::{Action, inspect};
use crate::policy::{Decision, Policy, SearchPath, Verdict};
use crate::relay::search_path::{Certainty, PathTracker, default_path};

/// Exit code when at least one statement would be refused.
pub const EXIT_DENIED: i32 = 3;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Configuration file.
    #[arg(long, default_value = "policy.yaml")]
    pub config: PathBuf,
    /// Startup user name of the identity to judge for.
    #[arg(long)]
    pub user: String,
    /// The session's search_path, comma separated (default: "$user",public).
    #[arg(long, value_name = "a,b")]
    pub search_path: Option<String>,
    /// SQL text; several statements may be separated by semicolons.
    pub sql: String,
}

pub fn run(args: CheckArgs) -> i32 {
    // Inspection needs a deep stack (see `inspect::STACK_BYTES`).
    std::thread::Builder::new()
        .stack_size(crate::inspect::STACK_BYTES)
        .spawn(move || check(args))
        .map_or(EXIT_CONFIG, |t| t.join().unwrap_or(EXIT_CONFIG))
}

fn check(args: CheckArgs) -> i32 {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgward: {e}");
            return EXIT_CONFIG;
        }
    };
    let policy = Policy::from_config(&config);
    let class = policy.class_for_user(&args.user);
    let restricted = policy.is_restricted(class);
    println!(
        "identity {} -> class {} ({})",
        args.user,
        policy.class_name(class),
        if restricted {
            "restricted"
        } else {
            "unrestricted"
        }
    );
    let initial = match &args.search_path {
        Some(p) => SearchPath::Known(p.split(',').map(|s| s.trim().to_string()).collect()),
        None => SearchPath::Known(default_path()),
    };
    let statements = match inspect(&args.sql) {
        Ok(s) => s,
        Err(e) => {
            println!("cannot parse: {e}");
            return if restricted {
                println!(
                    "decision: REFUSED (rule {}): restricted identities may only run SQL pgward can parse",
                    crate::policy::OPAQUE_RULE
                );
                EXIT_DENIED
            } else {
                println!("decision: forwarded (PostgreSQL reports the error)");
                0
            };
        }
    };
    let certainty = if statements.len() > 1 {
        Certainty::Batched
    } else {
        Certainty::Alone
    };
    let mut path = PathTracker::new(initial);
    let mut refused = false;
    for (i, stmt) in statements.iter().enumerate() {
        let decision = policy.decide(class, &args.user, stmt, path.current());
        println!("statement {} ({}):", i + 1, stmt.kind);
        print_decision(&decision);
        refused |= decision.is_refused();
        path.apply(stmt, certainty, true);
    }
    if refused {
        println!("result: REFUSED (nothing of this message would reach PostgreSQL)");
        EXIT_DENIED
    } else {
        println!("result: allowed");
        0
    }
}

fn print_decision(decision: &Decision) {
    for access in &decision.accesses {
        let action = match access.action {
            Action::Read => "read",
            Action::Write => "write",
            Action::Ddl => "ddl",
        };
        let schema = access.schema.as_deref().unwrap_or("<search_path>");
        println!("  {action:5} {schema}.{}", access.name);
    }
    let verdict = match decision.verdict {
        Verdict::Allow => "allow",
        Verdict::Deny => "DENY",
        Verdict::MonitorWouldDeny => "monitor (would deny)",
    };
    println!("  rule: {}", decision.rule.as_deref().unwrap_or("-"));
    println!("  decision: {verdict}: {}", decision.reason);
    if let Some(hint) = &decision.hint {
        println!("  hint: {hint}");
    }
}

//! `pgward audit verify|tail`: tools for security reviewers.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::audit::tail::{TailFilter, tail};
use crate::audit::verify::{VerifyOptions, verify_files};

/// Exit code of `audit verify` when the chain is broken.
pub const EXIT_TAMPERED: i32 = 1;
/// Exit code for usage and I/O errors.
pub const EXIT_ERROR: i32 = 2;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of audit files, oldest first (exit 0 intact, 1 tampered, 2 error).
    Verify(VerifyArgs),
    /// Print audit records one per line.
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Audit files in order: rotated files oldest first, the live file last.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Accept a chain whose first record is not seq 1 (earlier files archived).
    #[arg(long)]
    pub allow_partial: bool,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Only refusals: denied (and monitor would-deny) statements, failed auth, startup refusals.
    #[arg(long)]
    pub denied: bool,
    /// Only records of this identity.
    #[arg(long, value_name = "X")]
    pub identity: Option<String>,
    /// Only records of this tenant.
    #[arg(long, value_name = "T")]
    pub tenant: Option<String>,
    /// Only the last N matching records.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// Audit file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

pub fn run(args: AuditArgs) -> i32 {
    match args.command {
        AuditCommand::Verify(a) => run_verify(a),
        AuditCommand::Tail(a) => run_tail(a),
    }
}

fn run_verify(args: VerifyArgs) -> i32 {
    let opts = VerifyOptions {
        allow_partial: args.allow_partial,
    };
    let report = match verify_files(&args.files, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgward audit verify: {e}");
            return EXIT_ERROR;
        }
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(p) = &report.problem {
        println!("TAMPERED: {p}");
        println!(
            "({} valid record(s) before it{})",
            report.records,
            report
                .last
                .as_ref()
                .map(|t| format!(", up to seq {}", t.seq))
                .unwrap_or_default()
        );
        return EXIT_TAMPERED;
    }
    match (&report.first_seq, &report.last) {
        (Some(first), Some(last)) => println!(
            "intact: {} record(s), seq {first}..{} in {} file(s); last hash {}",
            report.records,
            last.seq,
            args.files.len(),
            last.hash
        ),
        _ => println!("intact: no records"),
    }
    if report.dropped > 0 {
        println!(
            "note: {} gap record(s): {} event(s) were dropped (on_full: drop)",
            report.gaps, report.dropped
        );
    }
    0
}

fn run_tail(args: TailArgs) -> i32 {
    let filter = TailFilter {
        denied: args.denied,
        identity: args.identity,
        tenant: args.tenant,
        last: args.lines,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut err = std::io::stderr();
    let result = tail(&args.file, &filter, &mut out, &mut err);
    let _ = out.flush();
    match result {
        Ok(_) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("pgward audit tail: {}: {e}", args.file.display());
            EXIT_ERROR
        }
    }
}

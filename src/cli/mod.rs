//! The command line: `pgward serve`, and tools for SREs.

pub mod audit;
pub mod certs;
pub mod check;
pub mod doctor;
pub mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit code for a configuration error.
pub const EXIT_CONFIG: i32 = 2;

#[derive(Debug, Parser)]
#[command(name = "pgward", version, about = "A security-aware PostgreSQL proxy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Accept PostgreSQL clients and relay them to the upstream server.
    Serve(ServeArgs),
    /// Show what pgward would decide for SQL run by an identity (exit 0 allowed, 3 denied, 2 error).
    Check(check::CheckArgs),
    /// Report the upstream database's security posture against the policy (exit 0 sound, 1 findings, 2 error).
    Doctor(doctor::DoctorArgs),
    /// Audit stream tools: verify the hash chain, print records.
    Audit(audit::AuditArgs),
    /// Development certificates: `certs init` writes a CA, a server certificate and sample client certificates.
    Certs(certs::CertsArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file.
    #[arg(long, default_value = "policy.yaml")]
    pub config: PathBuf,
    /// Address to listen on (overrides server.listen).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// PostgreSQL server to relay to (overrides server.upstream).
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: Option<String>,
    /// Audit file (overrides audit.sinks.file.path).
    #[arg(long, value_name = "PATH")]
    pub audit_file: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz over HTTP on this address
    /// (overrides server.admin_listen).
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin_listen: Option<String>,
    /// Threads that run sessions (overrides server.worker_threads).
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    /// Benchmark builds only: record nothing (every audit event is
    /// discarded), to measure the audit's cost against a normal run.
    #[cfg(feature = "unaudited-benchmark")]
    #[arg(long)]
    pub unaudited_benchmark: bool,
}

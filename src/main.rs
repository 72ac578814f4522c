use clap::Parser;
use pgward::cli::{Cli, Command};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => pgward::cli::serve::run(args),
        Command::Check(args) => pgward::cli::check::run(args),
        Command::Doctor(args) => pgward::cli::doctor::run(args),
        Command::Audit(args) => pgward::cli::audit::run(args),
        Command::Certs(args) => pgward::cli::certs::run(args),
    };
    std::process::exit(code);
}

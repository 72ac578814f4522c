//! `pgward serve`.

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::{EXIT_CONFIG, ServeArgs};
use crate::audit::Auditor;
use crate::config::Config;
use crate::context::ProxyContext;

/// Runs the proxy until SIGTERM/SIGINT; returns the process exit code.
pub fn run(args: ServeArgs) -> i32 {
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgward: {e}");
            return EXIT_CONFIG;
        }
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(upstream) = args.upstream {
        config.server.upstream = upstream;
    }
    if let Some(path) = args.audit_file {
        config.audit.override_file_path(path);
    }
    if let Some(admin) = args.admin_listen {
        config.server.admin_listen = Some(admin);
    }
    if let Some(n) = args.worker_threads {
        config.server.worker_threads = Some(n);
    }
    // The audit stream starts first: pgward never serves a statement it
    // cannot record.
    #[cfg(feature = "unaudited-benchmark")]
    let started = if args.unaudited_benchmark {
        tracing::warn!("--unaudited-benchmark: NOTHING IS AUDITED (benchmark build)");
        eprintln!("pgward: --unaudited-benchmark: every audit event is discarded");
        Ok(Auditor::discarding())
    } else {
        Auditor::start(&config.audit)
    };
    #[cfg(not(feature = "unaudited-benchmark"))]
    let started = Auditor::start(&config.audit);
    let (auditor, _audit_task) = match started {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pgward: {e}");
            return EXIT_CONFIG;
        }
    };
    let ctx = match ProxyContext::from_config(&config, auditor) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("pgward: {}: {e}", args.config.display());
            return EXIT_CONFIG;
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    // Sessions inspect SQL on these threads: a deeply nested statement
    // (ARRAY[ARRAY[...]] thousands deep) needs far more than tokio's default
    // 2 MiB, and overflowing a stack aborts the whole process.
    runtime.thread_stack_size(crate::inspect::STACK_BYTES);
    if let Some(n) = config.server.worker_threads {
        runtime.worker_threads(n.get());
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgward: cannot start the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(&config.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("pgward: cannot listen on {}: {e}", config.server.listen);
                return 1;
            }
        };
        let admin_listener = match &config.server.admin_listen {
            Some(addr) => match crate::admin::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("pgward: cannot listen on {addr} (admin): {e}");
                    return 1;
                }
            },
            None => None,
        };
        tracing::info!(
            listen = %config.server.listen,
            upstream = %config.server.upstream,
            tls = ctx.tls.is_some(),
            "pgward {} ready",
            env!("CARGO_PKG_VERSION")
        );
        if config.server.tls.is_some() && config.server.upstream_tls.is_some() {
            tracing::warn!(
                "TLS on both legs: SCRAM clients must connect with channel_binding=disable \
                 (PostgreSQL offers channel binding on its TLS leg, and a client on TLS that \
                 is not offered it by pgward is refused as a possible downgrade)"
            );
        }
        let shutdown = CancellationToken::new();
        let signals = match shutdown_on_signal(shutdown.clone()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pgward: cannot install signal handlers: {e}");
                return 1;
            }
        };
        if let Some(admin) = admin_listener {
            let addr = admin
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string());
            tracing::info!(admin = %addr, "admin listener ready: /metrics /healthz /readyz");
            tokio::spawn(crate::admin::serve(admin, ctx.clone(), shutdown.clone()));
        }
        let reloader = tokio::spawn(crate::reload::watch(
            args.config.clone(),
            ctx.clone(),
            shutdown.clone(),
        ));
        crate::accept::serve(
            listener,
            ctx.clone(),
            shutdown,
            config.limits.drain_timeout(),
        )
        .await;
        reloader.abort();
        // Every queued record is written and synced before exit.
        if let Err(e) = ctx.audit.flush().await {
            tracing::error!("audit stream not flushed: {e}");
        }
        signals.abort();
        tracing::info!("pgward stopped");
        0
    })
}

fn shutdown_on_signal(shutdown: CancellationToken) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        shutdown.cancel();
    }))
}

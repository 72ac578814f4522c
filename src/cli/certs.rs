//! `pgward certs init`: development certificates for TLS and mTLS.
//!
//! Generates, with rcgen, a development CA, a server certificate for
//! `localhost` signed by it, and two sample client certificates (the
//! `dragonfly_app` worker for tenant `acme` and for tenant `globex`). Private
//! keys are written with mode 0600, certificates with 0644. Existing files are
//! never overwritten without `--force`.
//!
//! These are development certificates: never use them in production.
//! [`generate`] is public so tests elsewhere can create a fresh set.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::EXIT_CONFIG;

/// Common name of the development CA.
pub const CA_COMMON_NAME: &str = "pgward development CA";
/// Common name of the server certificate.
pub const SERVER_COMMON_NAME: &str = "localhost";
/// Subject alternative names of the server certificate.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Common name of the sample client certificates (the application's role).
pub const CLIENT_COMMON_NAME: &str = "dragonfly_app";
/// Tenants that get a sample client certificate (`worker-<tenant>.crt/.key`).
pub const SAMPLE_TENANTS: [&str; 2] = ["acme", "globex"];
/// How long the generated certificates are valid.
pub const VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Backdating of `notBefore`, to tolerate small clock differences.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Generate a development CA, a server certificate for localhost and sample client certificates.
    Init(InitArgs),
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write the certificates and keys to (created if missing).
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// A certificate and its private key, as written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Paths of everything [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedCerts {
    pub dir: PathBuf,
    /// `ca.crt` / `ca.key`: the development CA (trust `ca.crt`; also the mTLS client CA).
    pub ca: CertPair,
    /// `server.crt` / `server.key`: pgward's certificate for localhost, 127.0.0.1 and ::1.
    pub server: CertPair,
    /// `worker-acme.crt` / `.key`: CN dragonfly_app, OU acme, SAN URI tenant:acme.
    pub worker_acme: CertPair,
    /// `worker-globex.crt` / `.key`: CN dragonfly_app, OU globex, SAN URI tenant:globex.
    pub worker_globex: CertPair,
}

impl GeneratedCerts {
    fn in_dir(dir: &Path) -> Self {
        let pair = |stem: &str| CertPair {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        GeneratedCerts {
            dir: dir.to_path_buf(),
            ca: pair("ca"),
            server: pair("server"),
            worker_acme: pair("worker-acme"),
            worker_globex: pair("worker-globex"),
        }
    }

    /// The sample client certificates, with their tenant.
    pub fn clients(&self) -> [(&'static str, &CertPair); 2] {
        [
            (SAMPLE_TENANTS[0], &self.worker_acme),
            (SAMPLE_TENANTS[1], &self.worker_globex),
        ]
    }

    fn pairs(&self) -> [&CertPair; 4] {
        [
            &self.ca,
            &self.server,
            &self.worker_acme,
            &self.worker_globex,
        ]
    }

    /// Every file, certificates and keys.
    pub fn files(&self) -> Vec<&Path> {
        self.pairs()
            .into_iter()
            .flat_map(|p| [p.cert.as_path(), p.key.as_path()])
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error(
        "refusing to overwrite existing files ({}); pass --force to regenerate them",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Exists(Vec<PathBuf>),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// One generated certificate, in PEM, before it is written.
struct Pem {
    cert: String,
    key: String,
}

/// Generates the CA, the server certificate and the sample client
/// certificates into `dir` (created if missing). Without `force`, refuses
/// (before writing anything) when any of the files already exists.
pub fn generate(dir: &Path, force: bool) -> Result<GeneratedCerts, CertsError> {
    let out = GeneratedCerts::in_dir(dir);
    if !force {
        let existing: Vec<PathBuf> = out
            .files()
            .into_iter()
            .filter(|p| fs::symlink_metadata(p).is_ok())
            .map(Path::to_path_buf)
            .collect();
        if !existing.is_empty() {
            return Err(CertsError::Exists(existing));
        }
    }

    // Everything is generated in memory first, so a failure writes nothing.
    let (ca_pem, ca_issuer) = ca()?;
    let server_pem = server(&ca_issuer)?;
    let acme_pem = client(&ca_issuer, SAMPLE_TENANTS[0])?;
    let globex_pem = client(&ca_issuer, SAMPLE_TENANTS[1])?;

    fs::create_dir_all(dir).map_err(|source| CertsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for (pair, pem) in [
        (&out.ca, &ca_pem),
        (&out.server, &server_pem),
        (&out.worker_acme, &acme_pem),
        (&out.worker_globex, &globex_pem),
    ] {
        write_file(&pair.key, pem.key.as_bytes(), 0o600)?;
        write_file(&pair.cert, pem.cert.as_bytes(), 0o644)?;
    }
    Ok(out)
}

/// `notBefore` / `notAfter` for a certificate issued now.
fn validity(params: &mut CertificateParams) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + VALIDITY).into();
}

fn ca() -> Result<(Pem, Issuer<'static, KeyPair>), CertsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    validity(&mut params);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    let pem = Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    Ok((pem, Issuer::new(params, key)))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    organizational_unit: Option<&str>,
    names: Vec<SanType>,
    purpose: ExtendedKeyUsagePurpose,
) -> Result<Pem, CertsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    validity(&mut params);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(ou) = organizational_unit {
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
    }
    params.subject_alt_names = names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn server(issuer: &Issuer<'_, KeyPair>) -> Result<Pem, CertsError> {
    let names = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())?.subject_alt_names;
    leaf(
        issuer,
        SERVER_COMMON_NAME,
        None,
        names,
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

fn client(issuer: &Issuer<'_, KeyPair>, tenant: &str) -> Result<Pem, CertsError> {
    let uri = format!("tenant:{tenant}").try_into()?;
    leaf(
        issuer,
        CLIENT_COMMON_NAME,
        Some(tenant),
        vec![SanType::URI(uri)],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// Writes `contents` to `path` with exactly `mode` (on Unix). An existing file
/// is removed first, so a key never passes through a more permissive mode.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    let io = |source| CertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(path).map_err(io)?;
    // The umask may have narrowed the mode; set it exactly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// A libpq connection string for a sample client certificate through pgward.
pub fn psql_conninfo(certs: &GeneratedCerts, client: &CertPair) -> String {
    format!(
        "host=localhost port=6432 dbname=dragonfly user={CLIENT_COMMON_NAME} sslmode=verify-full \
         sslrootcert={} sslcert={} sslkey={}",
        certs.ca.cert.display(),
        client.cert.display(),
        client.key.display()
    )
}

pub fn run(args: CertsArgs) -> i32 {
    match args.command {
        CertsCommand::Init(init) => run_init(init),
    }
}

fn run_init(args: InitArgs) -> i32 {
    let certs = match generate(&args.dir, args.force) {
        Ok(c) => c,
        Err(e @ CertsError::Exists(_)) => {
            eprintln!("pgward: certs init: {e}");
            return EXIT_CONFIG;
        }
        Err(e) => {
            eprintln!("pgward: certs init: {e}");
            return 1;
        }
    };
    println!(
        "Wrote development certificates to {} (never use them in production):",
        certs.dir.display()
    );
    let describe = [
        (
            &certs.ca,
            format!("development CA, CN \"{CA_COMMON_NAME}\""),
        ),
        (
            &certs.server,
            format!("pgward server, SAN {}", SERVER_NAMES.join(", ")),
        ),
        (
            &certs.worker_acme,
            format!("client CN {CLIENT_COMMON_NAME}, OU acme, SAN URI tenant:acme"),
        ),
        (
            &certs.worker_globex,
            format!("client CN {CLIENT_COMMON_NAME}, OU globex, SAN URI tenant:globex"),
        ),
    ];
    for (pair, what) in describe {
        println!("  {:<28} {what}", pair.cert.display());
        println!("  {:<28} private key (mode 0600)", pair.key.display());
    }
    println!();
    println!("In policy.yaml:");
    println!("  server:");
    println!("    tls:");
    println!("      cert: {}", certs.server.cert.display());
    println!("      key: {}", certs.server.key.display());
    println!("      client_ca: {}", certs.ca.cert.display());
    println!();
    println!("Connect with psql:");
    for (tenant, pair) in certs.clients() {
        println!("  # tenant {tenant}");
        println!("  psql \"{}\"", psql_conninfo(&certs, pair));
    }
    0
}

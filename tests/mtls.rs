//! Identity from client certificates: verified against the client CA by
//! rustls, classified by their subject, carrying the tenant, and logged in to
//! PostgreSQL by pgward itself (the client sends no password). Real TLS
//! handshakes with psql and tokio-postgres against the real demo database.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use pgward::cli::certs::{CertPair, GeneratedCerts, generate};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;

const PASSWORD_ENV: &str = "PGWARD_TEST_WORKER_PASSWORD";

fn policy(certs: &GeneratedCerts) -> String {
    format!(
        r#"server:
  tls:
    cert: {cert}
    key: {key}
    client_ca: {ca}
identities:
  default_class: app
  classes:
    worker:
      users: [dragonfly_app]
      cert_subjects: [dragonfly_app]
      require_client_cert: true
      tenant:
        sources: [certificate_san_uri, certificate_ou, startup_option]
        allowed: [acme, globex]
      upstream:
        user: dragonfly_app
        password_env: {PASSWORD_ENV}
    service:
      restricted: false
      users: [postgres]
    app: {{}}
protected:
  - id: protected-tables
    tables: [public.judgments]
    allow: {{ worker: [read], app: [read] }}
"#,
        cert = certs.server.cert.display(),
        key = certs.server.key.display(),
        ca = certs.ca.cert.display(),
    )
}

fn start(certs: &GeneratedCerts) -> ProxyProcess {
    ProxyProcess::builder(&PgCluster::shared().upstream())
        .policy(&policy(certs))
        .env(PASSWORD_ENV, WORKER_PASSWORD)
        .start()
}

/// psql over verify-full TLS with `client` (or none), no password anywhere.
fn psql(
    proxy: &ProxyProcess,
    db: &str,
    certs: &GeneratedCerts,
    client: Option<&CertPair>,
    extra: &str,
    sql: &str,
) -> Output {
    let mut conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={} dbname={db} user={WORKER_USER} sslmode=verify-full sslrootcert={} {extra}",
        proxy.port(),
        certs.ca.cert.display()
    );
    if let Some(c) = client {
        conninfo.push_str(&format!(
            " sslcert={} sslkey={}",
            c.cert.display(),
            c.key.display()
        ));
    }
    Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conninfo,
            "-c",
            sql,
        ])
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn each_certificate_sees_its_own_tenant_without_a_password() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("mtls_tenants");
    let dir = tempfile::tempdir().unwrap();
    let certs = generate(dir.path(), false).unwrap();
    let proxy = start(&certs);
    for (tenant, pair) in certs.clients() {
        let out = psql(
            &proxy,
            &db,
            &certs,
            Some(pair),
            "",
            "SELECT DISTINCT tenant_id FROM public.judgments",
        );
        assert!(
            out.status.success(),
            "{tenant}: {}\n{}",
            text(&out),
            proxy.log()
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tenant);
        // Still the worker: its writes are refused.
        let out = psql(
            &proxy,
            &db,
            &certs,
            Some(pair),
            "",
            "DELETE FROM public.judgments",
        );
        assert!(!out.status.success());
        assert!(
            text(&out).contains("pgward: write on public.judgments denied for dragonfly_app"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn missing_conflicting_or_foreign_certificates_are_refused() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("mtls_refusals");
    let dir = tempfile::tempdir().unwrap();
    let certs = generate(dir.path(), false).unwrap();
    let proxy = start(&certs);

    // No certificate: the class requires one.
    let out = psql(&proxy, &db, &certs, None, "password=dragonfly", "SELECT 1");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("requires a client certificate"),
        "{}",
        text(&out)
    );

    // Certificate says acme, startup option says globex.
    let out = psql(
        &proxy,
        &db,
        &certs,
        Some(&certs.worker_acme),
        "options='-c app.current_tenant=globex'",
        "SELECT 1",
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("conflicting tenants"), "{}", text(&out));

    // A certificate from another CA fails the TLS handshake.
    let other = tempfile::tempdir().unwrap();
    let rogue = generate(other.path(), false).unwrap();
    let out = psql(
        &proxy,
        &db,
        &certs,
        Some(&rogue.worker_acme),
        "",
        "SELECT 1",
    );
    assert!(
        !out.status.success(),
        "a certificate of a foreign CA got in: {}",
        text(&out)
    );
    assert!(
        !text(&out).contains("pgward:"),
        "must fail in the handshake: {}",
        text(&out)
    );
    // pgward logs the failure right after the handshake; psql may exit first.
    assert!(handshake_failures_logged(&proxy, 1), "{}", proxy.log());

    // An expired certificate, signed by the right CA, fails too.
    let expired = expired_client_cert(&certs, dir.path());
    let out = psql(&proxy, &db, &certs, Some(&expired), "", "SELECT 1");
    assert!(
        !out.status.success(),
        "an expired certificate got in: {}",
        text(&out)
    );
    assert!(handshake_failures_logged(&proxy, 2), "{}", proxy.log());

    // pgward keeps serving.
    let out = psql(
        &proxy,
        &db,
        &certs,
        Some(&certs.worker_acme),
        "",
        "SELECT 41 + 1",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        text(&out)
    );
}

/// Whether pgward has logged at least `n` TLS handshake failures (waiting up
/// to 5 s for the log to catch up).
fn handshake_failures_logged(proxy: &ProxyProcess, n: usize) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if proxy.log().matches("TLS handshake failed").count() >= n {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn expired_client_cert(certs: &GeneratedCerts, dir: &Path) -> CertPair {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(&certs.ca.key).unwrap()).unwrap();
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(&certs.ca.cert).unwrap(), ca_key)
            .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "dragonfly_app");
    params.subject_alt_names = vec![rcgen::SanType::URI("tenant:acme".try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pair = CertPair {
        cert: dir.join("expired.crt"),
        key: dir.join("expired.key"),
    };
    std::fs::write(&pair.cert, cert.pem()).unwrap();
    std::fs::write(&pair.key, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pair.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    pair
}

/// tokio-postgres with tokio-postgres-rustls and a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_with_a_client_certificate() {
    let pg = PgCluster::shared();
    let db = pg.demo_database("mtls_tokio");
    let dir = tempfile::tempdir().unwrap();
    let certs = generate(dir.path(), false).unwrap();
    let proxy = start(&certs);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&certs.ca.cert).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(&certs.worker_globex.cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&certs.worker_globex.key).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
        .port(proxy.port())
        .user(WORKER_USER)
        .dbname(&db)
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", describe_error(&e), proxy.log()));
    tokio::spawn(connection);
    let tenants: Vec<String> = client
        .query("SELECT DISTINCT tenant_id FROM public.judgments", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tenants, vec!["globex"]);
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        who, WORKER_USER,
        "pgward logged in as the class's upstream role"
    );
}

//! `pgward certs init`: the real binary writes a usable development PKI — a
//! CA, a server certificate for localhost, and client certificates carrying
//! the tenant — with safe file modes, and never overwrites without --force.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

const FILES: [&str; 8] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "worker-acme.crt",
    "worker-acme.key",
    "worker-globex.crt",
    "worker-globex.key",
];

fn pgward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgward"))
        .args(args)
        .output()
        .expect("pgward runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn init(dir: &Path, force: bool) -> Output {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["certs", "init", "--dir", dir];
    if force {
        args.push("--force");
    }
    pgward(&args)
}

/// A fresh directory with a generated set (the `certs` subdirectory does not exist beforehand).
fn generated() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let out = init(&dir, false);
    assert!(out.status.success(), "{}", text(&out));
    (tmp, dir)
}

fn read_all(dir: &Path) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|f| fs::read(dir.join(f)).unwrap())
        .collect()
}

fn pem(dir: &Path, file: &str) -> ::x509_parser::pem::Pem {
    let bytes = fs::read(dir.join(file)).unwrap();
    let (rest, pem) = parse_x509_pem(&bytes).expect("PEM certificate");
    assert!(
        rest.iter().all(u8::is_ascii_whitespace),
        "{file}: one certificate"
    );
    assert_eq!(pem.label, "CERTIFICATE");
    pem
}

fn common_names<'a>(name: &'a X509Name<'_>) -> Vec<&'a str> {
    name.iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn units<'a>(name: &'a X509Name<'_>) -> Vec<&'a str> {
    name.iter_organizational_unit()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<GeneralName<'a>> {
    cert.subject_alternative_name()
        .unwrap()
        .expect("subjectAltName")
        .value
        .general_names
        .clone()
}

/// Verifies `cert`'s signature with `issuer`'s public key.
///
/// x509-parser's own `verify_signature` needs its `verify` feature, which the
/// crate does not enable; this does the same check with the signature
/// algorithms of rustls' ring provider: the algorithm named in the
/// certificate, over the raw TBSCertificate, with the issuer's key.
fn verify_signed_by(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), String> {
    let oid = cert.signature_algorithm.algorithm.as_bytes();
    let spki_alg = issuer.public_key().algorithm.algorithm.as_bytes();
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let provider = rustls::crypto::ring::default_provider();
    let candidates: Vec<_> = provider
        .signature_verification_algorithms
        .all
        .iter()
        .filter(|alg| contains(alg.signature_alg_id().as_ref(), oid))
        .filter(|alg| contains(alg.public_key_alg_id().as_ref(), spki_alg))
        .collect();
    if candidates.is_empty() {
        return Err(format!(
            "no verifier for {}",
            cert.signature_algorithm.algorithm
        ));
    }
    let public_key = &issuer.public_key().subject_public_key.data;
    let message = cert.tbs_certificate.as_ref();
    let signature = &cert.signature_value.data;
    if candidates
        .iter()
        .any(|alg| alg.verify_signature(public_key, message, signature).is_ok())
    {
        Ok(())
    } else {
        Err("bad signature".to_string())
    }
}

/// Checks validity: valid now and about a year long.
fn valid_for_a_year(cert: &X509Certificate<'_>) {
    let v = cert.validity();
    assert!(v.is_valid(), "valid now: {v:?}");
    let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
    assert!((365..=366).contains(&days), "{days} days");
}

#[test]
fn init_writes_files_with_safe_modes_and_usage() {
    let (_tmp, dir) = generated();
    for file in FILES {
        let meta = fs::metadata(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.is_file() && meta.len() > 0, "{file}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let want = if file.ends_with(".key") { 0o600 } else { 0o644 };
            assert_eq!(meta.permissions().mode() & 0o777, want, "{file}");
        }
    }
    // Exactly these files, nothing else.
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);

    // Keys are PKCS#8 PEM that rustls (and libpq) can load.
    for file in FILES.iter().filter(|f| f.ends_with(".key")) {
        PrivateKeyDer::from_pem_file(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    // It says what it wrote and how to connect.
    let out = init(&dir, true);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for file in FILES {
        assert!(stdout.contains(file), "mentions {file}:\n{stdout}");
    }
    let d = dir.display();
    for tenant in ["acme", "globex"] {
        let line = format!(
            "psql \"host=localhost port=6432 dbname=dragonfly user=dragonfly_app sslmode=verify-full \
             sslrootcert={d}/ca.crt sslcert={d}/worker-{tenant}.crt sslkey={d}/worker-{tenant}.key\""
        );
        assert!(stdout.contains(&line), "missing {line}\n{stdout}");
    }
    assert!(stdout.contains("production"), "{stdout}");
}

#[test]
fn certificates_form_a_chain_with_the_specified_contents() {
    let (_tmp, dir) = generated();

    let ca_pem = pem(&dir, "ca.crt");
    let ca = ca_pem.parse_x509().unwrap();
    assert_eq!(common_names(ca.subject()), ["pgward development CA"]);
    assert_eq!(ca.subject(), ca.issuer(), "self-signed");
    let bc = ca.basic_constraints().unwrap().expect("basicConstraints");
    assert!(bc.value.ca, "CA:TRUE");
    assert!(
        ca.key_usage()
            .unwrap()
            .expect("keyUsage")
            .value
            .key_cert_sign()
    );
    verify_signed_by(&ca, &ca).expect("CA self-signature");
    valid_for_a_year(&ca);

    let server_pem = pem(&dir, "server.crt");
    let server = server_pem.parse_x509().unwrap();
    assert_eq!(server.issuer(), ca.subject());
    verify_signed_by(&server, &ca).expect("server signed by the CA");
    assert!(!server.is_ca());
    valid_for_a_year(&server);
    let names = sans(&server);
    assert!(
        names.contains(&GeneralName::DNSName("localhost")),
        "{names:?}"
    );
    assert!(
        names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])),
        "{names:?}"
    );
    let v6_loopback: [u8; 16] = std::net::Ipv6Addr::LOCALHOST.octets();
    assert!(
        names.contains(&GeneralName::IPAddress(&v6_loopback)),
        "{names:?}"
    );
    let eku = server.extended_key_usage().unwrap().expect("EKU").value;
    assert!(eku.server_auth && !eku.client_auth, "{eku:?}");

    for tenant in ["acme", "globex"] {
        let client_pem = pem(&dir, &format!("worker-{tenant}.crt"));
        let client = client_pem.parse_x509().unwrap();
        assert_eq!(client.issuer(), ca.subject());
        verify_signed_by(&client, &ca)
            .unwrap_or_else(|e| panic!("worker-{tenant} signed by the CA: {e}"));
        assert!(!client.is_ca());
        valid_for_a_year(&client);
        assert_eq!(common_names(client.subject()), ["dragonfly_app"]);
        assert_eq!(units(client.subject()), [tenant]);
        let uri = format!("tenant:{tenant}");
        assert_eq!(sans(&client), [GeneralName::URI(uri.as_str())]);
        let eku = client.extended_key_usage().unwrap().expect("EKU").value;
        assert!(eku.client_auth && !eku.server_auth, "{eku:?}");
        // Not signed by the server key: the check above is meaningful.
        assert_eq!(
            verify_signed_by(&client, &server),
            Err("bad signature".to_string())
        );
    }
}

#[test]
fn refuses_to_overwrite_without_force() {
    let (_tmp, dir) = generated();
    let before = read_all(&dir);

    let out = init(&dir, false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("--force") && msg.contains("ca.key"), "{msg}");
    assert_eq!(read_all(&dir), before, "files unchanged");

    // A single existing file is enough to refuse, and nothing else is written.
    let partial = dir.parent().unwrap().join("partial");
    fs::create_dir(&partial).unwrap();
    fs::write(partial.join("server.key"), "mine").unwrap();
    let out = init(&partial, false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(partial.join("server.key")).unwrap(),
        "mine"
    );
    assert_eq!(fs::read_dir(&partial).unwrap().count(), 1);

    let out = init(&dir, true);
    assert!(out.status.success(), "{}", text(&out));
    let after = read_all(&dir);
    for (i, file) in FILES.iter().enumerate() {
        assert_ne!(after[i], before[i], "{file} regenerated");
    }
    #[cfg(unix)]
    for file in FILES {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.join(file)).unwrap().permissions().mode() & 0o777;
        let want = if file.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode, want, "{file} after --force");
    }
}

#[test]
fn library_generate_returns_the_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = pgward::cli::certs::generate(tmp.path(), false).unwrap();
    assert_eq!(certs.ca.cert, tmp.path().join("ca.crt"));
    assert_eq!(certs.server.key, tmp.path().join("server.key"));
    assert_eq!(certs.worker_acme.cert, tmp.path().join("worker-acme.crt"));
    assert_eq!(
        certs.worker_globex.key,
        tmp.path().join("worker-globex.key")
    );
    assert_eq!(certs.files().len(), 8);
    for f in certs.files() {
        assert!(f.is_file(), "{}", f.display());
    }
    let err = pgward::cli::certs::generate(tmp.path(), false).unwrap_err();
    assert!(
        matches!(err, pgward::cli::certs::CertsError::Exists(ref p) if p.len() == 8),
        "{err}"
    );
    pgward::cli::certs::generate(tmp.path(), true).unwrap();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

fn roots(ca: &Path) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).unwrap();
    }
    Arc::new(roots)
}

/// Handshakes over an in-memory pipe, echoes one message, and returns the
/// client certificate the server saw (if any).
async fn handshake(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(name.to_string()).unwrap();
    let server_side = async move {
        let mut tls = acceptor
            .accept(s)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        tls.write_all(&buf)
            .await
            .map_err(|e| format!("server write: {e}"))?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    };
    let client_side = async move {
        let mut tls = connector
            .connect(name, c)
            .await
            .map_err(|e| format!("client: {e}"))?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        assert_eq!(&buf, b"hello");
        Ok::<_, String>(())
    };
    let (peer, client) = tokio::join!(server_side, client_side);
    client?;
    peer
}

#[tokio::test]
async fn server_certificate_verifies_for_localhost_and_loopback_addresses() {
    let (_tmp, dir) = generated();
    for name in ["localhost", "127.0.0.1", "::1"] {
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs(&dir.join("server.crt")), key(&dir.join("server.key")))
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&dir.join("ca.crt")))
            .with_no_client_auth();
        let peer = handshake(server, client, name).await.unwrap();
        assert_eq!(peer, None);
    }

    // A name the certificate does not carry is rejected: verification is real.
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs(&dir.join("server.crt")), key(&dir.join("server.key")))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&dir.join("ca.crt")))
        .with_no_client_auth();
    let err = handshake(server, client, "db.example.com")
        .await
        .unwrap_err();
    assert!(err.contains("client:"), "{err}");
}

#[tokio::test]
async fn client_certificates_pass_mutual_tls_against_the_ca() {
    let (_tmp, dir) = generated();
    for tenant in ["acme", "globex"] {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(&dir.join("ca.crt")),
            provider(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&dir.join("server.crt")), key(&dir.join("server.key")))
            .unwrap();
        let client_cert = certs(&dir.join(format!("worker-{tenant}.crt")));
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(&dir.join("ca.crt")))
            .with_client_auth_cert(
                client_cert.clone(),
                key(&dir.join(format!("worker-{tenant}.key"))),
            )
            .unwrap();
        let peer = handshake(server, client, "localhost")
            .await
            .unwrap()
            .expect("server saw the client certificate");
        assert_eq!(peer, client_cert[0].to_vec());
        let (_, seen) = X509Certificate::from_der(&peer).unwrap();
        assert_eq!(units(seen.subject()), [tenant]);
    }
}

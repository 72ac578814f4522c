//! Connections from pgward to the PostgreSQL server.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::net::Stream;
use crate::protocol::startup::SSL_REQUEST_CODE;

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct Upstream {
    pub addr: String,
    pub tls: Option<UpstreamTlsSetup>,
    pub connect_timeout: Duration,
}

#[derive(Clone)]
pub struct UpstreamTlsSetup {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to PostgreSQL at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to PostgreSQL at {0}")]
    Timeout(String),
    #[error("PostgreSQL at {0} refused TLS, which the configuration requires")]
    TlsRefused(String),
    #[error("TLS handshake with PostgreSQL at {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
}

impl Upstream {
    /// Opens a connection, negotiating TLS first when configured.
    pub async fn connect(&self) -> Result<Stream, UpstreamError> {
        tokio::time::timeout(self.connect_timeout, self.connect_inner())
            .await
            .map_err(|_| UpstreamError::Timeout(self.addr.clone()))?
    }

    async fn connect_inner(&self) -> Result<Stream, UpstreamError> {
        let io_err = |source| UpstreamError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let mut tcp = TcpStream::connect(&self.addr).await.map_err(io_err)?;
        // Small protocol messages must not wait for Nagle's algorithm.
        tcp.set_nodelay(true).map_err(io_err)?;
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let mut request = [0u8; 8];
        request[..4].copy_from_slice(&8i32.to_be_bytes());
        request[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
        tcp.write_all(&request).await.map_err(io_err)?;
        if tcp.read_u8().await.map_err(io_err)? != b'S' {
            return Err(UpstreamError::TlsRefused(self.addr.clone()));
        }
        let stream = TlsConnector::from(tls.config.clone())
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|source| UpstreamError::Tls {
                addr: self.addr.clone(),
                source,
            })?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }
}

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use noc_protocol::DeviceId;
use noc_protocol::device::{Frame, FrameCodec, FrameError, SUPPORTED_VERSIONS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

/// What a receive attempt saw.
#[derive(Debug)]
pub enum Recv {
    Frame(Frame),
    /// The relay closed the connection (EOF).
    Closed,
    /// Nothing arrived in time.
    Timeout,
    /// Bytes that are not a frame.
    Error(String),
}

/// A device-channel client over TLS.
pub struct FakeDevice {
    framed: Framed<TlsStream<TcpStream>, FrameCodec>,
}

impl FakeDevice {
    /// Opens TLS to the device channel, trusting the relay's certificate.
    pub async fn connect(addr: SocketAddr, cert: &Path) -> anyhow::Result<Self> {
        Self::connect_with(addr, crate::client_config(cert, &[])?).await
    }

    async fn connect_with(addr: SocketAddr, config: rustls::ClientConfig) -> anyhow::Result<Self> {
        let connector = TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from("localhost")?;
        let tls = connector.connect(name, tcp).await?;
        Ok(Self { framed: Framed::new(tls, FrameCodec::new(16 * 1024 * 1024)) })
    }

    /// Opens TLS to the device channel presenting a client certificate (PEM) with its key.
    /// With TLS 1.3 a certificate the relay refuses fails the first read, not this.
    pub async fn connect_with_certificate(
        addr: SocketAddr,
        cert: &Path,
        client_cert_pem: &str,
        client_key_pem: &str,
    ) -> anyhow::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(client_cert_pem.as_bytes())?];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(client_key_pem.as_bytes())?;
        Self::connect_with(addr, noc_tls::client_config_with_certificate(Some(cert), &[], chain, key)?).await
    }

    pub async fn send(&mut self, frame: Frame) -> std::io::Result<()> {
        self.framed.send(frame).await.map_err(|e| match e {
            FrameError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        })
    }

    /// Writes raw bytes, bypassing the codec (malformed-input tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let io = self.framed.get_mut();
        io.write_all(bytes).await?;
        io.flush().await
    }

    pub async fn recv(&mut self, timeout: Duration) -> Recv {
        match tokio::time::timeout(timeout, self.framed.next()).await {
            Err(_) => Recv::Timeout,
            Ok(None) => Recv::Closed,
            Ok(Some(Ok(f))) => Recv::Frame(f),
            Ok(Some(Err(FrameError::Io(e)))) if e.kind() == std::io::ErrorKind::UnexpectedEof => Recv::Closed,
            Ok(Some(Err(e))) => Recv::Error(e.to_string()),
        }
    }

    /// The next frame that is not a heartbeat, or what happened instead.
    pub async fn recv_data(&mut self, timeout: Duration) -> Recv {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Recv::Frame(Frame::Heartbeat) => continue,
                other => return other,
            }
        }
    }

    /// HELLO with this crate's versions; returns the relay's answer.
    pub async fn hello(&mut self) -> Recv {
        self.hello_with(SUPPORTED_VERSIONS).await
    }

    /// HELLO listing `versions` (an older client); returns the relay's answer.
    pub async fn hello_with(&mut self, versions: &[u16]) -> Recv {
        if let Err(e) = self.send(Frame::Hello { versions: versions.to_vec() }).await {
            return Recv::Error(e.to_string());
        }
        self.recv(Duration::from_secs(5)).await
    }

    /// HELLO then AUTH_TOKEN; returns the relay's answer to the AUTH (AUTH_OK or CLOSE).
    pub async fn login(&mut self, device_id: DeviceId, credential_hex: &str) -> Recv {
        self.login_with(SUPPORTED_VERSIONS, device_id, credential_hex).await
    }

    /// [`FakeDevice::login`] offering only `versions`.
    pub async fn login_with(&mut self, versions: &[u16], device_id: DeviceId, credential_hex: &str) -> Recv {
        match self.hello_with(versions).await {
            Recv::Frame(Frame::HelloAck { .. }) => {}
            other => return other,
        }
        let credential = Bytes::from(hex::decode(credential_hex).unwrap_or_default());
        if let Err(e) = self.send(Frame::AuthToken { device_id, credential }).await {
            return Recv::Error(e.to_string());
        }
        self.recv(Duration::from_secs(5)).await
    }

    /// HELLO then AUTH_CERT (the client certificate of the TLS handshake); returns the
    /// relay's answer to the AUTH.
    pub async fn login_certificate(&mut self, device_id: DeviceId) -> Recv {
        self.login_certificate_with(SUPPORTED_VERSIONS, device_id).await
    }

    /// [`FakeDevice::login_certificate`] offering only `versions`.
    pub async fn login_certificate_with(&mut self, versions: &[u16], device_id: DeviceId) -> Recv {
        match self.hello_with(versions).await {
            Recv::Frame(Frame::HelloAck { .. }) => {}
            other => return other,
        }
        if let Err(e) = self.send(Frame::AuthCert { device_id }).await {
            return Recv::Error(e.to_string());
        }
        self.recv(Duration::from_secs(5)).await
    }

    /// HELLO then AUTH_PASSWORD.
    pub async fn login_password(&mut self, device_id: DeviceId, msisdn: &str, password: &str) -> Recv {
        match self.hello().await {
            Recv::Frame(Frame::HelloAck { .. }) => {}
            other => return other,
        }
        let auth = Frame::AuthPassword { device_id, msisdn: msisdn.into(), password: password.into() };
        if let Err(e) = self.send(auth).await {
            return Recv::Error(e.to_string());
        }
        self.recv(Duration::from_secs(5)).await
    }

    /// Stops reading, keeping the connection open (slow-consumer tests): the caller simply
    /// holds the device without calling `recv`.
    pub fn into_inner(self) -> Framed<TlsStream<TcpStream>, FrameCodec> {
        self.framed
    }
}

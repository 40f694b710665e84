//! Remote detection workers (`[detect.remote]`): `infer-worker serve --connect
//! tcp://HOST:PORT --token T` from other machines connects here, over TCP or TLS (rustls,
//! `tls_cert`/`tls_key`). After the handshake they are ordinary workers: they take pictures
//! from the same scheduler as local ones (newest picture wins, one in flight per worker, fair
//! across streams), get heartbeats, and a lost connection loses only its picture in flight.
//! See [`super::connection`] for the protocol and the token check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::connection::{self, Link};
use super::service::Detect;
use crate::config::RemoteWorkersConfig;

/// Remote connections served at once (handshaking or working); more wait in the backlog.
const MAX_CONNECTIONS: usize = 256;
/// Of those, connections that have not shown a valid `Hello` yet; more are closed at once,
/// so silent clients cannot keep workers out.
const MAX_HANDSHAKES: usize = 16;
/// A TLS handshake must finish within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `config.listen` (with TLS when configured) and accepts remote workers until the
/// gateway exits. Returns the bound address.
///
/// Errors: the address cannot be bound, or the certificate or key cannot be read.
pub(super) fn listen(config: &RemoteWorkersConfig, detect: Arc<Detect>) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = config.listen else { return Ok(None) };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(acceptor(cert, key)?),
        _ => None,
    };
    let listener = crate::core::net::tcp_listener(addr).map_err(|e| anyhow::anyhow!("cannot listen for remote workers on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    info!(listen = %bound, tls = tls.is_some(), pictures = %config.encoding, "remote detection workers' port listening");
    tokio::spawn(accept(listener, tls, detect));
    Ok(Some(bound))
}

/// rustls (ring) serving `cert`'s chain with `key`.
fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("detect.remote.tls_cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("detect.remote.tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("detect.remote TLS certificate and key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn accept(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, detect: Arc<Detect>) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(place) = places.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "remote workers' accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // An IPv4 worker on a `[::]` listener is shown as IPv4.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
            warn!(%peer, "{MAX_HANDSHAKES} remote worker connections are handshaking already; closing this one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (detect, tls, id) = (detect.clone(), tls.clone(), detect.next_worker_id());
        tokio::spawn(async move {
            let _place = place;
            match tls {
                None => {
                    let (read, write) = tcp.into_split();
                    let link = Link::remote(&detect, Box::new(write), peer, false);
                    connection::serve_link(detect, read, link, id, Some(handshake)).await;
                }
                Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let (read, write) = tokio::io::split(stream);
                        let link = Link::remote(&detect, Box::new(write), peer, true);
                        connection::serve_link(detect, read, link, id, Some(handshake)).await;
                    }
                    Ok(Err(e)) => warn!(%peer, error = %e, "remote worker's TLS handshake failed"),
                    Err(_) => warn!(%peer, "remote worker's TLS handshake took over {TLS_HANDSHAKE_TIMEOUT:?}"),
                },
            }
        });
    }
}

//! The client: one UDP socket and one tokio-quiche connection per origin
//! connection, driven by the same [`Driver`] and HTTP/3 session as the
//! server, in the client role.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_quiche::settings::{CertificateKind, Hooks, TlsCertificatePaths};
use tokio_quiche::socket::Socket;
use tokio_quiche::ConnectionParams;

use crate::bridge::{command_channel, ConnHandle, EventSink};
use crate::driver::Driver;
use crate::h3::session::{first_local_ids, Limits, Role};
use crate::server::Transport;
use crate::tls::{ClientHook, ClientTrust};

/// Connects to `peer` and completes the handshake.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, all plain settings"
)]
pub async fn connect(
    id: u32,
    peer: SocketAddr,
    server_name: Option<String>,
    trust: ClientTrust,
    transport: Transport,
    limits: Limits,
    sink: Arc<EventSink>,
    on_gone: Box<dyn FnOnce() + Send>,
    resume: Option<Vec<u8>>,
    on_session: crate::driver::OnSession,
) -> Result<ConnHandle, String> {
    let bind: SocketAddr = if peer.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    sock.connect(peer).await.map_err(|e| e.to_string())?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let mut socket = Socket::<
        std::sync::Arc<tokio::net::UdpSocket>,
        std::sync::Arc<tokio::net::UdpSocket>,
    >::from_udp(sock)
    .map_err(|e| e.to_string())?;
    // GSO, GRO and the rest the kernel offers, as the server's listener
    // does: batched sends and receives are what bulk transfers need.
    socket.apply_max_capabilities();
    let mut settings = transport.quic_settings();
    let handshake_timeout_ms = transport.handshake_timeout_ms;
    // Verification is set up by the hook; quiche must not override it.
    settings.verify_peer = false;
    let hooks = Hooks {
        connection_hook: Some(Arc::new(ClientHook { trust })),
    };
    let paths = TlsCertificatePaths {
        cert: "",
        private_key: "",
        kind: CertificateKind::X509,
    };
    let mut params = ConnectionParams::new_client(settings, Some(paths), hooks);
    // A ticket from an earlier connection to this server: resume (no
    // certificate exchange). A stale one just means a full handshake.
    params.session = resume;
    let (handle, rx) = command_channel(first_local_ids(Role::Client, limits.raw));
    let driver = Driver::new(Role::Client, id, limits, rx, sink, (local, peer), on_gone)
        .on_session(on_session);
    let connecting =
        tokio_quiche::quic::connect_with_config(socket, server_name.as_deref(), &params, driver);
    // tokio-quiche's client connector does not enforce the handshake timeout
    // (the idle timeout would end it, much later): bound it here.
    match handshake_timeout_ms {
        0 => connecting.await.map_err(|e| e.to_string())?,
        ms => tokio::time::timeout(std::time::Duration::from_millis(ms), connecting)
            .await
            .map_err(|_| format!("no handshake within {ms} ms"))?
            .map_err(|e| e.to_string())?,
    };
    Ok(handle)
}

//! The server: binds the UDP socket, runs tokio-quiche's listener on the
//! addon's runtime, starts one [`Driver`] per accepted connection and keeps
//! the table JS commands are routed through.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tokio_quiche::metrics::DefaultMetrics;
use tokio_quiche::settings::{CertificateKind, Hooks, QuicSettings, TlsCertificatePaths};
use tokio_quiche::socket::QuicListener;
use tokio_quiche::ConnectionParams;
use tokio_stream::StreamExt;

use crate::bridge::{command_channel, Command, ConnHandle, Event, EventKind, EventSink};
use crate::driver::Driver;
use crate::h3::error::H3Code;
use crate::h3::session::{first_local_ids, Limits, Role};
use crate::tls::{Identity, ServerHook};

/// Transport settings shared by the server and the client (validated and
/// defaulted in `src/options.ts`).
#[derive(Clone, Debug)]
pub struct Transport {
    /// Idle timeout in ms (0 = none).
    pub idle_timeout_ms: u64,
    /// Handshake timeout in ms (0 = none).
    pub handshake_timeout_ms: u64,
    /// Peer-initiated bidirectional streams allowed at once.
    pub max_streams_bidi: u64,
    /// Peer-initiated unidirectional streams allowed at once.
    pub max_streams_uni: u64,
    /// Initial connection flow-control window, bytes.
    pub connection_window: u64,
    /// Initial stream flow-control window, bytes.
    pub stream_window: u64,
    /// Largest connection window auto-tuning may grow to, bytes.
    pub max_connection_window: u64,
    /// Largest stream window auto-tuning may grow to, bytes.
    pub max_stream_window: u64,
    /// Congestion control: "cubic", "reno" or "bbr2".
    pub congestion_control: String,
    /// Accept 0-RTT early data.
    pub early_data: bool,
    /// Directory for one qlog file per connection.
    pub qlog_dir: Option<String>,
    /// QUIC DATAGRAM frames (RFC 9221) accepted and sent.
    pub datagrams: bool,
    /// Datagrams held in each direction before the oldest is dropped.
    pub datagram_queue_length: usize,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<Vec<u8>>,
}

/// Connection IDs either side may keep issued to the other at a time (the
/// `active_connection_id_limit` transport parameter; tokio-quiche tops ours
/// up to the smaller of the two sides' limits). Not the default of 2:
/// quiche 0.30 takes a RETIRE_CONNECTION_ID for an ID already retired as a
/// protocol violation and closes the connection whenever only one of its
/// IDs is left (cloudflare/quiche#1833). A client that moves to our second
/// ID and retires the first leaves exactly one, so a retransmitted copy of
/// its RETIRE (sent before we acknowledged the first: a server stalled for
/// a probe timeout) cost the connection. With 4 (quic-go allows 4, aioquic
/// 8), three are left, and a duplicate finds nothing to remove. A peer that
/// allows only 2 still gets only 2.
const ACTIVE_CONNECTION_IDS: u64 = 4;

impl Transport {
    /// The QUIC settings these options stand for.
    pub fn quic_settings(&self) -> QuicSettings {
        let mut s = QuicSettings::default();
        s.alpn = self.alpn.clone();
        s.enable_dgram = self.datagrams;
        s.dgram_recv_max_queue_len = self.datagram_queue_length;
        s.dgram_send_max_queue_len = self.datagram_queue_length;
        s.max_idle_timeout =
            (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms));
        s.handshake_timeout = (self.handshake_timeout_ms > 0)
            .then(|| Duration::from_millis(self.handshake_timeout_ms));
        s.initial_max_streams_bidi = self.max_streams_bidi;
        s.initial_max_streams_uni = self.max_streams_uni;
        s.initial_max_data = self.connection_window;
        s.initial_max_stream_data_bidi_local = self.stream_window;
        s.initial_max_stream_data_bidi_remote = self.stream_window;
        s.initial_max_stream_data_uni = self.stream_window;
        s.max_connection_window = self.max_connection_window.max(self.connection_window);
        s.max_stream_window = self.max_stream_window.max(self.stream_window);
        s.cc_algorithm = self.congestion_control.clone();
        s.enable_early_data = self.early_data;
        s.qlog_dir = self.qlog_dir.clone();
        s.active_connection_id_limit = ACTIVE_CONNECTION_IDS;
        s
    }
}

/// Everything `listen` needs.
pub struct ServerConfig {
    /// Address to bind.
    pub addr: SocketAddr,
    /// For `::`, whether IPv4 is accepted too.
    pub dual_stack: bool,
    /// Certificate chain and key.
    pub identity: Identity,
    /// Transport settings.
    pub transport: Transport,
    /// HTTP/3 limits.
    pub limits: Limits,
    /// Stateless Retry before accepting a connection.
    pub retry: bool,
}

/// Error starting a server, with a stable code.
#[derive(Debug)]
pub struct StartError {
    /// `ERR_H3_...`.
    pub code: &'static str,
    /// Message (not API).
    pub message: String,
}

type ConnTable = Arc<Mutex<HashMap<u32, Arc<ConnHandle>>>>;

/// A running server.
pub struct Server {
    sink: Arc<EventSink>,
    conns: ConnTable,
    local: SocketAddr,
    stop_accepting: watch::Sender<bool>,
    handle: Handle,
}

fn bind(addr: SocketAddr, dual_stack: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(!dual_stack)?;
    }
    // Room for bursts: a full congestion window of packets.
    let _ = sock.set_recv_buffer_size(8 << 20);
    let _ = sock.set_send_buffer_size(8 << 20);
    sock.bind(&addr.into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// tokio-quiche's packet router notices that nobody accepts any more only
/// when it is woken by a packet: send it one, then wait until the port is
/// free, so that `close()` resolving means the socket is closed.
async fn release_socket(local: SocketAddr) {
    let target = match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new([127, 0, 0, 1].into(), local.port())
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), local.port())
        }
        _ => local,
    };
    let bind_any: SocketAddr = if target.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let Ok(waker) = tokio::net::UdpSocket::bind(bind_any).await else {
        return;
    };
    for attempt in 0..200 {
        if attempt % 10 == 0 {
            let _ = waker.send_to(&[0u8], target).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if std::net::UdpSocket::bind(local).is_ok() {
            return;
        }
    }
}

impl Server {
    /// Binds and starts accepting. Events go to `sink`.
    pub fn start(
        handle: Handle,
        cfg: ServerConfig,
        sink: Arc<EventSink>,
    ) -> Result<Self, StartError> {
        let sock = bind(cfg.addr, cfg.dual_stack).map_err(|e| StartError {
            code: if e.kind() == std::io::ErrorKind::AddrInUse {
                "ERR_H3_ADDRESS_IN_USE"
            } else {
                "ERR_H3_LISTEN"
            },
            message: format!("cannot bind UDP {}: {e}", cfg.addr),
        })?;
        let local = sock.local_addr().map_err(|e| StartError {
            code: "ERR_H3_LISTEN",
            message: e.to_string(),
        })?;
        let _guard = handle.enter();
        let tokio_sock = tokio::net::UdpSocket::from_std(sock).map_err(|e| StartError {
            code: "ERR_H3_LISTEN",
            message: e.to_string(),
        })?;
        let mut listener = QuicListener::try_from(tokio_sock).map_err(|e| StartError {
            code: "ERR_H3_LISTEN",
            message: e.to_string(),
        })?;
        listener.apply_max_capabilities();

        let mut settings = cfg.transport.quic_settings();
        settings.disable_client_ip_validation = !cfg.retry;
        let hooks = Hooks {
            connection_hook: Some(Arc::new(ServerHook {
                identity: cfg.identity,
            })),
        };
        // The hook builds the TLS context from memory; these paths are never opened.
        let paths = TlsCertificatePaths {
            cert: "",
            private_key: "",
            kind: CertificateKind::X509,
        };
        let params = ConnectionParams::new_server(settings, paths, hooks);
        let mut streams =
            tokio_quiche::listen_with_capabilities([listener], params, DefaultMetrics).map_err(
                |e| StartError {
                    code: "ERR_H3_LISTEN",
                    message: e.to_string(),
                },
            )?;
        let mut incoming = streams.pop().expect("one stream per socket");

        let conns: ConnTable = Arc::new(Mutex::new(HashMap::new()));
        let gone = Arc::new(Notify::new());
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let next_id = Arc::new(AtomicU32::new(1));
        let limits = cfg.limits;
        {
            let (sink, conns) = (sink.clone(), conns.clone());
            handle.spawn(async move {
                loop {
                    tokio::select! {
                        // Stopping wins over a connection that arrives at the
                        // same time: close() has already sent its GOAWAYs.
                        biased;
                        _ = stop_rx.changed() => break,
                        next = incoming.next() => match next {
                            Some(Ok(initial)) => {
                                let id = next_id.fetch_add(1, Ordering::Relaxed);
                                let (handle, rx) = command_channel(first_local_ids(Role::Server, limits.raw));
                                conns.lock().unwrap().insert(id, Arc::new(handle));
                                let on_gone = {
                                    let (conns, gone) = (conns.clone(), gone.clone());
                                    Box::new(move || {
                                        conns.lock().unwrap().remove(&id);
                                        gone.notify_waiters();
                                    })
                                };
                                let driver = Driver::new(
                                    Role::Server, id, limits.clone(), rx, sink.clone(),
                                    (initial.local_addr(), initial.peer_addr()), on_gone,
                                );
                                initial.start(driver);
                            },
                            Some(Err(_)) => continue, // a bad Initial; the listener goes on
                            None => break,
                        },
                    }
                }
                drop(incoming);
                loop {
                    let notified = gone.notified();
                    if conns.lock().unwrap().is_empty() {
                        break;
                    }
                    notified.await;
                }
                release_socket(local).await;
                sink.push(Event::new(EventKind::ServerClosed, 0, 0));
            });
        }
        Ok(Self {
            sink,
            conns,
            local,
            stop_accepting: stop_tx,
            handle,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The batch queue.
    pub fn sink(&self) -> &Arc<EventSink> {
        &self.sink
    }

    /// Connection `conn`'s handle, while it is open.
    pub fn conn(&self, conn: u32) -> Option<Arc<ConnHandle>> {
        self.conns.lock().unwrap().get(&conn).cloned()
    }

    /// Routes a command to connection `conn`; false if it is gone.
    pub fn command(&self, conn: u32, cmd: Command) -> bool {
        self.conn(conn).is_some_and(|c| c.command(cmd))
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Stops accepting, sends GOAWAY everywhere, and closes what is still
    /// open after `grace`. A `ServerClosed` event follows when all are gone.
    pub fn close(&self, grace: Duration) {
        let _ = self.stop_accepting.send(true);
        let senders: Vec<_> = self.conns.lock().unwrap().values().cloned().collect();
        for c in &senders {
            c.command(Command::GoAway);
        }
        let conns = self.conns.clone();
        self.handle.spawn(async move {
            tokio::time::sleep(grace).await;
            let senders: Vec<_> = conns.lock().unwrap().values().cloned().collect();
            for c in senders {
                c.command(Command::Close {
                    code: H3Code::NoError.code(),
                    reason: "server closed".into(),
                });
            }
        });
    }
}

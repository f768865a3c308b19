//! The per-connection application run by tokio-quiche's IoWorker: it owns
//! the HTTP/3 [`Session`], applies commands from JS, and hands the session's
//! events to the shared [`EventSink`] once per worker turn.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_quiche::metrics::Metrics;
use tokio_quiche::quic::{HandshakeInfo, QuicheConnection};
use tokio_quiche::{ApplicationOverQuic, QuicResult};

use crate::bridge::{Command, CommandReceiver, ConnInfo, ConnStats, Event, EventKind, EventSink};
use crate::h3::error::{ConnError, H3Code};
use crate::h3::session::{Limits, Role, Session};

/// Called once when the connection is gone (unregisters its command sender).
pub type OnGone = Box<dyn FnOnce() + Send>;

/// Client: called once with the TLS session (ticket) the server gave, for
/// resuming on a later connection.
pub type OnSession = Box<dyn FnOnce(Vec<u8>) + Send>;

/// One connection's driver.
pub struct Driver {
    id: u32,
    session: Session,
    rx: CommandReceiver,
    pending: Vec<Command>,
    sink: Arc<EventSink>,
    local: SocketAddr,
    peer: SocketAddr,
    established: bool,
    draining: bool,
    /// Close with this code once finished exchanges are acknowledged, and
    /// not in a turn that wrote stream data (it must leave in a packet
    /// before CONNECTION_CLOSE; the peer's ACK brings the next turn).
    close_when_delivered: Option<u64>,
    /// JS can no longer send commands.
    rx_closed: bool,
    on_gone: Option<OnGone>,
    on_session: Option<OnSession>,
}

impl Driver {
    /// A driver for connection `id` between `addrs` (local, peer).
    pub fn new(
        role: Role,
        id: u32,
        limits: Limits,
        rx: CommandReceiver,
        sink: Arc<EventSink>,
        addrs: (SocketAddr, SocketAddr),
        on_gone: OnGone,
    ) -> Self {
        let (local, peer) = addrs;
        Self {
            id,
            session: Session::new(role, id, limits),
            rx,
            pending: Vec::new(),
            sink,
            local,
            peer,
            established: false,
            draining: false,
            close_when_delivered: None,
            rx_closed: false,
            on_gone: Some(on_gone),
            on_session: None,
        }
    }

    /// Client: hands the server's session ticket to `f` once it arrives.
    pub fn on_session(mut self, f: OnSession) -> Self {
        self.on_session = Some(f);
        self
    }

    fn fail(&mut self, q: &mut QuicheConnection, e: ConnError) {
        let _ = q.close(true, e.code.code(), e.reason.as_bytes());
    }

    fn apply(&mut self, q: &mut QuicheConnection, cmd: Command) {
        let s = &mut self.session;
        match cmd {
            Command::Headers {
                stream,
                fields,
                fin,
            } => s.send_headers(q, stream, &fields.parts(), fin),
            Command::Write { stream, data, fin } => s.write(stream, data, fin),
            Command::Grant { stream, bytes } => s.grant(stream, bytes),
            Command::Reset { stream, code } => s.reset(q, stream, code),
            Command::StopSending { stream, code } => s.stop_sending(q, stream, code),
            Command::GoAway => {
                s.goaway();
                self.draining = true;
            }
            Command::Close { code, reason } => {
                let _ = q.close(true, code, reason.as_bytes());
            }
            Command::CloseWhenDelivered { code } => self.close_when_delivered = Some(code),
            Command::Stats(cb) => {
                let mut st = stats_of(q);
                st.dgram = s.dgram;
                st.dgram.dropped_recv_queue_full =
                    (q.stats().dgram_recv as u64).saturating_sub(s.dgram.received);
                cb(st)
            }
            Command::OpenStream { stream, session } => s.open_stream(q, stream, session),
            Command::Datagram { stream, data } => s.send_datagram(q, stream, data),
            Command::CloseSession {
                stream,
                code,
                reason,
            } => s.close_session(q, stream, code, &reason),
        }
    }

    fn flush_events(&mut self) {
        self.sink.push_all(&mut self.session.events);
    }

    /// After a migration (NAT rebinding, a new client address), tells JS
    /// the peer's new address: quiche moved the active path to it.
    fn check_peer_address(&mut self, q: &QuicheConnection) {
        if !self.established {
            return;
        }
        let Some(p) = q.path_stats().find(|p| p.active) else {
            return;
        };
        if p.peer_addr == self.peer && p.local_addr == self.local {
            return;
        }
        self.peer = p.peer_addr;
        self.local = p.local_addr;
        let mut ev = Event::new(EventKind::PeerAddress, self.id, 0);
        ev.info = Some(self.conn_info(q));
        self.sink.push(ev);
    }

    fn conn_info(&self, q: &QuicheConnection) -> ConnInfo {
        ConnInfo {
            remote_address: self.peer.ip().to_string(),
            remote_port: self.peer.port(),
            local_address: self.local.ip().to_string(),
            local_port: self.local.port(),
            alpn: String::from_utf8_lossy(q.application_proto()).into_owned(),
            resumed: q.is_resumed(),
            server_name: q.server_name().map(str::to_owned),
            max_datagram_size: q.dgram_max_writable_len().unwrap_or(0) as u32,
        }
    }
}

/// Transport statistics of `q`.
pub fn stats_of(q: &QuicheConnection) -> ConnStats {
    let s = q.stats();
    let mut out = ConnStats {
        sent_packets: s.sent as u64,
        recv_packets: s.recv as u64,
        lost_packets: s.lost as u64,
        sent_bytes: s.sent_bytes,
        recv_bytes: s.recv_bytes,
        ..Default::default()
    };
    if let Some(p) = q.path_stats().find(|p| p.active) {
        out.rtt_ms = p.rtt.as_secs_f64() * 1000.0;
        out.cwnd = p.cwnd as u64;
    }
    out
}

impl ApplicationOverQuic for Driver {
    fn on_conn_established(
        &mut self,
        q: &mut QuicheConnection,
        _info: &HandshakeInfo,
    ) -> QuicResult<()> {
        self.established = true;
        if let Err(e) = self.session.start(q) {
            self.fail(q, e);
        }
        let mut ev = Event::new(EventKind::ConnOpen, self.id, 0);
        ev.info = Some(self.conn_info(q));
        self.sink.push(ev);
        Ok(())
    }

    fn should_act(&self) -> bool {
        self.established
    }

    async fn wait_for_data(&mut self, _q: &mut QuicheConnection) -> QuicResult<()> {
        if !self.pending.is_empty() {
            return Ok(());
        }
        // A stream timer (headers, body, send timeouts) wakes the worker
        // too; `process_writes` then applies it. Both arms are cancel-safe.
        let deadline = self.session.next_deadline();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending::<()>().await,
            }
        };
        let (rx, pending, closed) = (&self.rx, &mut self.pending, self.rx_closed);
        let commands = async move {
            if closed {
                // Nobody can send commands any more: only packets and
                // timers drive this connection now.
                return std::future::pending::<bool>().await;
            }
            rx.recv_all(pending).await
        };
        tokio::select! {
            more = commands => if !more {
                self.rx_closed = true;
            },
            () = timer => {}
        }
        Ok(())
    }

    fn process_reads(&mut self, q: &mut QuicheConnection) -> QuicResult<()> {
        if let Err(e) = self.session.process_reads(q) {
            self.fail(q, e);
        }
        self.session.poll_stopped(q);
        self.session.release_scratch();
        self.check_peer_address(q);
        if self.on_session.is_some() {
            if let Some(ticket) = q.session() {
                let f = self.on_session.take().unwrap();
                f(ticket.to_vec());
            }
        }
        Ok(())
    }

    fn process_writes(&mut self, q: &mut QuicheConnection) -> QuicResult<()> {
        let writes_before = self.session.writes;
        let mut cmds = std::mem::take(&mut self.pending);
        self.rx.try_recv_all(&mut cmds);
        let had_cmds = !cmds.is_empty();
        for c in cmds {
            self.apply(q, c);
        }
        if self.session.next_deadline().is_some() {
            self.session.check_timers(q, std::time::Instant::now());
        }
        if had_cmds {
            // Credit granted by JS may unblock reads.
            if let Err(e) = self.session.process_reads(q) {
                self.fail(q, e);
            }
        }
        self.session.flush(q);
        // A client's GOAWAY means it is shutting down: rather than leave it
        // waiting for our idle timeout, close once its requests are
        // answered and delivered (RFC 9114 §5.2 lets either end close then).
        if self.session.peer_goaway && !self.draining {
            self.draining = true;
        }
        if self.draining
            && !q.is_closed()
            && self.session.active_requests() == 0
            && self.session.all_delivered(q)
        {
            let _ = q.close(true, H3Code::NoError.code(), b"");
        }
        if let Some(code) = self.close_when_delivered {
            let wrote = self.session.writes != writes_before;
            if !wrote && !q.is_closed() && self.session.finished_exchanges_delivered(q) {
                let _ = q.close(true, code, b"");
            }
        }
        self.session.release_scratch();
        self.flush_events();
        Ok(())
    }

    fn on_conn_close<M: Metrics>(
        &mut self,
        q: &mut QuicheConnection,
        _metrics: &M,
        result: &QuicResult<()>,
    ) {
        self.flush_events();
        let mut ev = Event::new(EventKind::ConnClose, self.id, 0);
        if let Some(e) = q.peer_error() {
            ev.code = e.error_code;
            ev.fin = true;
            ev.text = Some(String::from_utf8_lossy(&e.reason).into_owned());
        } else if let Some(e) = q.local_error() {
            ev.code = e.error_code;
            ev.text = Some(String::from_utf8_lossy(&e.reason).into_owned());
        } else if q.is_timed_out() {
            ev.code = 0;
            ev.text = Some("idle timeout".into());
        } else if let Err(e) = result {
            ev.text = Some(e.to_string());
        }
        if ev.text.is_none() && !self.established {
            ev.text = Some("handshake failed".into());
        }
        // A connection that never reached JS is not reported.
        if self.established {
            self.sink.push(ev);
        }
        if let Some(f) = self.on_gone.take() {
            f();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(f) = self.on_gone.take() {
            f();
        }
    }
}

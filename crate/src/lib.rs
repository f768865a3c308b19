//! napi bindings of h3node: conversions and lifetimes only. Protocol logic
//! lives in `h3/`, connection driving in `driver.rs`, sockets in
//! `server.rs` / `client.rs`.
//!
//! This crate is an rlib; `addon/` links it into the cdylib Node loads, with
//! LTO (see `addon/src/lib.rs` for why that is a crate of its own).
//!
//! | file | what lives there |
//! |---|---|
//! | `lib.rs` | napi exports |
//! | `bridge.rs` | events and commands that cross to JS; the batch queue |
//! | `runtime.rs` | the tokio runtime the addon owns |
//! | `server.rs` / `client.rs` | sockets, tokio-quiche listener / connector |
//! | `driver.rs` | per-connection `ApplicationOverQuic` |
//! | `tls.rs` | PEM checks, development certificates, TLS hooks |
//! | `h3/` | the HTTP/3 layer |

#![deny(clippy::all)]

pub mod bridge;
pub mod client;
pub mod driver;
pub mod h3;
pub mod runtime;
pub mod server;
pub mod tls;

/// Rust allocations of the addon (quiche, tokio-quiche, the HTTP/3 layer,
/// the bridge) go to mimalloc instead of the system malloc. Under small
/// requests the I/O thread spent about a quarter of its time in glibc's
/// malloc and free (half of the calls from the HTTP/3 layer, a third from
/// quiche); with mimalloc it executes 10% fewer instructions per request and
/// the `for await` hello world answers about 8% more requests per second on
/// one core (benchmark/README.md, "Allocator"). The cost is memory: about
/// 6 KiB more per idle connection. Cargo feature `mimalloc` (default).
#[cfg(all(feature = "mimalloc", not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

use bridge::{Command, ConnStats, EventSink};
use h3::session::Limits;
use server::{ServerConfig, Transport};

type BatchFn = ThreadsafeFunction<u32, (), u32, Status, false>;

fn coded(code: &str, message: impl std::fmt::Display) -> Error {
    // The JS layer turns "[CODE] message" into an H3Error with `code`.
    Error::new(Status::GenericFailure, format!("[{code}] {message}"))
}

/// Transport and HTTP/3 settings, already validated and defaulted by JS.
#[napi(object)]
pub struct NativeTransport {
    pub idle_timeout_ms: f64,
    pub handshake_timeout_ms: f64,
    pub max_streams_bidi: f64,
    pub max_streams_uni: f64,
    pub connection_window: f64,
    pub stream_window: f64,
    pub max_connection_window: f64,
    pub max_stream_window: f64,
    pub congestion_control: String,
    pub early_data: bool,
    pub qlog_dir: Option<String>,
    pub max_header_size: f64,
    pub max_header_count: f64,
    pub stream_read_window: f64,
    /// Runtime threads; 0 = the default for the cores.
    pub threads: f64,
    /// Process-wide wake-up limits of the runtime (`None` = the default for
    /// the cores; a size of 0 = no count limit).
    pub event_batch_delay_us: Option<f64>,
    pub event_batch_size: Option<f64>,
    pub datagrams: bool,
    pub datagram_queue_length: f64,
    pub webtransport: bool,
    pub max_web_transport_sessions: f64,
    pub max_buffered_streams: f64,
    /// ALPN protocols; empty = HTTP/3 ("h3").
    pub alpn: Vec<String>,
    /// Raw QUIC (no HTTP/3).
    pub raw: bool,
    /// Stream timeouts, ms (0 = off).
    pub headers_timeout_ms: f64,
    pub body_timeout_ms: f64,
    pub send_timeout_ms: f64,
    /// Peer stream resets allowed per `stream_reset_window_ms` (0 = no limit).
    pub max_stream_resets: f64,
    pub stream_reset_window_ms: f64,
}

/// `ms` as a timeout; 0 turns it off.
fn timeout(ms: f64) -> Option<std::time::Duration> {
    (ms > 0.0).then(|| std::time::Duration::from_millis(ms as u64))
}

impl NativeTransport {
    /// What these options ask of the process-wide runtime.
    fn wanted(&self) -> runtime::Wanted {
        runtime::Wanted {
            threads: (self.threads > 0.0).then_some(self.threads as usize),
            batch_delay_us: self.event_batch_delay_us.map(|v| v as u64),
            batch_size: self.event_batch_size.map(|v| v as usize),
        }
    }

    fn split(&self) -> (Transport, Limits) {
        (
            Transport {
                idle_timeout_ms: self.idle_timeout_ms as u64,
                handshake_timeout_ms: self.handshake_timeout_ms as u64,
                max_streams_bidi: self.max_streams_bidi as u64,
                max_streams_uni: self.max_streams_uni as u64,
                connection_window: self.connection_window as u64,
                stream_window: self.stream_window as u64,
                max_connection_window: self.max_connection_window as u64,
                max_stream_window: self.max_stream_window as u64,
                congestion_control: self.congestion_control.clone(),
                early_data: self.early_data,
                qlog_dir: self.qlog_dir.clone(),
                datagrams: self.datagrams,
                datagram_queue_length: self.datagram_queue_length as usize,
                alpn: if self.alpn.is_empty() {
                    vec![b"h3".to_vec()]
                } else {
                    self.alpn.iter().map(|a| a.as_bytes().to_vec()).collect()
                },
            },
            Limits {
                max_field_section_size: self.max_header_size as u64,
                max_header_count: self.max_header_count as usize,
                stream_read_window: self.stream_read_window as u64,
                enable_connect_protocol: true,
                datagrams: self.datagrams,
                // Browsers open sessions only alongside HTTP/3 datagrams.
                webtransport: self.webtransport && self.datagrams && !self.raw,
                max_wt_sessions: self.max_web_transport_sessions as u64,
                max_buffered_streams: self.max_buffered_streams as usize,
                raw: self.raw,
                headers_timeout: timeout(self.headers_timeout_ms),
                body_timeout: timeout(self.body_timeout_ms),
                send_timeout: timeout(self.send_timeout_ms),
                max_resets: self.max_stream_resets as u32,
                reset_window: std::time::Duration::from_millis(self.stream_reset_window_ms as u64),
            },
        )
    }
}

/// Server settings from JS.
#[napi(object)]
pub struct NativeServerOptions {
    pub host: String,
    pub port: u32,
    pub ipv6_only: bool,
    pub cert: Buffer,
    pub key: Buffer,
    pub retry: bool,
    pub transport: NativeTransport,
}

/// Connection facts of a `ConnOpen` or `PeerAddress` event.
#[napi(object)]
pub struct NativeConnInfo {
    pub remote_address: String,
    pub remote_port: u32,
    pub local_address: String,
    pub local_port: u32,
    pub alpn: String,
    pub resumed: bool,
    pub server_name: Option<String>,
    pub max_datagram_size: u32,
}

/// A batch of events, packed so that crossing into JS costs a few N-API
/// calls per batch rather than one per field of every event (`src/native.ts`
/// unpacks it). Per event, `meta` holds five numbers: kind, connection,
/// stream, code and flags (1 fin, 2 early, 4 has data, 8 has headers,
/// 16 has text, 32 has info); the optional parts follow in their own
/// arrays, in event order. A header section is one string, its names and
/// values joined with NUL, which no valid field contains (RFC 9114 §4.2).
#[napi(object)]
pub struct NativeBatch {
    pub meta: Float64Array,
    pub data: Vec<Buffer>,
    pub headers: Vec<String>,
    pub texts: Vec<String>,
    pub infos: Vec<NativeConnInfo>,
}

/// The first `n` NUL-separated parts of `text` (one header section of
/// `submit`) and what follows them.
fn take_parts(text: &str, n: usize) -> (&str, &str) {
    if n == 0 {
        return ("", text);
    }
    let mut seen = 0;
    for (i, b) in text.bytes().enumerate() {
        if b == 0 {
            seen += 1;
            if seen == n {
                return (&text[..i], &text[i + 1..]);
            }
        }
    }
    (text, "")
}

fn to_batch(mut events: Vec<bridge::Event>) -> NativeBatch {
    bridge::join_body_pieces(&mut events);
    let mut meta = Vec::with_capacity(events.len() * 5);
    let (mut data, mut headers, mut texts, mut infos) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in events {
        let mut flags = u32::from(e.fin) | (u32::from(e.early) << 1);
        if let Some(d) = e.data {
            flags |= 4;
            data.push(Buffer::from(d));
        }
        if let Some(h) = e.headers {
            flags |= 8;
            headers.push(h.into_joined());
        }
        if let Some(t) = e.text {
            flags |= 16;
            texts.push(t);
        }
        if let Some(i) = e.info {
            flags |= 32;
            infos.push(NativeConnInfo {
                remote_address: i.remote_address,
                remote_port: i.remote_port.into(),
                local_address: i.local_address,
                local_port: i.local_port.into(),
                alpn: i.alpn,
                resumed: i.resumed,
                server_name: i.server_name,
                max_datagram_size: i.max_datagram_size,
            });
        }
        meta.extend_from_slice(&[
            f64::from(e.kind),
            f64::from(e.conn),
            e.stream as f64,
            e.code as f64,
            f64::from(flags),
        ]);
    }
    NativeBatch {
        meta: Float64Array::new(meta),
        data,
        headers,
        texts,
        infos,
    }
}

/// Transport statistics of one connection.
#[napi(object)]
pub struct NativeStats {
    pub rtt_ms: f64,
    pub cwnd: f64,
    pub sent_packets: f64,
    pub recv_packets: f64,
    pub lost_packets: f64,
    pub sent_bytes: f64,
    pub recv_bytes: f64,
    pub datagrams_received: f64,
    pub datagrams_sent: f64,
    pub datagrams_dropped_unknown_flow: f64,
    pub datagrams_dropped_send_queue_full: f64,
    pub datagrams_dropped_too_large: f64,
    pub datagrams_dropped_receive_queue_full: f64,
}

impl From<ConnStats> for NativeStats {
    fn from(s: ConnStats) -> Self {
        Self {
            rtt_ms: s.rtt_ms,
            cwnd: s.cwnd as f64,
            sent_packets: s.sent_packets as f64,
            recv_packets: s.recv_packets as f64,
            lost_packets: s.lost_packets as f64,
            sent_bytes: s.sent_bytes as f64,
            recv_bytes: s.recv_bytes as f64,
            datagrams_received: s.dgram.received as f64,
            datagrams_sent: s.dgram.sent as f64,
            datagrams_dropped_unknown_flow: s.dgram.dropped_unknown_flow as f64,
            datagrams_dropped_send_queue_full: s.dgram.dropped_send_queue_full as f64,
            datagrams_dropped_too_large: s.dgram.dropped_too_large as f64,
            datagrams_dropped_receive_queue_full: s.dgram.dropped_recv_queue_full as f64,
        }
    }
}

fn sink_for(on_batch: BatchFn) -> Arc<EventSink> {
    EventSink::new(Box::new(move || {
        on_batch.call(0, ThreadsafeFunctionCallMode::NonBlocking);
    }))
}

fn stats_promise(env: &Env, send: impl FnOnce(Command) -> bool) -> Result<Object<'_>> {
    let (deferred, promise) = env.create_deferred::<Option<NativeStats>, StatsResolve>()?;
    let reply = StatsReply(Some(deferred));
    // If the connection is gone, the command (and the reply in it) is dropped
    // unanswered; StatsReply's Drop then settles the promise with null.
    send(Command::Stats(Box::new(move |s| {
        reply.send(Some(s.into()))
    })));
    Ok(promise)
}

type StatsResolve = Box<dyn FnOnce(Env) -> Result<Option<NativeStats>> + Send>;

/// Settles a stats promise exactly once: with the figures, or with null when
/// dropped unanswered.
struct StatsReply(Option<napi::JsDeferred<Option<NativeStats>, StatsResolve>>);

impl StatsReply {
    fn send(mut self, value: Option<NativeStats>) {
        if let Some(d) = self.0.take() {
            d.resolve(Box::new(move |_| Ok(value)));
        }
    }
}

impl Drop for StatsReply {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.resolve(Box::new(|_| Ok(None)));
        }
    }
}

/// Opens a stream on `c` (`session` < 0: none); its id, or -1 if gone.
fn open_stream(c: Option<Arc<bridge::ConnHandle>>, bidi: bool, session: i64) -> i64 {
    let Some(c) = c else { return -1 };
    let stream = c.next_stream_id(bidi);
    let session = u64::try_from(session).ok();
    match c.command(Command::OpenStream { stream, session }) {
        true => stream as i64,
        false => -1,
    }
}

/// A listening HTTP/3 server.
#[napi]
pub struct NativeServer {
    inner: server::Server,
    released: bool,
}

impl NativeServer {
    fn conn(&self, id: u32) -> Option<Arc<bridge::ConnHandle>> {
        self.inner.conn(id)
    }

    fn send(&self, conn: u32, cmd: Command) -> bool {
        self.inner.command(conn, cmd)
    }

    fn sink(&self) -> &Arc<EventSink> {
        self.inner.sink()
    }

    fn open_connections(&self) -> usize {
        self.inner.connection_count()
    }
}

#[napi]
impl NativeServer {
    /// Binds and starts; `on_batch` is called (with no useful argument) when
    /// events are waiting in `take_events()`.
    #[napi(
        factory,
        ts_args_type = "options: NativeServerOptions, onBatch: (err: null | Error, value: number) => void"
    )]
    pub fn listen(options: NativeServerOptions, on_batch: BatchFn) -> Result<NativeServer> {
        let ip: IpAddr = options.host.parse().map_err(|_| {
            coded(
                "ERR_H3_INVALID_OPTION",
                format!("host {:?} is not an IP address", options.host),
            )
        })?;
        let identity = tls::Identity::from_pem(&options.cert, &options.key)
            .map_err(|e| coded(e.code, e.message))?;
        let (transport, limits) = options.transport.split();
        let handle =
            runtime::acquire(options.transport.wanted()).map_err(|e| coded("ERR_H3_RUNTIME", e))?;
        let cfg = ServerConfig {
            addr: SocketAddr::new(ip, options.port as u16),
            dual_stack: ip.is_ipv6() && !options.ipv6_only,
            identity,
            transport,
            limits,
            retry: options.retry,
        };
        match server::Server::start(handle, cfg, sink_for(on_batch)) {
            Ok(inner) => Ok(NativeServer {
                inner,
                released: false,
            }),
            Err(e) => {
                runtime::release();
                Err(coded(e.code, e.message))
            }
        }
    }

    /// The bound address.
    #[napi]
    pub fn address(&self) -> Vec<String> {
        let a = self.inner.local_addr();
        vec![
            a.ip().to_string(),
            a.port().to_string(),
            if a.is_ipv6() { "IPv6" } else { "IPv4" }.into(),
        ]
    }

    /// GOAWAY to every connection, stop accepting, close the rest after
    /// `grace_ms`. A ServerClosed event follows.
    #[napi]
    pub fn close(&self, grace_ms: f64) {
        self.inner
            .close(Duration::from_millis(grace_ms.max(0.0) as u64));
    }

    /// Drops the JS callback and this server's hold on the runtime. Call
    /// once, after the ServerClosed event.
    #[napi]
    pub fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.inner.sink().detach();
            runtime::release();
        }
    }
}

/// The per-connection commands NativeServer and NativeClient both take,
/// written once and expanded into each class (napi wants them on the class).
/// Each class provides `conn`, `send`, `sink` and `open_connections`.
macro_rules! connection_commands {
    ($class:ident) => {
        #[napi]
        impl $class {
            /// Takes every event queued since the last call, packed.
            #[napi]
            pub fn take_batch(&self) -> NativeBatch {
                to_batch(self.sink().take())
            }

            /// Open connections.
            #[napi]
            pub fn connection_count(&self) -> u32 {
                self.open_connections() as u32
            }

            /// Sends a header section (names and values joined with NUL): a
            /// response head, trailers, or a client's request.
            #[napi]
            pub fn send_headers(&self, conn: u32, stream: i64, headers: String, fin: bool) -> bool {
                let stream = stream as u64;
                let Some(fields) = bridge::Fields::new(headers) else {
                    return false;
                };
                self.send(
                    conn,
                    Command::Headers {
                        stream,
                        fields,
                        fin,
                    },
                )
            }

            /// Applies the stream commands JS queued during one event-loop
            /// turn (`CommandQueue` in src/native.ts), in order, in one
            /// N-API call: five numbers per command in `ops` (op, connection,
            /// stream, argument, fin). A header section (op 1) takes the next
            /// `argument` parts of `text`, where the names and values of all
            /// sections are joined with NUL; a write (op 2) the next
            /// `argument` bytes of `bytes`, where all small writes are
            /// packed (one string and one buffer cross, not one per
            /// command). Grant (3) takes the argument as bytes, reset (4)
            /// and stop-sending (5) as the code.
            #[napi]
            pub fn submit(&self, ops: Float64Array, text: String, bytes: &[u8]) {
                let mut text = text.as_str();
                let mut bytes = bytes;
                let mut groups = bridge::ByConnection::default();
                for op in ops.chunks_exact(5) {
                    let (conn, stream, arg, fin) =
                        (op[1] as u32, op[2] as u64, op[3], op[4] != 0.0);
                    let cmd = match op[0] as u32 {
                        1 => {
                            let (section, rest) = take_parts(text, arg as usize);
                            text = rest;
                            match bridge::Fields::new(section.to_owned()) {
                                Some(fields) => Command::Headers {
                                    stream,
                                    fields,
                                    fin,
                                },
                                None => continue,
                            }
                        }
                        2 => {
                            let n = (arg as usize).min(bytes.len());
                            let (data, rest) = bytes.split_at(n);
                            bytes = rest;
                            Command::Write {
                                stream,
                                data: data.to_vec(),
                                fin,
                            }
                        }
                        3 => Command::Grant {
                            stream,
                            bytes: arg as u64,
                        },
                        4 => Command::Reset {
                            stream,
                            code: arg as u64,
                        },
                        5 => Command::StopSending {
                            stream,
                            code: arg as u64,
                        },
                        _ => continue,
                    };
                    groups.push(conn, cmd);
                }
                // Each connection is looked up once and its commands are
                // queued under one lock with one wake-up, however the
                // connections interleave in `ops`.
                for (conn, mut cmds) in groups.into_groups() {
                    if let Some(c) = self.conn(conn) {
                        c.commands(&mut cmds);
                    }
                }
            }

            /// Sends body bytes (`fin` ends the stream).
            #[napi]
            pub fn write(&self, conn: u32, stream: i64, data: &[u8], fin: bool) -> bool {
                let (stream, data) = (stream as u64, data.to_vec());
                self.send(conn, Command::Write { stream, data, fin })
            }

            /// Returns read credit for a received body.
            #[napi]
            pub fn grant(&self, conn: u32, stream: i64, bytes: f64) -> bool {
                let (stream, bytes) = (stream as u64, bytes as u64);
                self.send(conn, Command::Grant { stream, bytes })
            }

            /// RESET_STREAM (and, on requests, STOP_SENDING) with `code`.
            #[napi]
            pub fn reset(&self, conn: u32, stream: i64, code: f64) -> bool {
                let (stream, code) = (stream as u64, code as u64);
                self.send(conn, Command::Reset { stream, code })
            }

            /// STOP_SENDING with `code`.
            #[napi]
            pub fn stop_sending(&self, conn: u32, stream: i64, code: f64) -> bool {
                let (stream, code) = (stream as u64, code as u64);
                self.send(conn, Command::StopSending { stream, code })
            }

            /// Opens a stream: raw QUIC, or WebTransport in session `session`
            /// (-1: none). Returns its id, or -1 if the connection is gone.
            #[napi]
            pub fn open_stream(&self, conn: u32, bidi: bool, session: i64) -> i64 {
                open_stream(self.conn(conn), bidi, session)
            }

            /// Sends a datagram on flow `stream` (raw QUIC: ignored).
            #[napi]
            pub fn send_datagram(&self, conn: u32, stream: i64, data: &[u8]) -> bool {
                let (stream, data) = (stream as u64, data.to_vec());
                self.send(conn, Command::Datagram { stream, data })
            }

            /// Closes WebTransport session `stream` with a code and reason.
            #[napi]
            pub fn close_session(&self, conn: u32, stream: i64, code: u32, reason: String) -> bool {
                let stream = stream as u64;
                self.send(
                    conn,
                    Command::CloseSession {
                        stream,
                        code,
                        reason,
                    },
                )
            }

            /// Closes one connection with an application error code.
            #[napi]
            pub fn close_connection(&self, conn: u32, code: f64, reason: String) -> bool {
                let code = code as u64;
                self.send(conn, Command::Close { code, reason })
            }

            /// Transport statistics of one connection (null once it is gone).
            #[napi(ts_return_type = "Promise<NativeStats | null>")]
            pub fn stats<'e>(&self, env: &'e Env, conn: u32) -> Result<Object<'e>> {
                stats_promise(env, |c| self.send(conn, c))
            }
        }
    };
}

connection_commands!(NativeServer);
connection_commands!(NativeClient);

/// Generates a development certificate: `[certPem, keyPem, sha256Hex, notAfterSecs]`.
#[napi]
pub fn generate_dev_cert(days: u32, names: Vec<String>) -> Result<Vec<String>> {
    let c = tls::generate_dev_cert(days, &names).map_err(|e| coded(e.code, e.message))?;
    Ok(vec![
        c.cert_pem,
        c.key_pem,
        hex(&c.sha256),
        c.not_after.to_string(),
    ])
}

/// SHA-256 (hex) of the first certificate of a PEM chain, or null.
#[napi]
pub fn certificate_sha256(cert: Buffer) -> Option<String> {
    tls::leaf_sha256(&cert).map(|h| hex(&h))
}

/// Checks that `cert` and `key` parse and match; throws a coded error if not.
#[napi]
pub fn check_identity(cert: Buffer, key: Buffer) -> Result<()> {
    tls::Identity::from_pem(&cert, &key)
        .map(|_| ())
        .map_err(|e| coded(e.code, e.message))
}

/// Whether the addon's runtime threads are running.
#[napi]
pub fn runtime_running() -> bool {
    runtime::is_running()
}

/// What the running runtime was started with (the first server or client
/// of the process decides).
#[napi(object)]
pub struct NativeRuntimeSettings {
    pub threads: u32,
    pub event_batch_delay_us: f64,
    /// 0: no count limit.
    pub event_batch_size: f64,
}

/// The settings of the running runtime; `null` when it does not run.
#[napi]
pub fn runtime_settings() -> Option<NativeRuntimeSettings> {
    runtime::settings().map(|s| NativeRuntimeSettings {
        threads: s.threads as u32,
        event_batch_delay_us: s.limits.max_delay.as_micros() as f64,
        event_batch_size: if s.limits.max_events == usize::MAX {
            0.0
        } else {
            s.limits.max_events as f64
        },
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Client trust settings from JS.
#[napi(object)]
pub struct NativeClientOptions {
    pub ca: Option<Buffer>,
    /// Hex SHA-256 hashes of accepted leaf certificates.
    pub pinned_sha256: Vec<String>,
    pub insecure: bool,
    /// Keep session tickets and resume TLS sessions on new connections.
    pub resume_sessions: bool,
    pub transport: NativeTransport,
}

/// Session tickets kept per server (address and name), for resumption.
type Tickets = Arc<Mutex<HashMap<(SocketAddr, Option<String>), Vec<u8>>>>;
/// Most servers a client keeps a ticket for; past it one is dropped.
const MAX_TICKETS: usize = 256;

/// An HTTP/3 client: a set of connections sharing one event queue.
#[napi]
pub struct NativeClient {
    sink: Arc<EventSink>,
    conns: Arc<Mutex<HashMap<u32, Arc<bridge::ConnHandle>>>>,
    next_id: AtomicU32,
    trust: tls::ClientTrust,
    transport: Transport,
    limits: Limits,
    handle: tokio::runtime::Handle,
    released: bool,
    /// `None` when resumption is off.
    tickets: Option<Tickets>,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.replace(':', "");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[napi]
impl NativeClient {
    /// A client; `on_batch` as for the server.
    #[napi(
        factory,
        ts_args_type = "options: NativeClientOptions, onBatch: (err: null | Error, value: number) => void"
    )]
    pub fn create(options: NativeClientOptions, on_batch: BatchFn) -> Result<NativeClient> {
        let mut pins = Vec::new();
        for p in &options.pinned_sha256 {
            pins.push(unhex(p).filter(|v| v.len() == 32).ok_or_else(|| {
                coded(
                    "ERR_H3_INVALID_OPTION",
                    format!("pinned hash {p:?} is not 64 hex digits"),
                )
            })?);
        }
        let (transport, limits) = options.transport.split();
        let handle =
            runtime::acquire(options.transport.wanted()).map_err(|e| coded("ERR_H3_RUNTIME", e))?;
        Ok(NativeClient {
            sink: sink_for(on_batch),
            conns: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU32::new(1),
            trust: tls::ClientTrust {
                ca_pem: options.ca.map(|b| b.to_vec()),
                pinned_sha256: pins,
                insecure: options.insecure,
            },
            transport,
            limits,
            handle,
            released: false,
            tickets: options.resume_sessions.then(Default::default),
        })
    }

    /// Connects to `host:port` (an IP address); resolves to a connection id.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn connect<'e>(
        &self,
        env: &'e Env,
        host: String,
        port: u32,
        server_name: Option<String>,
    ) -> Result<Object<'e>> {
        let ip: IpAddr = host.parse().map_err(|_| {
            coded(
                "ERR_H3_INVALID_OPTION",
                format!("{host:?} is not an IP address"),
            )
        })?;
        let (deferred, promise) = env.create_deferred::<u32, _>()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (trust, transport, limits, sink, conns) = (
            self.trust.clone(),
            self.transport.clone(),
            self.limits.clone(),
            self.sink.clone(),
            self.conns.clone(),
        );
        let on_gone = {
            let conns = conns.clone();
            Box::new(move || {
                conns.lock().unwrap().remove(&id);
            })
        };
        let peer = SocketAddr::new(ip, port as u16);
        let key = (peer, server_name.clone());
        let resume = self
            .tickets
            .as_ref()
            .and_then(|t| t.lock().unwrap().get(&key).cloned());
        let tickets = self.tickets.clone();
        let on_session: driver::OnSession = Box::new(move |ticket| {
            if let Some(t) = tickets {
                let mut t = t.lock().unwrap();
                if t.len() >= MAX_TICKETS && !t.contains_key(&key) {
                    let evict = t.keys().next().cloned();
                    if let Some(k) = evict {
                        t.remove(&k);
                    }
                }
                t.insert(key, ticket);
            }
        });
        self.handle.spawn(async move {
            match client::connect(id, peer, server_name, trust, transport, limits, sink, on_gone, resume, on_session).await {
                Ok(c) => {
                    let mut table = conns.lock().unwrap();
                    if c.is_gone() {
                        // It closed right after the handshake; on_gone already ran.
                        drop(table);
                        deferred.reject(coded(
                            "ERR_H3_CONNECT",
                            format!("connection to {peer} closed right after the handshake"),
                        ));
                    } else {
                        table.insert(id, Arc::new(c));
                        drop(table);
                        deferred.resolve(move |_| Ok(id));
                    }
                },
                Err(e) => deferred.reject(coded(
                    "ERR_H3_CONNECT",
                    format!("cannot connect to {peer}: handshake failed (certificate not trusted, no h3 ALPN, or no answer): {e}"),
                )),
            }
        });
        Ok(promise)
    }

    fn conn(&self, id: u32) -> Option<Arc<bridge::ConnHandle>> {
        self.conns.lock().unwrap().get(&id).cloned()
    }

    fn sink(&self) -> &Arc<EventSink> {
        &self.sink
    }

    fn open_connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Opens a request stream with its header section (names and values
    /// joined with NUL); returns the stream id, or -1 if the connection is
    /// gone.
    #[napi]
    pub fn request(&self, conn: u32, headers: String, fin: bool) -> i64 {
        let Some(fields) = bridge::Fields::new(headers) else {
            return -1;
        };
        match self.conn(conn) {
            Some(c) => {
                let stream = c.next_stream_id(true);
                if c.command(Command::Headers {
                    stream,
                    fields,
                    fin,
                }) {
                    stream as i64
                } else {
                    -1
                }
            }
            None => -1,
        }
    }

    fn send(&self, conn: u32, cmd: Command) -> bool {
        self.conn(conn).is_some_and(|c| c.command(cmd))
    }

    /// Closes every connection and releases the runtime.
    #[napi]
    pub fn release(&mut self) {
        if !self.released {
            self.released = true;
            let conns: Vec<_> = self.conns.lock().unwrap().drain().map(|(_, c)| c).collect();
            for c in &conns {
                c.command(Command::CloseWhenDelivered {
                    code: h3::error::H3Code::NoError.code(),
                });
            }
            self.sink.detach();
            // What was written last (a session's close capsule, a request's
            // end) is delivered before CONNECTION_CLOSE; the threads stop once
            // every connection is gone, or after a second at most.
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if conns.iter().all(|c| c.is_gone()) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::thread::sleep(Duration::from_millis(20));
                runtime::release();
            });
        }
    }
}

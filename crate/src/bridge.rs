//! The types that cross between the per-connection drivers (native threads)
//! and JavaScript: events go out in batches, commands come in per call.
//!
//! Nothing here knows about napi; `lib.rs` converts these to JS values.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happened. The numeric values are mirrored in `src/native.ts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    /// A connection finished its handshake (`info` set).
    ConnOpen = 1,
    /// A header section arrived: a request (server) or a response (client).
    Headers = 2,
    /// Body bytes (`data`), and/or the end of the body (`fin`).
    Data = 3,
    /// A trailer section arrived.
    Trailers = 4,
    /// The peer reset the stream, or the stream failed (`code`).
    Reset = 5,
    /// The peer asked us to stop sending on the stream (`code`).
    StopSending = 6,
    /// `code` payload bytes of the stream's body were handed to QUIC: write
    /// credit returns to JS.
    Sent = 7,
    /// The connection closed (`code`, `text` = reason; `fin` = by the peer).
    ConnClose = 8,
    /// The peer sent GOAWAY (`stream` = first id it will not process).
    GoAway = 9,
    /// The server stopped: every connection is gone.
    ServerClosed = 10,
    /// The whole response was handed to QUIC with its FIN. On a server's
    /// request stream it stands in for the last [`EventKind::Sent`] too:
    /// `code` = the payload bytes handed over in that last step.
    Finished = 11,
    /// A datagram (`data`) on flow `stream` (HTTP/3: a request stream or a
    /// WebTransport session; raw QUIC: `stream` is 0).
    Datagram = 12,
    /// The peer ended WebTransport session `stream`: `fin` = cleanly (with
    /// CLOSE_WEBTRANSPORT_SESSION or FIN), `code` and `text` its close code
    /// and reason.
    SessionClosed = 13,
    /// The peer opened stream `stream` (raw QUIC, or WebTransport with the
    /// session id in `code`).
    StreamOpen = 14,
    /// The peer asked WebTransport session `stream` to drain.
    SessionDrain = 15,
    /// The connection moved to a new peer address (NAT rebinding or
    /// migration): `info` holds the new addresses.
    PeerAddress = 16,
}

/// Connection facts given to JS with [`EventKind::ConnOpen`].
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    /// Peer IP address, textual.
    pub remote_address: String,
    /// Peer UDP port.
    pub remote_port: u16,
    /// Local IP address, textual.
    pub local_address: String,
    /// Local UDP port.
    pub local_port: u16,
    /// Negotiated ALPN.
    pub alpn: String,
    /// Whether the handshake resumed a session.
    pub resumed: bool,
    /// Server name the client asked for (SNI).
    pub server_name: Option<String>,
    /// Largest datagram payload the peer accepts now, in bytes (0: the
    /// peer does not accept datagrams).
    pub max_datagram_size: u32,
}

/// One event for JS.
#[derive(Debug, Default)]
pub struct Event {
    /// What happened ([`EventKind`] as a number).
    pub kind: u32,
    /// Connection id, unique per server or client.
    pub conn: u32,
    /// QUIC stream id, where relevant.
    pub stream: u64,
    /// Error code, byte count or port, depending on `kind`.
    pub code: u64,
    /// Body bytes.
    pub data: Option<Vec<u8>>,
    /// Header section: names and values, alternating ([`Fields`]).
    pub headers: Option<Fields>,
    /// End of stream / by-the-peer flag.
    pub fin: bool,
    /// Free text (close reason).
    pub text: Option<String>,
    /// Whether the request arrived in 0-RTT early data.
    pub early: bool,
    /// Connection facts (ConnOpen only).
    pub info: Option<ConnInfo>,
}

impl Event {
    /// A bare event of `kind` on `conn`/`stream`.
    pub fn new(kind: EventKind, conn: u32, stream: u64) -> Self {
        Self {
            kind: kind as u32,
            conn,
            stream,
            ..Default::default()
        }
    }
}

/// What JS asked a connection to do.
pub enum Command {
    /// Send a header section (response head, client request or trailers):
    /// names and values alternate in `fields`, joined with NUL (an even
    /// number of parts; see [`Fields`]).
    Headers {
        stream: u64,
        fields: Fields,
        fin: bool,
    },
    /// Send body bytes as a DATA frame; `fin` ends the stream.
    Write {
        stream: u64,
        data: Vec<u8>,
        fin: bool,
    },
    /// JS consumed `bytes` of the stream's received body: read more.
    Grant { stream: u64, bytes: u64 },
    /// Abort the stream both ways: RESET_STREAM and STOP_SENDING with `code`.
    Reset { stream: u64, code: u64 },
    /// Ask the peer to stop sending the stream's body (STOP_SENDING).
    StopSending { stream: u64, code: u64 },
    /// Send GOAWAY and refuse new requests; close once idle.
    GoAway,
    /// Close the connection now (CONNECTION_CLOSE with an application code).
    Close { code: u64, reason: String },
    /// Close the connection once everything written so far is delivered.
    CloseWhenDelivered { code: u64 },
    /// Report transport statistics through the callback.
    Stats(Box<dyn FnOnce(ConnStats) + Send>),
    /// Open stream `stream` (raw QUIC, or WebTransport in `session`).
    OpenStream { stream: u64, session: Option<u64> },
    /// Send a datagram on flow `stream` (ignored for raw QUIC).
    Datagram { stream: u64, data: Vec<u8> },
    /// Close WebTransport session `stream` with a code and reason.
    CloseSession {
        stream: u64,
        code: u32,
        reason: String,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Headers { stream, .. } => write!(f, "Headers({stream})"),
            Self::Write { stream, data, fin } => {
                write!(f, "Write({stream}, {}, {fin})", data.len())
            }
            Self::Grant { stream, bytes } => write!(f, "Grant({stream}, {bytes})"),
            Self::Reset { stream, code } => write!(f, "Reset({stream}, {code})"),
            Self::StopSending { stream, code } => write!(f, "StopSending({stream}, {code})"),
            Self::GoAway => f.write_str("GoAway"),
            Self::Close { code, .. } => write!(f, "Close({code})"),
            Self::CloseWhenDelivered { code } => write!(f, "CloseWhenDelivered({code})"),
            Self::Stats(_) => f.write_str("Stats"),
            Self::OpenStream { stream, session } => write!(f, "OpenStream({stream}, {session:?})"),
            Self::Datagram { stream, data } => write!(f, "Datagram({stream}, {})", data.len()),
            Self::CloseSession { stream, code, .. } => write!(f, "CloseSession({stream}, {code})"),
        }
    }
}

/// A header section as JS sends it: names and values joined with NUL, one
/// allocation for the whole section (JS's `Headers` never lets a NUL into a
/// name or value, so NUL cannot occur inside a part).
#[derive(Debug, Clone, Default)]
pub struct Fields(String);

impl Fields {
    /// `joined` if its parts pair up (or it is empty: no fields).
    pub fn new(joined: String) -> Option<Self> {
        if joined.is_empty() {
            return Some(Self(joined));
        }
        let parts = joined.bytes().filter(|&b| b == 0).count() + 1;
        parts.is_multiple_of(2).then_some(Self(joined))
    }

    /// A section joined by the caller, whose parts are known to pair up
    /// and to hold no NUL.
    pub fn from_joined(joined: String) -> Self {
        Self(joined)
    }

    /// The joined text (what crosses to JS).
    pub fn into_joined(self) -> String {
        self.0
    }

    /// Names and values, alternating.
    pub fn parts(&self) -> Vec<&str> {
        if self.0.is_empty() {
            return Vec::new();
        }
        self.0.split('\0').collect()
    }
}

/// Per-connection transport statistics.
#[derive(Clone, Debug, Default)]
pub struct ConnStats {
    /// Smoothed RTT in milliseconds.
    pub rtt_ms: f64,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Packets received.
    pub recv_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Bytes sent (UDP payload).
    pub sent_bytes: u64,
    /// Bytes received (UDP payload).
    pub recv_bytes: u64,
    /// Datagram counters.
    pub dgram: DgramStats,
}

/// Datagram counters of one connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct DgramStats {
    /// Datagrams received from the peer.
    pub received: u64,
    /// Datagrams queued for sending.
    pub sent: u64,
    /// Received or sent for a flow that is unknown or closed: dropped.
    pub dropped_unknown_flow: u64,
    /// Dropped because the send queue was full (the oldest queued one goes).
    pub dropped_send_queue_full: u64,
    /// Dropped because they exceed what the peer accepts.
    pub dropped_too_large: u64,
    /// Received by QUIC but dropped from its full receive queue (the oldest
    /// goes) before the session read them.
    pub dropped_recv_queue_full: u64,
}

/// The command queue of one connection: JS pushes, the connection's driver
/// takes everything queued at once. A plain vector under a lock plus a
/// wake-up, rather than a tokio mpsc channel, whose first block of 32
/// slots (about 1.5 KiB) every idle connection would keep.
struct CommandQueue {
    queue: Mutex<Vec<Command>>,
    wake: tokio::sync::Notify,
    /// The driver is gone: commands are refused.
    receiver_gone: AtomicBool,
    /// JS dropped its handle: no command will come any more.
    sender_gone: AtomicBool,
}

/// A connection's command channel: JS's end ([`ConnHandle`]) and the
/// driver's ([`CommandReceiver`]).
pub fn command_channel(first: (u64, u64)) -> (ConnHandle, CommandReceiver) {
    let q = Arc::new(CommandQueue {
        queue: Mutex::new(Vec::new()),
        wake: tokio::sync::Notify::new(),
        receiver_gone: AtomicBool::new(false),
        sender_gone: AtomicBool::new(false),
    });
    let handle = ConnHandle {
        q: q.clone(),
        next_bidi: AtomicU64::new(first.0),
        next_uni: AtomicU64::new(first.1),
    };
    (handle, CommandReceiver(q))
}

/// The driver's end of a connection's command channel.
pub struct CommandReceiver(Arc<CommandQueue>);

impl CommandReceiver {
    /// Waits until commands are queued and moves them all to `out`; false
    /// (nothing moved) once JS has dropped its handle and the queue is
    /// empty. Cancel-safe: commands stay queued until taken.
    pub async fn recv_all(&self, out: &mut Vec<Command>) -> bool {
        loop {
            if self.try_recv_all(out) {
                return true;
            }
            if self.0.sender_gone.load(Ordering::Acquire) {
                // A last push may have raced the flag.
                return self.try_recv_all(out);
            }
            // A push between the check above and here leaves a permit:
            // this returns at once.
            self.0.wake.notified().await;
        }
    }

    /// Moves whatever is queued to `out`; whether anything was.
    pub fn try_recv_all(&self, out: &mut Vec<Command>) -> bool {
        let mut q = self.0.queue.lock().unwrap();
        if q.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut *q);
        } else {
            out.append(&mut q);
        }
        true
    }
}

impl Drop for CommandReceiver {
    fn drop(&mut self) {
        self.0.receiver_gone.store(true, Ordering::Release);
        // Commands nobody will apply are dropped now (a stats request
        // then answers null).
        let left = std::mem::take(&mut *self.0.queue.lock().unwrap());
        drop(left);
    }
}

/// JS's handle on one connection: its command channel and the next stream
/// ids JS may open (allocated here so the ids are known synchronously).
pub struct ConnHandle {
    q: Arc<CommandQueue>,
    next_bidi: AtomicU64,
    next_uni: AtomicU64,
}

impl ConnHandle {
    /// Allocates the next locally initiated stream id of one kind.
    pub fn next_stream_id(&self, bidi: bool) -> u64 {
        let counter = if bidi {
            &self.next_bidi
        } else {
            &self.next_uni
        };
        counter.fetch_add(4, Ordering::Relaxed)
    }

    /// Sends a command; false once the connection is gone.
    pub fn command(&self, cmd: Command) -> bool {
        self.enqueue(|q| q.push(cmd))
    }

    /// Sends every command of `cmds` (which it empties), in order, with one
    /// wake-up; false once the connection is gone (they are dropped then).
    pub fn commands(&self, cmds: &mut Vec<Command>) -> bool {
        let sent = self.enqueue(|q| q.append(cmds));
        cmds.clear();
        sent
    }

    /// Runs `add` on the queue unless the driver is gone, then wakes it.
    fn enqueue(&self, add: impl FnOnce(&mut Vec<Command>)) -> bool {
        if self.is_gone() {
            return false;
        }
        {
            let mut q = self.q.queue.lock().unwrap();
            // Checked again under the lock, which the receiver's drop
            // takes after setting the flag: nothing is left behind.
            if self.is_gone() {
                return false;
            }
            add(&mut q);
        }
        self.q.wake.notify_one();
        true
    }

    /// Whether the connection's driver is gone.
    pub fn is_gone(&self) -> bool {
        self.q.receiver_gone.load(Ordering::Acquire)
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        self.q.sender_gone.store(true, Ordering::Release);
        self.q.wake.notify_one();
    }
}

/// Commands of one `submit`, grouped by connection in first-seen order;
/// each connection's commands keep their order. A turn that answers requests
/// of several connections interleaves them; grouped, each connection is
/// looked up, locked and woken once per turn instead of once per response.
#[derive(Default)]
pub struct ByConnection {
    groups: Vec<(u32, Vec<Command>)>,
    /// Index of each connection's group, built once there are many.
    index: HashMap<u32, usize>,
    last: usize,
}

impl ByConnection {
    /// Groups this small are searched; larger ones go through `index`.
    const LINEAR: usize = 8;

    pub fn push(&mut self, conn: u32, cmd: Command) {
        let at = match self.groups.get(self.last) {
            Some(g) if g.0 == conn => Some(self.last),
            _ if self.groups.len() <= Self::LINEAR => self.groups.iter().position(|g| g.0 == conn),
            _ => {
                if self.index.is_empty() {
                    self.index = self
                        .groups
                        .iter()
                        .enumerate()
                        .map(|(i, g)| (g.0, i))
                        .collect();
                }
                self.index.get(&conn).copied()
            }
        };
        let at = at.unwrap_or_else(|| {
            self.groups.push((conn, Vec::new()));
            let i = self.groups.len() - 1;
            if !self.index.is_empty() {
                self.index.insert(conn, i);
            }
            i
        });
        self.groups[at].1.push(cmd);
        self.last = at;
    }

    pub fn into_groups(self) -> impl Iterator<Item = (u32, Vec<Command>)> {
        self.groups.into_iter()
    }
}

/// Called once per batch: wakes the JS thread, which then takes the batch.
pub type Notify = Box<dyn Fn() + Send + Sync>;

/// A batch queue shared by every driver of one server or client: events are
/// appended under one lock; JS is woken once per batch, not per event.
///
/// On a runtime thread (see [`mark_io_thread_with`]) the wake-up waits until the
/// thread runs out of work ([`wake_deferred`], called before it parks), so
/// that one wake-up carries what every connection of that turn produced:
/// woken mid-turn, the JS thread takes the core (when the two share one)
/// with the first connection's events only, and the turn resumes after it.
/// A thread that stays busy still wakes JS at its first push past the
/// limits of [`DeferLimits`].
pub struct EventSink {
    queue: Mutex<Vec<Event>>,
    scheduled: AtomicBool,
    notify: Mutex<Option<Notify>>,
}

/// How long a runtime thread that keeps pushing events without running out
/// of work may hold back a JS wake-up: until `max_delay` has passed since
/// the first event it held back, or `max_events` events wait in one sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferLimits {
    pub max_delay: Duration,
    pub max_events: usize,
}

impl DeferLimits {
    /// The JS thread and the I/O thread may run at once (two or more cores):
    /// JS is woken at most 200 µs after the first event held back, so that
    /// the two work side by side.
    pub const SEPARATE_CORES: Self = Self {
        max_delay: Duration::from_micros(200),
        max_events: usize::MAX,
    };

    /// The process may use one core only (its affinity or cgroup quota):
    /// every wake-up of JS takes the core from the I/O thread (a switch each
    /// way and a turn of the event loop), and JS could not have run
    /// alongside anyway. So wake-ups carry up to
    /// 64 events, or whatever arrived within 2 ms. Measured on one core
    /// against the 200 µs rule (`for await` hello world, medians of three
    /// alternating 5 s runs, server CPU per request): 74.4 against 86.7 µs
    /// at 16 connections x 1 stream, 72.0 against 89.8 at 64 x 1; no change
    /// beyond the noise at 4 x 64 (26.8, 26.9), 1 x 64 (29.1, 28.3) and
    /// for `serve` at 4 x 64 (33.8, 34.4).
    pub const SHARED_CORE: Self = Self {
        max_delay: Duration::from_millis(2),
        max_events: 64,
    };

    /// The default limits for a process that may use `cores` cores.
    pub fn for_cores(cores: usize) -> Self {
        if cores == 1 {
            Self::SHARED_CORE
        } else {
            Self::SEPARATE_CORES
        }
    }

    /// These limits with either one replaced where it is given (the
    /// options `eventBatchDelayUs` and `eventBatchSize`; a size of 0 means
    /// no count limit).
    pub fn with(self, delay_us: Option<u64>, size: Option<usize>) -> Self {
        Self {
            max_delay: delay_us.map_or(self.max_delay, Duration::from_micros),
            max_events: match size {
                None => self.max_events,
                Some(0) => usize::MAX,
                Some(n) => n,
            },
        }
    }
}

struct Deferred {
    /// `Some` on a runtime thread.
    limits: Option<DeferLimits>,
    sinks: Vec<Arc<EventSink>>,
    since: Option<Instant>,
}

thread_local! {
    static DEFERRED: RefCell<Deferred> = const {
        RefCell::new(Deferred { limits: None, sinks: Vec::new(), since: None })
    };
}

/// Marks the calling thread as a runtime thread that calls [`wake_deferred`]
/// before it parks (the runtime's `on_thread_start`), with the limits it
/// holds JS wake-ups back by.
pub fn mark_io_thread_with(limits: DeferLimits) {
    DEFERRED.with(|d| d.borrow_mut().limits = Some(limits));
}

/// The limits of the calling thread, if it is a runtime thread.
#[cfg(test)]
pub fn io_thread_limits() -> Option<DeferLimits> {
    DEFERRED.with(|d| d.borrow().limits)
}

/// Wakes JS for every sink whose wake-up this thread held back (the
/// runtime's `on_thread_park`).
pub fn wake_deferred() {
    let sinks = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        d.since = None;
        std::mem::take(&mut d.sinks)
    });
    for s in &sinks {
        s.wake();
    }
    // Keep the allocation for the next turn.
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.sinks.is_empty() {
            d.sinks = sinks;
            d.sinks.clear();
        }
    });
}

impl EventSink {
    /// A sink that calls `notify` when a batch becomes ready.
    pub fn new(notify: Notify) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Vec::new()),
            scheduled: AtomicBool::new(false),
            notify: Mutex::new(Some(notify)),
        })
    }

    /// Appends events; wakes JS if no wake-up is pending (on a runtime
    /// thread: when the thread runs out of work, see [`EventSink`]).
    pub fn push_all(self: &Arc<Self>, events: &mut Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let queued = {
            let mut q = self.queue.lock().unwrap();
            if q.is_empty() {
                std::mem::swap(&mut *q, events);
            } else {
                q.append(events);
            }
            q.len()
        };
        if self.scheduled.load(Ordering::Acquire) {
            return;
        }
        let overdue = DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            let limits = d.limits?;
            if !d.sinks.iter().any(|s| Arc::ptr_eq(s, self)) {
                d.sinks.push(self.clone());
            }
            let since = *d.since.get_or_insert_with(Instant::now);
            Some(queued >= limits.max_events || since.elapsed() >= limits.max_delay)
        });
        match overdue {
            None => self.wake(),
            Some(true) => wake_deferred(),
            Some(false) => {}
        }
    }

    /// Appends one event.
    pub fn push(self: &Arc<Self>, event: Event) {
        self.push_all(&mut vec![event]);
    }

    fn wake(&self) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            if let Some(n) = self.notify.lock().unwrap().as_ref() {
                n();
            }
        }
    }

    /// Takes the whole batch (called on the JS thread).
    pub fn take(&self) -> Vec<Event> {
        let mut q = self.queue.lock().unwrap();
        self.scheduled.store(false, Ordering::Release);
        std::mem::take(&mut *q)
    }

    /// Drops the wake-up callback (releases the JS function so the process
    /// can exit).
    pub fn detach(&self) {
        self.notify.lock().unwrap().take();
    }
}

/// Joins the body pieces of a stream that wait in one batch into one piece
/// each, in place, before the batch crosses to JS.
///
/// A stream's body is read whenever packets arrive, a few KiB at a time
/// (an upload at full speed: about 4 KiB per read); each piece costs JS a
/// Buffer, a stream chunk and a read. Pieces of a stream that JS has not
/// taken yet are joined into the first of them, with one exact-size
/// allocation (pieces that come alone are not copied). The join stops at
/// any other event of that stream (trailers, a reset) and after a FIN, so
/// the stream's own order of events is kept; events of other streams and
/// datagrams are left as they are.
pub fn join_body_pieces(events: &mut Vec<Event>) {
    if events.len() < 2 {
        return;
    }
    let data = EventKind::Data as u32;
    // (conn, stream) → index (in the joined list) of its open Data event.
    let mut open: HashMap<(u32, u64), usize> = HashMap::new();
    // Index of a joined event → the pieces that follow its own.
    let mut more: HashMap<usize, Vec<Vec<u8>>> = HashMap::new();
    let mut kept = 0;
    for i in 0..events.len() {
        let key = (events[i].conn, events[i].stream);
        if events[i].kind == data && !events[i].early {
            if let Some(&at) = open.get(&key) {
                let e = std::mem::take(&mut events[i]);
                if let Some(d) = e.data {
                    more.entry(at).or_default().push(d);
                }
                if e.fin {
                    events[at].fin = true;
                    open.remove(&key);
                }
                continue;
            }
            if !events[i].fin {
                open.insert(key, kept);
            }
        } else if !open.is_empty() {
            open.remove(&key);
        }
        events.swap(kept, i);
        kept += 1;
    }
    events.truncate(kept);
    for (at, pieces) in more {
        let e = &mut events[at];
        let first = e.data.take().unwrap_or_default();
        let total = first.len() + pieces.iter().map(Vec::len).sum::<usize>();
        let mut joined = Vec::with_capacity(total);
        joined.extend_from_slice(&first);
        for p in &pieces {
            joined.extend_from_slice(p);
        }
        e.data = Some(joined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(stream: u64) -> Command {
        Command::Grant { stream, bytes: 1 }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn counting_sink() -> (Arc<EventSink>, Arc<AtomicU64>) {
        let n = Arc::new(AtomicU64::new(0));
        let m = n.clone();
        let sink = EventSink::new(Box::new(move || {
            m.fetch_add(1, Ordering::SeqCst);
        }));
        (sink, n)
    }

    #[test]
    fn a_runtime_thread_wakes_js_once_when_it_runs_out_of_work() {
        let (a, wakes_a) = counting_sink();
        let (b, wakes_b) = counting_sink();
        std::thread::spawn(move || {
            mark_io_thread_with(DeferLimits::SEPARATE_CORES);
            for i in 0..3 {
                a.push(Event::new(EventKind::Sent, 1, i));
                b.push(Event::new(EventKind::Sent, 2, i));
            }
            assert_eq!(wakes_a.load(Ordering::SeqCst), 0, "woken mid-turn");
            wake_deferred();
            assert_eq!(wakes_a.load(Ordering::SeqCst), 1);
            assert_eq!(wakes_b.load(Ordering::SeqCst), 1);
            assert_eq!(a.take().len(), 3);
            // A thread that never runs out of work still wakes JS, at its
            // first push past the limit.
            a.push(Event::new(EventKind::Sent, 1, 9));
            std::thread::sleep(DeferLimits::SEPARATE_CORES.max_delay * 2);
            assert_eq!(wakes_a.load(Ordering::SeqCst), 1);
            a.push(Event::new(EventKind::Sent, 1, 10));
            assert_eq!(wakes_a.load(Ordering::SeqCst), 2);
            wake_deferred();
            assert_eq!(
                wakes_a.load(Ordering::SeqCst),
                2,
                "woken twice for one batch"
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn on_a_shared_core_a_busy_runtime_thread_wakes_js_once_64_events_wait() {
        let (a, wakes) = counting_sink();
        std::thread::spawn(move || {
            mark_io_thread_with(DeferLimits::SHARED_CORE);
            for i in 0..63 {
                a.push(Event::new(EventKind::Sent, 1, i));
            }
            // Past the 200 µs of separate cores, within the 2 ms.
            std::thread::sleep(Duration::from_micros(400));
            a.push(Event::new(EventKind::Sent, 1, 63));
            assert_eq!(wakes.load(Ordering::SeqCst), 1, "not woken at 64 events");
            assert_eq!(a.take().len(), 64);
            a.push(Event::new(EventKind::Sent, 1, 64));
            assert_eq!(wakes.load(Ordering::SeqCst), 1, "woken for one event");
            std::thread::sleep(DeferLimits::SHARED_CORE.max_delay + Duration::from_millis(1));
            a.push(Event::new(EventKind::Sent, 1, 65));
            assert_eq!(wakes.load(Ordering::SeqCst), 2, "not woken past the delay");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn another_thread_wakes_js_at_once() {
        let (a, wakes) = counting_sink();
        a.push(Event::new(EventKind::ServerClosed, 0, 0));
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
    }

    /// (connection, streams in order) of each group.
    fn grouped(ops: &[(u32, u64)]) -> Vec<(u32, Vec<u64>)> {
        let mut g = ByConnection::default();
        for &(conn, stream) in ops {
            g.push(conn, grant(stream));
        }
        g.into_groups()
            .map(|(conn, cmds)| {
                let ids = cmds
                    .iter()
                    .map(|c| match c {
                        Command::Grant { stream, .. } => *stream,
                        _ => u64::MAX,
                    })
                    .collect();
                (conn, ids)
            })
            .collect()
    }

    #[test]
    fn commands_group_by_connection_in_first_seen_order_keeping_each_ones_order() {
        assert_eq!(
            grouped(&[(7, 0), (3, 0), (7, 4), (7, 8), (3, 4), (9, 0), (3, 8)]),
            [(7, vec![0, 4, 8]), (3, vec![0, 4, 8]), (9, vec![0])]
        );
        // Past the linear search, through the index: 40 connections, three
        // rounds of one command each, and connections added after the index
        // was built.
        let mut ops = Vec::new();
        for round in 0..3u64 {
            for conn in 0..40u32 {
                ops.push((conn, round * 4));
            }
        }
        ops.push((100, 0));
        ops.push((5, 12));
        ops.push((100, 4));
        let want: Vec<(u32, Vec<u64>)> = (0..40u32)
            .map(|c| {
                (
                    c,
                    if c == 5 {
                        vec![0, 4, 8, 12]
                    } else {
                        vec![0, 4, 8]
                    },
                )
            })
            .chain([(100, vec![0, 4])])
            .collect();
        assert_eq!(grouped(&ops), want);
    }

    #[test]
    fn commands_arrive_in_order_and_the_end_is_seen_after_the_last_one() {
        let (tx, rx) = command_channel((0, 2));
        assert!(tx.command(grant(0)) && tx.command(grant(4)));
        drop(tx);
        let mut got = Vec::new();
        assert!(block_on(rx.recv_all(&mut got)));
        let ids: Vec<u64> = got
            .iter()
            .map(|c| match c {
                Command::Grant { stream, .. } => *stream,
                _ => u64::MAX,
            })
            .collect();
        assert_eq!(ids, [0, 4]);
        assert!(
            !block_on(rx.recv_all(&mut Vec::new())),
            "JS's handle is gone"
        );
    }

    #[test]
    fn a_waiting_receiver_wakes_for_a_command_sent_from_another_thread() {
        let (tx, rx) = command_channel((0, 2));
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(tx.command(grant(8)));
            tx
        });
        let mut got = Vec::new();
        assert!(block_on(rx.recv_all(&mut got)));
        assert_eq!(got.len(), 1);
        drop(t.join().unwrap());
    }

    #[test]
    fn a_gone_driver_refuses_commands_and_drops_those_it_never_took() {
        let (tx, rx) = command_channel((0, 2));
        let (answered, reply) = std::sync::mpsc::channel();
        assert!(tx.command(Command::Stats(Box::new(move |_| {
            let _ = answered.send(());
        }))));
        drop(rx);
        assert!(tx.is_gone());
        assert!(!tx.command(grant(0)));
        // The queued stats request was dropped unanswered (lib.rs answers
        // such a request with null when its reply is dropped).
        assert_eq!(
            reply.try_recv(),
            Err(std::sync::mpsc::TryRecvError::Disconnected)
        );
    }

    fn data(conn: u32, stream: u64, bytes: &[u8], fin: bool) -> Event {
        let mut e = Event::new(EventKind::Data, conn, stream);
        e.data = Some(bytes.to_vec());
        e.fin = fin;
        e
    }

    fn shape(events: &[Event]) -> Vec<(u32, u32, u64, Vec<u8>, bool)> {
        events
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.conn,
                    e.stream,
                    e.data.clone().unwrap_or_default(),
                    e.fin,
                )
            })
            .collect()
    }

    #[test]
    fn body_pieces_of_a_stream_in_one_batch_become_one_piece_in_their_order() {
        let d = EventKind::Data as u32;
        let mut events = vec![
            data(1, 0, b"ab", false),
            data(1, 4, b"x", false),
            data(2, 0, b"other connection", false),
            data(1, 0, b"cd", false),
            Event::new(EventKind::Sent, 1, 8),
            data(1, 4, b"y", true),
            data(1, 0, b"ef", true),
        ];
        join_body_pieces(&mut events);
        assert_eq!(
            shape(&events),
            vec![
                (d, 1, 0, b"abcdef".to_vec(), true),
                (d, 1, 4, b"xy".to_vec(), true),
                (d, 2, 0, b"other connection".to_vec(), false),
                (EventKind::Sent as u32, 1, 8, vec![], false),
            ]
        );
        // One allocation of the joined size.
        assert_eq!(events[0].data.as_ref().unwrap().capacity(), 6);
    }

    #[test]
    fn joining_stops_at_any_other_event_of_the_stream_and_after_its_fin() {
        let d = EventKind::Data as u32;
        let mut reset = Event::new(EventKind::Reset, 1, 0);
        reset.code = 0x10c;
        let mut dgram = Event::new(EventKind::Datagram, 1, 4);
        dgram.data = Some(b"datagram".to_vec());
        let mut events = vec![
            data(1, 0, b"a", false),
            reset,
            data(1, 0, b"b", false),
            data(1, 4, b"c", true),
            data(1, 4, b"d", false),
            dgram,
            data(1, 4, b"e", false),
        ];
        join_body_pieces(&mut events);
        assert_eq!(
            shape(&events),
            vec![
                (d, 1, 0, b"a".to_vec(), false),
                (EventKind::Reset as u32, 1, 0, vec![], false),
                (d, 1, 0, b"b".to_vec(), false),
                (d, 1, 4, b"c".to_vec(), true),
                (d, 1, 4, b"d".to_vec(), false),
                (
                    EventKind::Datagram as u32,
                    1,
                    4,
                    b"datagram".to_vec(),
                    false
                ),
                (d, 1, 4, b"e".to_vec(), false),
            ]
        );
    }

    #[test]
    fn a_piece_that_comes_alone_is_not_copied() {
        let mut events = vec![
            data(1, 0, b"alone", false),
            Event::new(EventKind::Sent, 1, 4),
        ];
        let before = events[0].data.as_ref().unwrap().as_ptr();
        join_body_pieces(&mut events);
        assert_eq!(events[0].data.as_ref().unwrap().as_ptr(), before);
    }
}

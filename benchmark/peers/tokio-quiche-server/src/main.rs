//! Hello-world HTTP/3 server on tokio-quiche's own `ServerH3Driver`, with no JS boundary.
//! It answers exactly what the h3node benchmark servers answer:
//!
//!   GET  /         -> 200 "Hello, HTTP/3!"
//!   GET  /bytes/N  -> 200, N zero bytes streamed in 64 KiB chunks
//!   POST /sink     -> reads the whole body, 200 with the byte count as text
//!
//! Usage: bench-tokio-quiche-server --cert PEM --key PEM [--addr 127.0.0.1:0] [--retry]
//!        [--threads N] [--idle-timeout-ms MS]. Prints `listening <port>` on stdout once bound.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quiche::h3::{Header, NameValue};
use tokio_quiche::http3::driver::{
    H3Event, InboundFrame, IncomingH3Headers, OutboundFrame, OutboundFrameSender, ServerH3Event,
};
use tokio_quiche::http3::settings::Http3Settings;
use tokio_quiche::metrics::DefaultMetrics;
use tokio_quiche::settings::{CertificateKind, Hooks, QuicSettings, TlsCertificatePaths};
use tokio_quiche::socket::QuicListener;
use tokio_quiche::{ConnectionParams, ServerH3Driver};

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];
const HELLO: &[u8] = b"Hello, HTTP/3!";

struct Args {
    addr: SocketAddr,
    cert: String,
    key: String,
    retry: bool,
    threads: usize,
    idle_timeout_ms: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:0".parse().unwrap(),
        cert: String::new(),
        key: String::new(),
        retry: false,
        threads: 1,
        idle_timeout_ms: 30_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--addr" => a.addr = it.next().expect("--addr value").parse().expect("socket address"),
            "--cert" => a.cert = it.next().expect("--cert value"),
            "--key" => a.key = it.next().expect("--key value"),
            "--retry" => a.retry = true,
            "--threads" => a.threads = it.next().expect("--threads value").parse().expect("number"),
            "--idle-timeout-ms" => {
                a.idle_timeout_ms = it.next().expect("--idle-timeout-ms value").parse().expect("number")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.cert.is_empty() && !a.key.is_empty(), "--cert and --key are required");
    a
}

/// The transport settings h3node's `listen()` uses by default (src/options.ts, crate/src/server.rs).
fn settings(retry: bool, idle_timeout_ms: u64) -> QuicSettings {
    let mut s = QuicSettings::default();
    s.max_idle_timeout = Some(Duration::from_millis(idle_timeout_ms));
    s.handshake_timeout = Some(Duration::from_secs(10));
    s.initial_max_streams_bidi = 256;
    s.initial_max_streams_uni = 16;
    s.initial_max_data = 4 << 20;
    s.initial_max_stream_data_bidi_local = 1 << 20;
    s.initial_max_stream_data_bidi_remote = 1 << 20;
    s.initial_max_stream_data_uni = 1 << 20;
    s.max_connection_window = 24 << 20;
    s.max_stream_window = 16 << 20;
    s.cc_algorithm = "cubic".into();
    s.disable_client_ip_validation = !retry;
    s
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(serve(args));
}

async fn serve(args: Args) {
    let sock = tokio::net::UdpSocket::bind(args.addr).await.expect("bind UDP");
    let port = sock.local_addr().unwrap().port();
    let mut listener = QuicListener::try_from(sock).expect("listener");
    listener.apply_max_capabilities();
    let params = ConnectionParams::new_server(
        settings(args.retry, args.idle_timeout_ms),
        TlsCertificatePaths { cert: &args.cert, private_key: &args.key, kind: CertificateKind::X509 },
        Hooks::default(),
    );
    let mut streams = tokio_quiche::listen_with_capabilities([listener], params, DefaultMetrics)
        .expect("listen");
    let mut incoming = streams.pop().unwrap();
    println!("listening {port}");

    while let Some(next) = incoming.next().await {
        let Ok(conn) = next else { continue };
        let (driver, mut controller) = ServerH3Driver::new(Http3Settings::default());
        conn.start(driver);
        tokio::spawn(async move {
            let events = controller.event_receiver_mut();
            while let Some(ev) = events.recv().await {
                match ev {
                    ServerH3Event::Headers { incoming_headers, .. } => {
                        tokio::spawn(answer(incoming_headers));
                    }
                    ServerH3Event::Core(H3Event::ConnectionShutdown(_))
                    | ServerH3Event::Core(H3Event::ConnectionError(_)) => break,
                    _ => {}
                }
            }
        });
    }
}

fn head(status: &str, len: Option<u64>) -> Vec<Header> {
    let mut h = vec![
        Header::new(b":status", status.as_bytes()),
        Header::new(b"content-type", b"text/plain;charset=UTF-8"),
    ];
    if let Some(n) = len {
        h.push(Header::new(b"content-length", n.to_string().as_bytes()));
    }
    h
}

async fn answer(req: IncomingH3Headers) {
    let IncomingH3Headers { headers, send, mut recv, read_fin, .. } = req;
    let mut send: OutboundFrameSender = send;
    let path = headers
        .iter()
        .find(|h| h.name() == b":path")
        .map(|h| String::from_utf8_lossy(h.value()).into_owned())
        .unwrap_or_default();

    if path == "/sink" {
        let mut n: u64 = 0;
        if !read_fin {
            while let Some(frame) = recv.recv().await {
                if let InboundFrame::Body(b, fin) = frame {
                    n += b.len() as u64;
                    if fin {
                        break;
                    }
                }
            }
        }
        let body = n.to_string();
        let _ = send.send(OutboundFrame::Headers(head("200", Some(body.len() as u64)), None)).await;
        let _ = send.send(OutboundFrame::Body(Bytes::from(body), true)).await;
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let mut left: u64 = n.parse().unwrap_or(0);
        let _ = send.send(OutboundFrame::Headers(head("200", Some(left)), None)).await;
        if left == 0 {
            let _ = send.send(OutboundFrame::Body(Bytes::new(), true)).await;
        }
        while left > 0 {
            let k = left.min(CHUNK as u64) as usize;
            left -= k as u64;
            if send.send(OutboundFrame::Body(Bytes::from_static(&ZEROS[..k]), left == 0)).await.is_err() {
                break;
            }
        }
    } else {
        let _ = send.send(OutboundFrame::Headers(head("200", Some(HELLO.len() as u64)), None)).await;
        let _ = send.send(OutboundFrame::Body(Bytes::from_static(HELLO), true)).await;
    }
    // Read the request to its end (a client may send the FIN after the headers, on its own):
    // quiche frees a stream, and gives the client credit for a new one, only once both
    // directions are complete.
    if !read_fin && path != "/sink" {
        while let Some(frame) = recv.recv().await {
            if let InboundFrame::Body(_, true) = frame {
                break;
            }
        }
    }
}

//! The HTTP/3 layer the project owns, on quiche's QUIC transport.
//!
//! | file | what lives there |
//! |---|---|
//! | `frame.rs` | frame and stream-type constants, varint helpers |
//! | `error.rs` | RFC 9114 / RFC 9204 error codes, connection errors |
//! | `headers.rs` | pseudo-header, field and Content-Length validation |
//! | `section.rs` | decoding a received QPACK field section (static table only) |
//! | `session.rs` | per-connection state: request streams, control and QPACK streams, SETTINGS, GOAWAY, backpressure, datagram routing, WebTransport sessions and streams, raw QUIC streams |
//! | `wt.rs` | WebTransport constants, capsules, error-code mapping |
//!
//! quiche's own `h3` module is not used: it reads every stream itself and
//! cannot hand WebTransport streams (0x41 bidi signal, 0x54 uni type) to an
//! application. See `docs/design.md`.

pub mod error;
pub mod frame;
pub mod headers;
pub mod section;
pub mod session;
pub mod wt;

#[cfg(test)]
mod tests;

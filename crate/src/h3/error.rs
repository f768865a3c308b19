//! HTTP/3, QPACK and HTTP datagram error codes (RFC 9114 §8.1, RFC 9204 §6,
//! RFC 9297 §2.1).

/// An HTTP/3 application error code as sent in RESET_STREAM, STOP_SENDING
/// and CONNECTION_CLOSE frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
#[allow(missing_docs, reason = "names are the RFC's own")]
pub enum H3Code {
    NoError = 0x100,
    GeneralProtocolError = 0x101,
    InternalError = 0x102,
    StreamCreationError = 0x103,
    ClosedCriticalStream = 0x104,
    FrameUnexpected = 0x105,
    FrameError = 0x106,
    ExcessiveLoad = 0x107,
    IdError = 0x108,
    SettingsError = 0x109,
    MissingSettings = 0x10a,
    RequestRejected = 0x10b,
    RequestCancelled = 0x10c,
    RequestIncomplete = 0x10d,
    MessageError = 0x10e,
    ConnectError = 0x10f,
    VersionFallback = 0x110,
    QpackDecompressionFailed = 0x200,
    /// QPACK_ENCODER_STREAM_ERROR (RFC 9204 §6).
    QpackEncoderStreamError = 0x201,
    /// H3_DATAGRAM_ERROR (RFC 9297 §2.1).
    DatagramError = 0x33,
}

impl H3Code {
    /// The numeric code.
    pub fn code(self) -> u64 {
        self as u64
    }
}

/// A protocol violation that ends the whole connection.
#[derive(Debug, Clone)]
pub struct ConnError {
    /// Code sent in CONNECTION_CLOSE.
    pub code: H3Code,
    /// Reason phrase sent in CONNECTION_CLOSE (not API: for humans).
    pub reason: &'static str,
}

impl ConnError {
    /// Creates a connection error.
    pub fn new(code: H3Code, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

/// Result of an operation that may close the connection.
pub type ConnResult<T> = Result<T, ConnError>;

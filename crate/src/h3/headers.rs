//! Header-section checks the HTTP/3 layer owns (RFC 9114 §4.2, §4.3):
//! quiche's QPACK decoder returns raw fields, nothing more.

use quiche::h3::NameValue;

/// Why a header section is malformed (a stream error of type
/// H3_MESSAGE_ERROR), in words for logs. Not API.
pub type Malformed = &'static str;

/// What the request head says about its body.
#[derive(Debug, Default, Clone)]
pub struct RequestHead {
    /// `:method`.
    pub method: String,
    /// `content-length`, when present.
    pub content_length: Option<u64>,
    /// Whether this is an extended CONNECT (`:protocol` present).
    pub protocol: Option<String>,
}

fn is_connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// Values of every field, pseudo-headers included, must not carry NUL, CR or
/// LF (RFC 9114 §4.2). NUL matters twice here: a section crosses to JS with
/// its names and values joined by NUL.
fn check_value(value: &[u8]) -> Result<(), Malformed> {
    if value.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n') {
        return Err("invalid character in field value");
    }
    Ok(())
}

fn check_field(name: &[u8], value: &[u8]) -> Result<(), Malformed> {
    if name.is_empty() {
        return Err("empty field name");
    }
    if name.iter().any(|c| c.is_ascii_uppercase()) {
        return Err("uppercase field name");
    }
    // Field names are tokens; values must not carry NUL, CR or LF (RFC 9114 §4.2).
    if name
        .iter()
        .any(|&c| c <= 0x20 || c == b':' && name[0] != b':' || c >= 0x7f)
    {
        return Err("invalid character in field name");
    }
    check_value(value)?;
    if is_connection_specific(name) {
        return Err("connection-specific field");
    }
    if name == b"te" && value != b"trailers" {
        return Err("te other than trailers");
    }
    Ok(())
}

fn parse_content_length(value: &[u8], prev: Option<u64>) -> Result<u64, Malformed> {
    let s = std::str::from_utf8(value).map_err(|_| "invalid content-length")?;
    let mut result = None;
    // A list of identical values is tolerated (RFC 9110 §8.6).
    for part in s.split(',') {
        // Only optional whitespace (space, tab) may surround a list element
        // (RFC 9110 §5.6.1); `str::trim` would also take a vertical tab,
        // a form feed or Unicode spaces (found by fuzzing).
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid content-length");
        }
        let n: u64 = part.parse().map_err(|_| "invalid content-length")?;
        if result.is_some_and(|r| r != n) {
            return Err("conflicting content-length");
        }
        result = Some(n);
    }
    let n = result.ok_or("invalid content-length")?;
    if prev.is_some_and(|p| p != n) {
        return Err("conflicting content-length");
    }
    Ok(n)
}

/// Validates a request header section (server side).
pub fn check_request<T: NameValue>(fields: &[T]) -> Result<RequestHead, Malformed> {
    let (mut method, mut scheme, mut path, mut authority, mut protocol) =
        (None, None, None, None, None);
    let mut host = false;
    let mut regular_seen = false;
    let mut content_length = None;
    for f in fields {
        let (name, value) = (f.name(), f.value());
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular_seen {
                return Err("pseudo-header after regular field");
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"path" => &mut path,
                b"authority" => &mut authority,
                b"protocol" => &mut protocol,
                _ => return Err("unknown pseudo-header"),
            };
            if slot.is_some() {
                return Err("duplicate pseudo-header");
            }
            check_value(value)?;
            *slot = Some(value);
            continue;
        }
        regular_seen = true;
        check_field(name, value)?;
        match name {
            b"content-length" => {
                content_length = Some(parse_content_length(value, content_length)?)
            }
            b"host" => host = true,
            _ => {}
        }
    }
    let method = method.ok_or("missing :method")?;
    if method.is_empty() || !method.iter().all(|c| c.is_ascii_graphic()) {
        return Err("invalid :method");
    }
    if method == b"CONNECT" && protocol.is_none() {
        // Plain CONNECT (RFC 9114 §4.4): only :method and :authority.
        if scheme.is_some() || path.is_some() {
            return Err(":scheme or :path on CONNECT");
        }
        authority.ok_or("missing :authority on CONNECT")?;
    } else {
        if protocol.is_some() && method != b"CONNECT" {
            return Err(":protocol without CONNECT");
        }
        let scheme = scheme.ok_or("missing :scheme")?;
        let path = path.ok_or("missing :path")?;
        if path.is_empty() {
            return Err("empty :path");
        }
        if (scheme == b"https" || scheme == b"http") && authority.is_none() && !host {
            return Err("missing :authority and host");
        }
        if authority.is_some_and(|a| a.is_empty()) {
            return Err("empty :authority");
        }
    }
    Ok(RequestHead {
        method: String::from_utf8_lossy(method).into_owned(),
        content_length,
        protocol: protocol.map(|p| String::from_utf8_lossy(p).into_owned()),
    })
}

/// Validates a response header section (client side); returns the status
/// and content-length.
pub fn check_response<T: NameValue>(fields: &[T]) -> Result<(u16, Option<u64>), Malformed> {
    let mut status = None;
    let mut regular_seen = false;
    let mut content_length = None;
    for f in fields {
        let (name, value) = (f.name(), f.value());
        if name.starts_with(b":") {
            if regular_seen {
                return Err("pseudo-header after regular field");
            }
            if name != b":status" || status.is_some() {
                return Err("unexpected pseudo-header in response");
            }
            if value.len() != 3 || !value.iter().all(|c| c.is_ascii_digit()) {
                return Err("invalid :status");
            }
            status = Some(std::str::from_utf8(value).unwrap().parse::<u16>().unwrap());
            continue;
        }
        regular_seen = true;
        check_field(name, value)?;
        if name == b"content-length" {
            content_length = Some(parse_content_length(value, content_length)?);
        }
    }
    Ok((status.ok_or("missing :status")?, content_length))
}

/// Validates a trailer section: no pseudo-headers (RFC 9114 §4.3).
pub fn check_trailers<T: NameValue>(fields: &[T]) -> Result<(), Malformed> {
    for f in fields {
        if f.name().starts_with(b":") {
            return Err("pseudo-header in trailers");
        }
        check_field(f.name(), f.value())?;
    }
    Ok(())
}

/// Converts header bytes to a JS string: UTF-8 when valid, else Latin-1
/// (what `Headers` in fetch does with obs-text).
pub fn to_js_string(b: &[u8]) -> String {
    let mut s = String::new();
    push_js_str(&mut s, b);
    s
}

/// Appends `b` as [`to_js_string`] converts it.
pub fn push_js_str(out: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => out.push_str(s),
        Err(_) => out.extend(b.iter().map(|&c| c as char)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiche::h3::Header;

    fn h(pairs: &[(&str, &str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(n, v)| Header::new(n.as_bytes(), v.as_bytes()))
            .collect()
    }

    #[test]
    fn accepts_a_plain_get() {
        let r = check_request(&h(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "/"),
        ]))
        .unwrap();
        assert_eq!(r.method, "GET");
    }

    #[test]
    fn pseudo_header_values_with_nul_cr_or_lf_are_malformed() {
        for bad in ["/a\0x\0y", "/a\r\n", "/\n"] {
            for name in [":path", ":authority", ":scheme", ":method"] {
                let mut f = vec![
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "a"),
                    (":path", "/"),
                ];
                f.iter_mut().find(|p| p.0 == name).unwrap().1 = bad;
                assert!(check_request(&h(&f)).is_err(), "{name}: {bad:?}");
            }
        }
    }

    #[test]
    fn content_length_allows_only_spaces_and_tabs_around_values() {
        assert_eq!(parse_content_length(b" 5\t, 5 ", None), Ok(5));
        for bad in [
            "37\x0b",
            "\x0c5",
            "5\u{a0}",
            "\u{3000}5",
            "5\u{85}",
            "",
            " , 5",
            "+5",
            "5 5",
        ] {
            assert!(
                parse_content_length(bad.as_bytes(), None).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_requests() {
        let base = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "/"),
        ];
        assert!(check_request(&h(&base[..3])).is_err(), "missing :path");
        assert!(
            check_request(&h(&[base[0], base[1], base[3]])).is_err(),
            "no authority or host"
        );
        let mut v = base.to_vec();
        v.push(("Upper", "x"));
        assert!(check_request(&h(&v)).is_err());
        let mut v = base.to_vec();
        v.push(("connection", "close"));
        assert!(check_request(&h(&v)).is_err());
        let mut v = vec![("x", "y")];
        v.extend_from_slice(&base);
        assert!(check_request(&h(&v)).is_err(), "pseudo after regular");
        let mut v = base.to_vec();
        v.push((":foo", "x"));
        assert!(check_request(&h(&v)).is_err());
        let mut v = base.to_vec();
        v.push(("content-length", "1, 2"));
        assert!(check_request(&h(&v)).is_err());
        let mut v = base.to_vec();
        v.push(("content-length", "-1"));
        assert!(check_request(&h(&v)).is_err());
    }

    #[test]
    fn extended_connect_needs_scheme_and_path() {
        let ok = check_request(&h(&[
            (":method", "CONNECT"),
            (":protocol", "webtransport"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "/wt"),
        ]))
        .unwrap();
        assert_eq!(ok.protocol.as_deref(), Some("webtransport"));
        assert!(check_request(&h(&[
            (":method", "CONNECT"),
            (":protocol", "x"),
            (":authority", "a")
        ]))
        .is_err());
        assert!(check_request(&h(&[(":method", "CONNECT"), (":authority", "a:443")])).is_ok());
    }
}

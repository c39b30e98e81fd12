//! The one percent-decoder: the request path (`route`), registry query parameters
//! (`from`), and `/auth`'s query and form all go through it, so a byte sequence cannot mean
//! one thing to the router and another to the token endpoint.
//!
//! Strict as Go's `net/url` (what registry:2 and docker_auth parse with): `%` must be
//! followed by two hex digits. `u8::from_str_radix` alone is not enough: it takes a sign,
//! so `%+1` would decode to byte 0x01 where Go answers 400.

/// Go's `url.PathUnescape`: `%XX` decoded, `+` kept. `None` for a bad escape or a result
/// that is not UTF-8.
pub fn decode(raw: &str) -> Option<String> {
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Go's `url.QueryUnescape` (query strings and `application/x-www-form-urlencoded`
/// bodies): as [`decode`], with `+` as a space.
pub fn form_decode(raw: &str) -> Option<String> {
    decode(&raw.replace('+', " "))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bytes_of_an_escape_are_hex_digits() {
        assert_eq!(decode("a%2Fb%2fc").as_deref(), Some("a/b/c"));
        assert_eq!(decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(form_decode("a+b%2B").as_deref(), Some("a b+"));
        // A sign is not a digit, however from_str_radix reads it.
        for bad in ["%+1", "%-1", "%+f", "% 1", "%1", "%", "%zz", "%1g", "%ff"] {
            assert_eq!(decode(bad), None, "{bad:?}");
            assert_eq!(form_decode(bad), None, "{bad:?}");
        }
    }
}

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

/// `application/x-www-form-urlencoded` for what regate sends (an identity provider's token
/// request, an authorization URL's query): unreserved bytes as they are, a space as `+`,
/// every other byte `%XX`.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `name=value&...`, each part form-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
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
    fn what_is_encoded_decodes_to_itself() {
        let text = "a b+c&d=é/%~";
        assert_eq!(form_encode(text), "a+b%2Bc%26d%3D%C3%A9%2F%25~");
        assert_eq!(form_decode(&form_encode(text)).as_deref(), Some(text));
        assert_eq!(form(&[("a", "1 2"), ("b&", "")]), "a=1+2&b%26=");
    }

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

//! How the pages write what they show: sizes as the docker CLI writes them, times in UTC
//! with how long ago, digests shortened, tags in the order people read versions, and
//! manifests indented in their own key order.

use std::cmp::Ordering;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Bytes as `docker images` writes them: powers of 1000, one decimal (`3.2 MB`).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds since the epoch as `2026-12-04 18:26 UTC`.
pub fn utc(secs: u64) -> String {
    OffsetDateTime::from_unix_timestamp(secs as i64)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        })
        .unwrap_or_default()
}

/// An RFC 3339 time (an image config's `created`) as seconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

/// How long before `now` `then` was: `5 minutes ago`, `3 days ago`.
pub fn ago(then: u64, now: u64) -> String {
    let d = now.saturating_sub(then);
    let (n, unit) = match d {
        0..=59 => return "just now".to_owned(),
        60..=3599 => (d / 60, "minute"),
        3600..=86_399 => (d / 3600, "hour"),
        86_400..=2_591_999 => (d / 86_400, "day"),
        2_592_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

pub fn now() -> u64 {
    crate::auth::token::unix_now()
}

/// `sha256:` and the first 12 hex digits, as docker shows image IDs.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => digest.to_owned(),
    }
}

/// Compares names the way people read versions: runs of digits by their value
/// (`v2 < v10`), everything else byte by byte.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (m, n) = (run(x), run(y));
                let (dx, dy) = (trim_zeros(&x[..m]), trim_zeros(&y[..n]));
                let by_value = dx.len().cmp(&dy.len()).then_with(|| dx.cmp(dy));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                x = &x[m..];
                y = &y[n..];
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|c| **c == b'0').count();
    &digits[zeros..]
}

/// Tags in the order a reader looks for them: `latest` first, then the highest version
/// first (`v20`, `v19`, ..., `v2`, `v1`): what was pushed last usually has the highest
/// name, and the registry's own order (`v1`, `v10`, `v11`, ...) helps nobody.
pub fn sort_tags(tags: &mut [String]) {
    tags.sort_by(|a, b| match (a == "latest", b == "latest") {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => natural(b, a),
    });
}

/// A JSON document indented two spaces a level, its keys in the order they were written
/// (a manifest reads as it was pushed; a parser's map would sort them). `None` when
/// `raw` is not JSON.
pub fn pretty_json(raw: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(raw).ok()?;
    let mut out = String::with_capacity(raw.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = raw.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // An empty object or array stays on one line.
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_times_and_digests_read_as_docker_writes_them() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(3_245_000), "3.2 MB");
        assert_eq!(size(1_500_000_000), "1.5 GB");
        assert_eq!(utc(1_796_000_000), "2026-11-30 00:53 UTC");
        assert_eq!(parse_rfc3339("2026-11-30T00:53:20Z"), Some(1_796_000_000));
        assert_eq!(ago(100, 100 + 3 * 86_400), "3 days ago");
        assert_eq!(ago(100, 160), "1 minute ago");
        assert_eq!(
            short_digest(&format!("sha256:{}", "ab".repeat(32))),
            "sha256:abababababab"
        );
    }

    #[test]
    fn tags_sort_as_versions_latest_first() {
        let mut tags: Vec<String> = ["v1", "v10", "latest", "v2", "v02a", "1.9", "1.10"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_tags(&mut tags);
        assert_eq!(tags, ["latest", "v10", "v02a", "v2", "v1", "1.10", "1.9"]);
    }

    #[test]
    fn manifests_keep_their_key_order() {
        let raw = r#"{"schemaVersion":2,"config":{"size":7,"digest":"sha256:x"},"layers":[],"a":"b,{c}:\"d\""}"#;
        assert_eq!(
            pretty_json(raw).unwrap(),
            "{\n  \"schemaVersion\": 2,\n  \"config\": {\n    \"size\": 7,\n    \"digest\": \"sha256:x\"\n  },\n  \"layers\": [],\n  \"a\": \"b,{c}:\\\"d\\\"\"\n}"
        );
        assert_eq!(pretty_json("{nope"), None);
    }
}

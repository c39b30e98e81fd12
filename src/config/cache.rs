//! `cache:` (regate's own section) -> [`cache::Settings`]: the edge cache of manifests and
//! small blobs.

use serde::Deserialize;

use super::keys::Key;
use super::{Cx, Failed};
use crate::cache::{Settings, DEFAULT_MAX_BYTES, DEFAULT_MAX_OBJECT_BYTES};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    // Text, so that `64MiB` reads as well as `67108864`.
    max_bytes: Option<String>,
    max_object_bytes: Option<String>,
}

pub(super) const KEYS: &[Key] = &[
    Key::scalar(
        "max_bytes",
        "64MiB",
        "memory for the edge cache of manifests and small blobs (bytes, or with `KiB`, `MiB`, `GiB`); `0` turns the cache off",
    ),
    Key::scalar(
        "max_object_bytes",
        "1MiB",
        "the largest manifest or blob the cache keeps; larger ones are always streamed from the registry",
    ),
];

/// The most a cached object may weigh: moka weighs entries in `u32`, and an object this
/// large is better streamed anyway.
const OBJECT_LIMIT: u64 = 1 << 30;

pub(super) fn build(raw: RawCache, cx: &mut Cx<'_>) -> Result<Settings, Failed> {
    let max_bytes = match raw.max_bytes.as_deref() {
        None => DEFAULT_MAX_BYTES,
        Some(text) => size(text).or_else(|m| cx.fail(&["cache", "max_bytes"], m))?,
    };
    let max_object_bytes = match raw.max_object_bytes.as_deref() {
        None => DEFAULT_MAX_OBJECT_BYTES.min(max_bytes.max(1)),
        Some(text) => size(text).or_else(|m| cx.fail(&["cache", "max_object_bytes"], m))?,
    };
    if max_object_bytes == 0 || max_object_bytes > OBJECT_LIMIT {
        return cx.fail(
            &["cache", "max_object_bytes"],
            format!("{max_object_bytes} bytes: it must be from 1 byte to 1GiB"),
        );
    }
    if max_bytes != 0 && max_object_bytes > max_bytes {
        return cx.fail_hint(
            &["cache", "max_object_bytes"],
            format!(
                "{max_object_bytes} bytes is more than the whole cache (`max_bytes`, {max_bytes} bytes)"
            ),
            "raise `max_bytes`, or lower `max_object_bytes`",
        );
    }
    Ok(Settings {
        max_bytes,
        max_object_bytes,
        ..Settings::default()
    })
}

/// `1048576`, `512KiB`, `64MiB`, `1GiB` -> bytes.
fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            let hint = match other.to_ascii_lowercase().as_str() {
                "k" | "kb" => " (write `KiB`)",
                "m" | "mb" => " (write `MiB`)",
                "g" | "gb" => " (write `GiB`)",
                _ => "",
            };
            return Err(format!(
                "`{text}` is not a size: bytes, or a number with `KiB`, `MiB` or `GiB`{hint}"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            format!("`{text}` is not a size: bytes, or a number with `KiB`, `MiB` or `GiB`")
        })
}

#[cfg(test)]
#[test]
fn the_keys_are_the_structs() {
    super::keys::assert_keys_match::<RawCache>(KEYS);
}

#[cfg(test)]
#[test]
fn sizes_read_as_bytes_or_with_binary_units() {
    assert_eq!(size("0"), Ok(0));
    assert_eq!(size("1048576"), Ok(1 << 20));
    assert_eq!(size("512KiB"), Ok(512 << 10));
    assert_eq!(size("64 MiB"), Ok(64 << 20));
    assert_eq!(size("2GiB"), Ok(2 << 30));
    assert!(size("64MB").unwrap_err().contains("write `MiB`"));
    assert!(size("-1").is_err());
    assert!(size("MiB").is_err());
    assert!(size("99999999999999999999GiB").is_err());
}

#[cfg(test)]
#[test]
fn the_section_reads_defaults_sizes_and_variables() {
    use std::path::Path;
    let parse = |src: &str, vars: &[(&str, &str)]| {
        let vars = vars.iter().map(|(k, v)| ((*k).into(), (*v).into()));
        super::Config::parse_with_env(Path::new("/etc/regate/regate.yml"), src, vars)
    };
    let base = "upstream: {url: http://r:5000}\n";
    let c = parse(base, &[]).unwrap();
    assert_eq!(c.cache, Settings::default());
    assert_eq!(c.cache.max_bytes, 64 << 20);
    assert_eq!(c.cache.max_object_bytes, 1 << 20);

    let c = parse(
        &format!("{base}cache: {{max_bytes: 256MiB, max_object_bytes: 65536}}\n"),
        &[],
    )
    .unwrap();
    assert_eq!(
        (c.cache.max_bytes, c.cache.max_object_bytes),
        (256 << 20, 64 << 10)
    );

    let c = parse(base, &[("REGATE_CACHE_MAX_BYTES", "0")]).unwrap();
    assert_eq!(c.cache.max_bytes, 0);

    // A small cache without `max_object_bytes` keeps objects up to its own size.
    let c = parse(&format!("{base}cache: {{max_bytes: 512KiB}}\n"), &[]).unwrap();
    assert_eq!(c.cache.max_object_bytes, 512 << 10);

    let e = parse(&format!("{base}cache:\n  max_bytes: 64MB\n"), &[]).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("cache.max_bytes"));
    assert_eq!(e.position, Some((3, 3)));
    assert!(e.message.contains("write `MiB`"), "{e}");

    let e = parse(
        &format!("{base}cache: {{max_bytes: 1MiB, max_object_bytes: 2MiB}}\n"),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("cache.max_object_bytes"));
    assert!(e.message.contains("more than the whole cache"), "{e}");

    let e = parse(base, &[("REGATE_CACHE_MAX_OBJECT_BYTES", "0")]).unwrap_err();
    assert!(
        e.to_string().contains("REGATE_CACHE_MAX_OBJECT_BYTES"),
        "{e}"
    );
}

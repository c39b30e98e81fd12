//! Finds where a key path (`acl[3].match.name`) is written in the YAML source, so an error
//! found after parsing still names the line and column. Block style and one-line flow maps
//! (`match: {account: "admin"}`, docker_auth's usual style) are understood; when a step
//! cannot be found, the nearest enclosing key's position is given.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

/// The path as a user reads it: `acl[3].match.name`, `users."".password`.
pub fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                if k.is_empty() || k.contains(['.', ' ', '[']) {
                    out.push_str(&format!("{k:?}"));
                } else {
                    out.push_str(k);
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A region of the source: from `(line, col)` to the first later line indented at or
/// below `indent`.
#[derive(Clone, Copy)]
struct Region {
    line: usize,
    col: usize,
    indent: isize,
    /// Where the key or item itself starts.
    at: usize,
}

/// 1-based `(line, column)` of the last step of `path` that could be found.
pub fn locate(src: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let lines: Vec<&str> = src.lines().collect();
    let mut region = Region {
        line: 0,
        col: 0,
        indent: -1,
        at: 0,
    };
    let mut found = None;
    for seg in path {
        let next = match seg {
            Seg::Key(k) => find_key(&lines, region, k),
            Seg::Index(i) => find_item(&lines, region, *i),
        };
        match next {
            Some(r) => {
                found = Some((r.line + 1, r.at + 1));
                region = r;
            }
            None => break,
        }
    }
    found
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

/// The lines of a region: `(index, text, first column to look at)`.
fn region_lines<'a>(
    lines: &'a [&'a str],
    r: Region,
) -> impl Iterator<Item = (usize, &'a str, usize)> + 'a {
    let mut ended = false;
    lines
        .iter()
        .enumerate()
        .skip(r.line)
        .filter_map(move |(i, text)| {
            if ended {
                return None;
            }
            if i > r.line && is_content(text) && indent_of(text) as isize <= r.indent {
                ended = true;
                return None;
            }
            let from = if i == r.line { r.col } else { 0 };
            Some((i, *text, from))
        })
}

fn find_key(lines: &[&str], r: Region, k: &str) -> Option<Region> {
    let candidates = [format!("{k}:"), format!("\"{k}\":"), format!("'{k}':")];
    for (i, text, from) in region_lines(lines, r) {
        let Some(hay) = text.get(from..) else {
            continue;
        };
        for cand in &candidates {
            let mut start = 0;
            while let Some(pos) = hay[start..].find(cand.as_str()) {
                let at = start + pos;
                let before = hay[..at].trim_end_matches(' ');
                let boundary = before.is_empty()
                    || before.ends_with('{')
                    || before.ends_with(',')
                    || before.ends_with('-');
                if boundary {
                    let col = from + at;
                    return Some(Region {
                        line: i,
                        col: col + cand.len(),
                        indent: col as isize,
                        at: col,
                    });
                }
                start = at + cand.len();
            }
        }
    }
    None
}

fn find_item(lines: &[&str], r: Region, index: usize) -> Option<Region> {
    let mut seen = 0;
    let mut item_indent = None;
    for (i, text, from) in region_lines(lines, r) {
        let Some(hay) = text.get(from..) else {
            continue;
        };
        let trimmed = hay.trim_start_matches(' ');
        if !(trimmed.starts_with("- ") || trimmed == "-") {
            continue;
        }
        let col = from + hay.len() - trimmed.len();
        match item_indent {
            None => item_indent = Some(col),
            Some(c) if c != col => continue,
            _ => {}
        }
        if seen == index {
            return Some(Region {
                line: i,
                col: col + 2,
                indent: col as isize,
                at: col,
            });
        }
        seen += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"server:
  addr: ":5001"
token:
  issuer: "Auth Service"
users:
  "admin":
    password: "$2y$05$x"
  "": {}
acl:
  - match: {account: "admin"}
    actions: ["*"]
  # a comment
  - match: {account: "hussien", name: "ubuntu"}
    actions: ["*"]
  -
    match:
      account: /[/
"#;

    fn at(path: &[Seg]) -> Option<(usize, usize)> {
        locate(SRC, path)
    }

    #[test]
    fn block_keys() {
        assert_eq!(at(&[key("server"), key("addr")]), Some((2, 3)));
        assert_eq!(at(&[key("token"), key("issuer")]), Some((4, 3)));
        assert_eq!(
            at(&[key("users"), key("admin"), key("password")]),
            Some((7, 5))
        );
        assert_eq!(at(&[key("users"), key("")]), Some((8, 3)));
    }

    #[test]
    fn sequences_and_flow_maps() {
        assert_eq!(at(&[key("acl"), Seg::Index(0)]), Some((10, 3)));
        assert_eq!(
            at(&[key("acl"), Seg::Index(1), key("match"), key("name")]),
            Some((13, 33))
        );
        assert_eq!(
            at(&[key("acl"), Seg::Index(2), key("match"), key("account")]),
            Some((17, 7))
        );
        assert_eq!(
            at(&[key("acl"), Seg::Index(1), key("actions")]),
            Some((14, 5))
        );
    }

    #[test]
    fn missing_steps_give_the_nearest() {
        assert_eq!(at(&[key("server"), key("nope")]), Some((1, 1)));
        assert_eq!(at(&[key("nope")]), None);
    }

    #[test]
    fn display_paths() {
        assert_eq!(
            display(&[key("acl"), Seg::Index(3), key("match"), key("name")]),
            "acl[3].match.name"
        );
        assert_eq!(
            display(&[key("users"), key(""), key("password")]),
            "users.\"\".password"
        );
    }
}

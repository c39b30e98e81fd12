use super::{Glob, GlobError};

/// Go's `path/match_test.go` table, plus cases where Go's no-backtracking chunk matcher
/// differs from a textbook glob; `None` means the pattern is malformed.
#[test]
fn glob_matches_go_path_match() {
    let cases: &[(&str, &str, Option<bool>)] = &[
        ("abc", "abc", Some(true)),
        ("*", "abc", Some(true)),
        ("*c", "abc", Some(true)),
        ("a*", "a", Some(true)),
        ("a*", "abc", Some(true)),
        ("a*", "ab/c", Some(false)),
        ("a*/b", "abc/b", Some(true)),
        ("a*/b", "a/c/b", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
        ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
        ("ab[c]", "abc", Some(true)),
        ("ab[b-d]", "abc", Some(true)),
        ("ab[e-g]", "abc", Some(false)),
        ("ab[^c]", "abc", Some(false)),
        ("ab[^b-d]", "abc", Some(false)),
        ("ab[^e-g]", "abc", Some(true)),
        ("a\\*b", "a*b", Some(true)),
        ("a\\*b", "ab", Some(false)),
        ("a?b", "a☺b", Some(true)),
        ("a[^a]b", "a☺b", Some(true)),
        ("a???b", "a☺b", Some(false)),
        ("a[^a][^a][^a]b", "a☺b", Some(false)),
        ("[a-ζ]*", "α", Some(true)),
        ("*[a-ζ]", "A", Some(false)),
        ("a?b", "a/b", Some(false)),
        ("a*b", "a/b", Some(false)),
        ("[\\]a]", "]", Some(true)),
        ("[\\-]", "-", Some(true)),
        ("[x\\-]", "x", Some(true)),
        ("[x\\-]", "-", Some(true)),
        ("[x\\-]", "z", Some(false)),
        ("[\\-x]", "x", Some(true)),
        ("[\\-x]", "-", Some(true)),
        ("[\\-x]", "a", Some(false)),
        ("[]a]", "]", None),
        ("[-]", "-", None),
        ("[x-]", "x", None),
        ("[-x]", "x", None),
        ("\\", "a", None),
        ("[a-b-c]", "a", None),
        ("[", "a", None),
        ("[^", "a", None),
        ("[^bc", "a", None),
        ("a[", "a", None),
        ("a/b[", "x", None),
        ("*x", "xxx", Some(true)),
        // Beyond Go's table.
        ("", "", Some(true)),
        ("", "a", Some(false)),
        ("*", "", Some(true)),
        ("*", "a/b", Some(false)),
        ("*/*", "a/b", Some(true)),
        ("[*]", "*", Some(true)),
        ("[a*]*", "*b", Some(true)),
        ("[^a]", "/", Some(true)),
        ("\\☺", "☺", Some(true)),
        ("a\\", "a", None),
        ("[z-a]", "m", Some(false)),
        ("*[^z]*c", "a/bc", Some(false)),
        ("*?", "☺☺", Some(true)),
    ];
    for &(pattern, name, want) in cases {
        let got = Glob::new(pattern).map(|glob| glob.is_match(name)).ok();
        assert_eq!(got, want, "Match({pattern:?}, {name:?})");
    }
    assert_eq!(Glob::new("a\\").err(), Some(GlobError::TrailingBackslash));
    assert_eq!(Glob::new("[ab").err(), Some(GlobError::UnterminatedClass));
    assert_eq!(Glob::new("[]").err(), Some(GlobError::BadClassElement));
}

//! Redis's glob-style patterns (`KEYS`, `SCAN ... MATCH`, `CONFIG GET`): `*` any run, `?` any
//! byte, `[abc]`, `[^abc]` and `[a-z]` byte classes, `\` escapes the next byte. Byte-wise, as
//! Redis matches, so keys need not be UTF-8.

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    glob(pattern, text, 0)
}

/// How deep `*` may recurse before the pattern is refused: a pattern of many stars against a
/// long key would otherwise take exponential time.
const MAX_DEPTH: usize = 1000;

fn glob(mut p: &[u8], mut t: &[u8], depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    while let Some(&c) = p.first() {
        match c {
            b'*' => {
                while p.first() == Some(&b'*') {
                    p = &p[1..];
                }
                if p.is_empty() {
                    return true;
                }
                return (0..=t.len()).any(|i| glob(p, &t[i..], depth + 1));
            }
            b'?' => {
                if t.is_empty() {
                    return false;
                }
                p = &p[1..];
                t = &t[1..];
            }
            b'[' => {
                let Some(&byte) = t.first() else {
                    return false;
                };
                let (matched, rest) = class(&p[1..], byte);
                if !matched {
                    return false;
                }
                p = rest;
                t = &t[1..];
            }
            _ => {
                let (literal, rest) = if c == b'\\' && p.len() > 1 {
                    (p[1], &p[2..])
                } else {
                    (c, &p[1..])
                };
                if t.first() != Some(&literal) {
                    return false;
                }
                p = rest;
                t = &t[1..];
            }
        }
    }
    t.is_empty()
}

/// Whether `byte` is in the class that starts at `p` (just after `[`); what follows the class.
fn class(mut p: &[u8], byte: u8) -> (bool, &[u8]) {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut matched = false;
    loop {
        match p {
            [] => break,
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [b'\\', escaped, rest @ ..] => {
                matched |= *escaped == byte;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                matched |= (lo..=hi).contains(&byte);
                p = rest;
            }
            [c, rest @ ..] => {
                matched |= *c == byte;
                p = rest;
            }
        }
    }
    (matched != negate, p)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_as_in_redis() {
        let m = |p: &str, t: &str| matches(p.as_bytes(), t.as_bytes());
        assert!(m("*", "anything"));
        assert!(m("h?llo", "hello") && m("h?llo", "hallo") && !m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
        assert!(m("h[ae]llo", "hello") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("user:\\*", "user:*") && !m("user:\\*", "user:1"));
        assert!(m("key:*:end", "key:12:end") && !m("key:*:end", "key:12:en"));
        assert!(!m("a*", "") && m("*", ""));
        assert!(!m(&"*a".repeat(30), &"a".repeat(10)));
    }
}

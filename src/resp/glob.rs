//! Redis's glob-style patterns (`KEYS`, `SCAN ... MATCH`, `CONFIG GET`): `*` any run, `?` any
//! byte, `[abc]`, `[^abc]` and `[a-z]` byte classes, `\` escapes the next byte. Byte-wise, as
//! Redis matches, so keys need not be UTF-8.

/// Whether `text` matches `pattern`. Iterative, going back only to the last `*`: linear in
/// the text for each star, however many stars the pattern has (a recursive matcher takes
/// exponential time on `*a*a*a*...b` against a long run of `a`).
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the pattern resumes after the last star, and where in the text it was tried.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            while pattern.get(p) == Some(&b'*') {
                p += 1;
            }
            if p == pattern.len() {
                return true;
            }
            star = Some((p, t));
            continue;
        }
        if let Some(next) = one(pattern, p, text[t]) {
            p = next;
            t += 1;
            continue;
        }
        match star {
            // The star takes one more byte and the rest is tried again from there.
            Some((resume, tried)) => {
                p = resume;
                t = tried + 1;
                star = Some((resume, tried + 1));
            }
            None => return false,
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pattern.len()
}

/// If the one-byte token at `p` (a literal, an escape, `?` or a class) matches `byte`, the
/// index after it.
fn one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    let c = *pattern.get(p)?;
    match c {
        b'?' => Some(p + 1),
        b'[' => {
            let (matched, rest) = class(&pattern[p + 1..], byte);
            matched.then(|| pattern.len() - rest.len())
        }
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        _ => (c == byte).then_some(p + 1),
    }
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
        assert!(m("*a*b", "xaxxb") && m("a*b*c", "abbbc") && !m("a*b*c", "abbb"));
        assert!(m("*.txt", "a.b.txt") && m("[a-c]*[0-9]", "b-x-7") && m("\\", "\\"));
    }

    #[test]
    fn many_stars_against_a_long_key_take_linear_time() {
        // Exponential for a backtracking matcher; here a few hundred thousand steps.
        let pattern = format!("{}b", "*a".repeat(12));
        // (The recursive matcher this replaced did not return from this in hours.)
        let key = "a".repeat(1000);
        assert!(!matches(pattern.as_bytes(), key.as_bytes()));
        assert!(matches(pattern.as_bytes(), format!("{key}b").as_bytes()));
    }
}

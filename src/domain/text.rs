//! Small text shapes every layer uses.

/// At most `max` characters, with an ellipsis when cut.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// At most `max` characters, the last an ellipsis when cut (platforms' field limits).
pub fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The end of `s` within `max` characters, from a line start when it can, marking the cut:
/// log lines and command output, whose newest lines are last.
pub fn fit_tail(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    let tail: String = s.chars().skip(count - max.saturating_sub(2)).collect();
    let tail = match tail.find('\n') {
        Some(i) if i + 1 < tail.len() => &tail[i + 1..],
        _ => tail.as_str(),
    };
    format!("…\n{tail}")
}

/// Lines joined while they fit in `max` characters, then "+N more" (`more` counts lines not
/// even given).
pub fn lines_within(lines: &[String], max: usize, more: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for (i, line) in lines.iter().enumerate() {
        let left = lines.len() - i - 1 + more;
        let tail = if left > 0 { 20 } else { 0 };
        if out.chars().count() + line.chars().count() + 1 + tail > max {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
        shown += 1;
    }
    let hidden = lines.len() - shown + more;
    if hidden > 0 {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("+{hidden} more"));
    }
    out
}

/// The plural ending of a count: `1 row`, `2 rows`.
pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Lowercase hex, as the audit chain's hashes are written (and nginx's deny-list versions).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_text_ends_in_an_ellipsis() {
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("ééé", 2), "éé…");
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}

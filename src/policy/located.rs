//! Problems in a data file, each named by file and line, so `check-config` points at the spot.

use std::ops::Range;

use serde::de::DeserializeOwned;

/// The 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Reads a TOML file into `T`; a syntax or shape error names the file and its line.
pub(crate) fn parse<T: DeserializeOwned>(file: &str, text: &str) -> anyhow::Result<T> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end();
        match e.span() {
            Some(span) => anyhow::anyhow!("{file}:{}: {message}", line_of(text, span.start)),
            None => anyhow::anyhow!("{file}: {message}"),
        }
    })
}

/// Every problem found in one file, reported together so one run of `check-config` shows them
/// all.
pub(crate) struct Problems<'a> {
    file: &'a str,
    text: &'a str,
    found: Vec<String>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        Problems {
            file,
            text,
            found: Vec::new(),
        }
    }

    /// A problem at the value or key spanning `span`.
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl std::fmt::Display) {
        self.found.push(format!(
            "{}:{}: {message}",
            self.file,
            line_of(self.text, span.start)
        ));
    }

    pub(crate) fn finish(self) -> anyhow::Result<()> {
        if self.found.is_empty() {
            return Ok(());
        }
        anyhow::bail!("{}", self.found.join("\n"))
    }
}

/// A lowercase name as roles, people and chains use: 1-32 letters, digits or `-`, starting
/// with a letter.
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(crate) const NAME_RULE: &str =
    "use 1-32 lowercase letters, digits or -, starting with a letter";

/// `a, b, c`, or `none` for an empty list: the choices an error offers.
pub(crate) fn choices<'s>(names: impl Iterator<Item = &'s str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}

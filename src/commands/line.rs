//! A command typed as one line (`/logs backend tail:200 grep:"connection refused"`), as the
//! console's command bar and Slack send it, split into the options the core validates:
//! `name:value` pairs, and bare values for the required options in their order. Quotes group
//! words; nothing here is ever given to a shell.

use super::{CommandSpec, OptionKind};
use crate::request::RawValue;

/// The longest line taken: a command line is short; this bounds the work on hostile input.
pub const MAX_LINE: usize = 4000;

/// Splits `line` ("/name rest…" or "name rest…") into the command's name and the rest.
pub fn split_name(line: &str) -> (&str, &str) {
    let line = line.trim();
    let line = line.strip_prefix('/').unwrap_or(line);
    match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim_start()),
        None => (line, ""),
    }
}

/// Words, with `"…"` or `'…'` grouping (a backslash escapes the next character inside double
/// quotes). A quote may open in the middle of a word: `grep:"two words"`.
fn words(rest: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '"' | '\'' => {
                in_word = true;
                let quote = c;
                loop {
                    match chars.next() {
                        None => return Err(format!("a {quote} quote is not closed")),
                        Some(q) if q == quote => break,
                        Some('\\') if quote == '"' => match chars.next() {
                            Some(e) => word.push(e),
                            None => return Err("a \" quote is not closed".into()),
                        },
                        Some(other) => word.push(other),
                    }
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// The value of option `kind` as typed: integers and booleans as such when they read as one
/// (validation says what is wrong when they do not).
fn typed(kind: OptionKind, value: String) -> RawValue {
    match kind {
        OptionKind::Integer => match value.parse() {
            Ok(i) => RawValue::Integer(i),
            Err(_) => RawValue::Text(value),
        },
        OptionKind::Boolean => match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => RawValue::Boolean(true),
            "false" | "no" | "off" => RawValue::Boolean(false),
            _ => RawValue::Text(value),
        },
        _ => RawValue::Text(value),
    }
}

/// The options of `spec` in `rest`; an error says what is wrong and shows the usage line.
pub fn parse_line(spec: &CommandSpec, rest: &str) -> Result<Vec<(String, RawValue)>, String> {
    if rest.len() > MAX_LINE {
        return Err(format!("the line is longer than {MAX_LINE} characters"));
    }
    let usage = || format!("usage: {}", usage(spec));
    let mut out: Vec<(String, RawValue)> = Vec::new();
    let mut positional = spec.options.iter().filter(|o| o.required);
    for word in words(rest).map_err(|e| format!("{e}; {}", usage()))? {
        let named = word.split_once(':').and_then(|(name, value)| {
            let known = spec.options.iter().find(|o| o.name == name);
            match (known, name) {
                (Some(o), _) => Some((o.name.clone(), typed(o.kind, value.to_string()))),
                (None, "dry_run") if spec.takes_dry_run() => Some((
                    "dry_run".to_string(),
                    typed(OptionKind::Boolean, value.to_string()),
                )),
                _ => None,
            }
        });
        let (name, value) = match named {
            Some(nv) => nv,
            None => {
                // The next required option not named yet takes a bare value; else an
                // optional one whose choices hold it (`/oncall override …`).
                let unnamed = |o: &&super::OptionSpec| !out.iter().any(|(n, _)| *n == o.name);
                let chosen = || {
                    spec.options
                        .iter()
                        .filter(|o| !o.required && o.choices.contains(&word))
                        .find(unnamed)
                };
                let Some(o) = positional.find(unnamed).or_else(chosen) else {
                    return Err(format!(
                        "/{} does not take {:?} here; name the option (name:value). {}",
                        spec.name,
                        crate::domain::text::clip(&word, 60),
                        usage()
                    ));
                };
                (o.name.clone(), typed(o.kind, word))
            }
        };
        out.push((name, value));
    }
    Ok(out)
}

/// `/logs service:<backend|worker> [tail:<integer>] [grep:<string>]`.
pub fn usage(spec: &CommandSpec) -> String {
    let mut line = format!("/{}", spec.name);
    for o in &spec.options {
        let what = if o.choices.is_empty() {
            format!("<{}>", kind_name(o.kind))
        } else {
            format!("<{}>", o.choices.join("|"))
        };
        if o.required {
            line.push_str(&format!(" {}:{what}", o.name));
        } else {
            line.push_str(&format!(" [{}:{what}]", o.name));
        }
    }
    if spec.takes_dry_run() {
        line.push_str(" [dry_run:true]");
    }
    line
}

pub fn kind_name(kind: OptionKind) -> &'static str {
    match kind {
        OptionKind::String => "text",
        OptionKind::Integer => "integer",
        OptionKind::Boolean => "true|false",
        OptionKind::Ip => "ip",
        OptionKind::Cidr => "ip or range",
        OptionKind::Tag => "tag",
        OptionKind::Duration => "duration",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Commands;

    fn spec(name: &str) -> CommandSpec {
        Commands::load(None).unwrap().get(name).unwrap().clone()
    }

    #[test]
    fn a_line_becomes_named_and_positional_options() {
        let logs = spec("logs");
        let got = parse_line(&logs, r#"backend tail:200 grep:"connection refused""#).unwrap();
        assert_eq!(
            got,
            vec![
                ("service".into(), RawValue::Text("backend".into())),
                ("tail".into(), RawValue::Integer(200)),
                ("grep".into(), RawValue::Text("connection refused".into())),
            ]
        );
        assert_eq!(
            split_name("  /logs  service:backend "),
            ("logs", "service:backend")
        );
        assert_eq!(split_name("status"), ("status", ""));
    }

    #[test]
    fn a_bad_line_says_what_and_shows_the_usage() {
        let logs = spec("logs");
        let e = parse_line(&logs, r#"grep:"open"#).unwrap_err();
        assert!(
            e.contains("not closed") && e.contains("usage: /logs"),
            "{e}"
        );
        let e = parse_line(&logs, "backend worker").unwrap_err();
        assert!(e.contains("does not take \"worker\""), "{e}");
        // Shell metacharacters are plain text to the parser; validation refuses them later.
        let got = parse_line(&logs, "'backend; rm -rf /'").unwrap();
        assert_eq!(got[0].1, RawValue::Text("backend; rm -rf /".into()));
    }
}

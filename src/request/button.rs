//! Every button id runbot gives a platform, and the one parser that reads them back.
//!
//! A platform returns the id of a clicked button as it was given (Discord's `custom_id`,
//! Slack's `action_id`/`value`), so anything in it is untrusted: [`ButtonId::parse`] accepts
//! only the shapes [`ButtonId::format`] writes, and a click is then checked like any request.

use std::fmt;

/// The longest id every platform accepts (Discord's `custom_id`: 100 characters).
pub const MAX_LEN: usize = 100;

/// Version tags, so ids on old cards can be told apart when a format changes.
const ACTION_PREFIX: &str = "rb1";
const PROMPT_PREFIX: &str = "rb1p";
const COMMAND_PREFIX: &str = "rb1c";

/// The longest pending-request id a prompt button may carry.
const PENDING_MAX: usize = 64;

/// What a command button's values may not hold as such: the separators, and `%` itself.
const BUTTON_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b'&').add(b'=').add(b'%');

/// The answers a prompt's buttons give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Confirm,
    Cancel,
    Approve,
    Reject,
}

impl Verb {
    pub const ALL: [Verb; 4] = [Verb::Confirm, Verb::Cancel, Verb::Approve, Verb::Reject];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Confirm => "confirm",
            Verb::Cancel => "cancel",
            Verb::Approve => "approve",
            Verb::Reject => "reject",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verb::Confirm => "Confirm",
            Verb::Cancel => "Cancel",
            Verb::Approve => "Approve",
            Verb::Reject => "Reject",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What a button stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonId {
    /// Action `index` of the runbook entry on group `group_id`'s card: `rb1:{group}:{index}`.
    CardAction { group_id: i64, index: usize },
    /// An answer to a confirmation or approval prompt: `rb1p:{pending id}:{verb}`.
    Prompt { pending: String, verb: Verb },
    /// A command with arguments (e.g. `/security`'s "Block 1.2.3.4"):
    /// `rb1c:{command}:{name}={value}&…`, values percent-encoded. A click is a request like the
    /// slash command: validated, decided, confirmed and audited the same way, so a forged id
    /// gains nothing.
    Command {
        command: String,
        args: Vec<(String, String)>,
    },
}

impl ButtonId {
    /// The id to give the platform; None when it would be longer than [`MAX_LEN`].
    pub fn format(&self) -> Option<String> {
        let id = self.to_string();
        (id.len() <= MAX_LEN).then_some(id)
    }

    /// The button an id stands for; None for anything runbot did not write.
    pub fn parse(id: &str) -> Option<ButtonId> {
        if id.len() > MAX_LEN {
            return None;
        }
        let (prefix, rest) = id.split_once(':')?;
        match prefix {
            ACTION_PREFIX => {
                let (group, index) = rest.split_once(':')?;
                if index.contains(':') {
                    return None;
                }
                Some(ButtonId::CardAction {
                    group_id: group.parse().ok()?,
                    index: index.parse().ok()?,
                })
            }
            PROMPT_PREFIX => {
                let (pending, verb) = rest.split_once(':')?;
                if pending.is_empty() || pending.len() > PENDING_MAX {
                    return None;
                }
                Some(ButtonId::Prompt {
                    pending: pending.to_string(),
                    verb: Verb::parse(verb)?,
                })
            }
            COMMAND_PREFIX => {
                let (command, pairs) = rest.split_once(':')?;
                let mut args = Vec::new();
                for pair in pairs.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=')?;
                    let v = percent_encoding::percent_decode_str(v).decode_utf8().ok()?;
                    args.push((k.to_string(), v.into_owned()));
                }
                Some(ButtonId::Command {
                    command: command.to_string(),
                    args,
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for ButtonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ButtonId::CardAction { group_id, index } => {
                write!(f, "{ACTION_PREFIX}:{group_id}:{index}")
            }
            ButtonId::Prompt { pending, verb } => {
                write!(f, "{PROMPT_PREFIX}:{pending}:{}", verb.as_str())
            }
            ButtonId::Command { command, args } => {
                write!(f, "{COMMAND_PREFIX}:{command}:")?;
                for (i, (k, v)) in args.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "&" };
                    let v = percent_encoding::utf8_percent_encode(v, BUTTON_VALUE);
                    write!(f, "{sep}{k}={v}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<ButtonId> {
        vec![
            ButtonId::CardAction {
                group_id: 12,
                index: 0,
            },
            ButtonId::CardAction {
                group_id: i64::MAX,
                index: 7,
            },
            ButtonId::Prompt {
                pending: "3f2a9c".into(),
                verb: Verb::Confirm,
            },
            ButtonId::Prompt {
                pending: "x".repeat(PENDING_MAX),
                verb: Verb::Reject,
            },
            ButtonId::Command {
                command: "block-ip".into(),
                args: vec![("address".into(), "203.0.113.7".into())],
            },
            ButtonId::Command {
                command: "logs".into(),
                args: vec![
                    ("service".into(), "backend".into()),
                    ("grep".into(), "a=b&c%d:e ü".into()),
                ],
            },
            ButtonId::Command {
                command: "status".into(),
                args: vec![],
            },
        ]
    }

    #[test]
    fn every_format_reads_back_as_itself() {
        for id in samples() {
            let text = id.format().expect("fits");
            assert_eq!(ButtonId::parse(&text), Some(id), "{text}");
        }
    }

    #[test]
    fn the_formats_on_cards_already_posted_still_read() {
        assert_eq!(
            ButtonId::parse("rb1:12:3"),
            Some(ButtonId::CardAction {
                group_id: 12,
                index: 3
            })
        );
        assert_eq!(
            ButtonId::parse("rb1p:abc:approve"),
            Some(ButtonId::Prompt {
                pending: "abc".into(),
                verb: Verb::Approve
            })
        );
        assert_eq!(
            ButtonId::parse("rb1c:block-ip:address=10.0.0.1"),
            Some(ButtonId::Command {
                command: "block-ip".into(),
                args: vec![("address".into(), "10.0.0.1".into())]
            })
        );
    }

    #[test]
    fn anything_runbot_did_not_write_is_refused() {
        for bad in [
            "",
            "rb1",
            "rb1:12",
            "rb1:12:3:4",
            "rb1:x:3",
            "rb1:12:-1",
            "rb2:12:3",
            "rb1p::confirm",
            "rb1p:abc:delete",
            "rb1p:abc:confirm:extra",
            "rb1c:block-ip:address",
            "rb1c:block-ip:address=%FF",
            "rb1c",
        ] {
            assert_eq!(ButtonId::parse(bad), None, "{bad:?}");
        }
        let long_pending = format!("rb1p:{}:confirm", "x".repeat(PENDING_MAX + 1));
        assert_eq!(ButtonId::parse(&long_pending), None);
        let too_long = format!("rb1c:logs:grep={}", "a".repeat(MAX_LEN));
        assert_eq!(ButtonId::parse(&too_long), None);
    }

    #[test]
    fn an_id_that_would_not_fit_is_not_formatted() {
        let id = ButtonId::Command {
            command: "logs".into(),
            args: vec![("grep".into(), "a".repeat(MAX_LEN))],
        };
        assert_eq!(id.format(), None);
    }
}

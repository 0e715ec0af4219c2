//! `policies/people.toml`: the people runbot may page, and how to reach each on every
//! platform. Roles (`roles.toml`) and rotations (`oncall.toml`) name them by id.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use toml::Spanned;

use super::located::{self, Problems};
use super::roles::{is_slack_member, is_snowflake, is_user_name};

/// One person and their address on each platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The key of `[people.ID]`: how roles, rotations and `/page` name them.
    pub id: String,
    /// As people read it: "Ana".
    pub name: String,
    /// Discord user id (a snowflake).
    pub discord: Option<String>,
    /// Slack member id (`U024BE7LH`).
    pub slack: Option<String>,
    /// The console account's user name.
    pub console: Option<String>,
    pub email: Option<String>,
}

/// Everyone in `people.toml`, sorted by id.
#[derive(Debug, Clone, Default)]
pub struct People {
    people: Vec<Person>,
    /// `examples = true`: the shipped examples, not a team; nobody is paged by name.
    examples: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeopleFile {
    /// The shipped file says it holds examples: runbot pages nobody until a team removes it.
    #[serde(default)]
    examples: bool,
    #[serde(default)]
    people: BTreeMap<Spanned<String>, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Spanned<String>,
    discord: Option<Spanned<String>>,
    slack: Option<Spanned<String>>,
    console: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
}

/// An address shaped like `local@domain.tld`: enough to catch a slip, not a mail validator
/// (the mail server is the judge).
pub fn is_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    v.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl People {
    /// Parses the file; `file` names it in errors (`policies/people.toml`).
    pub fn parse(file: &str, text: &str) -> anyhow::Result<People> {
        let parsed: PeopleFile = located::parse(file, text)?;
        let examples = parsed.examples;
        let mut problems = Problems::new(file, text);
        let mut people = Vec::new();
        // Which person already uses an address: the same address twice makes a page ambiguous.
        let mut taken: HashMap<(&'static str, String), String> = HashMap::new();
        for (id, e) in parsed.people {
            let span = id.span();
            let id = id.into_inner();
            if !located::is_name(&id) {
                problems.at(
                    span.clone(),
                    format!("people.{id}: the id: {}", located::NAME_RULE),
                );
            }
            let name = e.name.get_ref().trim();
            if name.is_empty() || name.chars().count() > 64 {
                problems.at(
                    e.name.span(),
                    format!("people.{id}.name: give the name people read, 1 to 64 characters"),
                );
            }
            let mut field = |key: &'static str,
                             value: Option<Spanned<String>>,
                             ok: fn(&str) -> bool,
                             fix: &str|
             -> Option<String> {
                let value = value?;
                let span = value.span();
                let value = value.into_inner();
                if !ok(&value) {
                    problems.at(span, format!("people.{id}.{key}: {value:?} {fix}"));
                } else if let Some(other) = taken.insert((key, value.clone()), id.clone()) {
                    problems.at(
                        span,
                        format!("people.{id}.{key}: {value:?} is also {other}'s: each address belongs to one person"),
                    );
                }
                Some(value)
            };
            let discord = field(
                "discord",
                e.discord,
                is_snowflake,
                "is not a Discord user id (17 to 20 digits): in Discord, right-click the person → Copy User ID",
            );
            let slack = field(
                "slack",
                e.slack,
                is_slack_member,
                "is not a Slack member id such as U024BE7LH (profile → ⋮ → Copy member ID)",
            );
            let console = field(
                "console",
                e.console,
                is_user_name,
                "is not a console user name (1 to 64 characters, no spaces)",
            );
            let email = field(
                "email",
                e.email,
                is_email,
                "is not an email address such as ana@example.com",
            );
            people.push(Person {
                id,
                name: name.to_string(),
                discord,
                slack,
                console,
                email,
            });
        }
        problems.finish()?;
        Ok(People { people, examples })
    }

    /// Whether the file still says it holds the shipped examples (`examples = true`): then
    /// runbot pages nobody, and says so on the card and in `check-config`.
    pub fn are_examples(&self) -> bool {
        self.examples
    }

    pub fn get(&self, id: &str) -> Option<&Person> {
        self.people.iter().find(|p| p.id == id)
    }

    /// Everyone, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &Person> {
        self.people.iter()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.people.iter().map(|p| p.id.as_str())
    }

    pub fn len(&self) -> usize {
        self.people.len()
    }

    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }

    /// The person's name, or the id itself when people.toml does not know it.
    pub fn name_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.get(id).map_or(id, |p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "policies/people.toml";

    fn err(text: &str) -> String {
        format!("{:#}", People::parse(FILE, text).unwrap_err())
    }

    #[test]
    fn the_shipped_people_load() {
        let people = People::parse(FILE, super::super::EMBEDDED_PEOPLE).unwrap();
        let ana = people.get("ana").unwrap();
        assert_eq!(ana.name, "Ana");
        assert!(ana.discord.is_some() && ana.email.is_some());
        for id in ["ana", "luis", "marta"] {
            assert!(people.get(id).is_some(), "{id}");
        }
        assert!(people.get("nobody").is_none());
    }

    #[test]
    fn a_missing_file_section_is_no_people() {
        assert!(People::parse(FILE, "").unwrap().is_empty());
    }

    #[test]
    fn bad_addresses_name_the_line_and_the_fix() {
        let e = err("[people.ana]\nname = \"Ana\"\ndiscord = \"12\"\n");
        assert!(
            e.starts_with("policies/people.toml:3: people.ana.discord")
                && e.contains("Copy User ID"),
            "{e}"
        );
        let e =
            err("[people.ana]\nname = \"Ana\"\n\n\nslack = \"ana\"\nemail = \"ana.example.com\"\n");
        assert!(e.contains("people.toml:5: people.ana.slack"), "{e}");
        assert!(e.contains("people.toml:6: people.ana.email"), "{e}");
        let e = err("[people.Ana]\nname = \"Ana\"\n");
        assert!(e.contains("people.toml:1: people.Ana: the id"), "{e}");
        let e = err("[people.ana]\nname = \"Ana\"\nconsole = \"ana\"\n[people.bo]\nname = \"Bo\"\nconsole = \"ana\"\n");
        assert!(
            e.contains("people.toml:6:") && e.contains("also ana's"),
            "{e}"
        );
        let e = err("[people.ana]\nname = \"Ana\"\nphone = \"1\"\n");
        assert!(e.contains("people.toml:3:") && e.contains("phone"), "{e}");
        let e = err("[people.ana]\ndiscord = \"100000000000000001\"\n");
        assert!(e.contains("people.toml:1:") && e.contains("name"), "{e}");
        let e = err("[people.ana]\nname = \"Ana\"\n[people.ana]\nname = \"Ana\"\n");
        assert!(e.contains("people.toml:3:"), "{e}");
    }

    #[test]
    fn emails_are_shaped_like_addresses() {
        assert!(is_email("ana@example.com"));
        for bad in [
            "ana",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "a@b@c.com",
            "ana@.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}

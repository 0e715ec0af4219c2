//! `policies/roles.toml`: which people hold which runbot role, per platform, and when each
//! role is on call.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::Deserialize;

use toml::Spanned;

use super::located::Problems;
use super::people::People;
use crate::domain::hours::Hours;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    roles: BTreeMap<String, toml::Value>,
}

/// Who holds a role, per platform: a `[roles.NAME]` table without its `hours`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Holders {
    /// Discord role ids (snowflakes): anyone with one of these Discord roles.
    pub discord_roles: Vec<String>,
    pub discord_users: Vec<String>,
    /// Slack member ids (`U024BE7LH`).
    pub slack_users: Vec<String>,
    /// The console's user names.
    pub console_users: Vec<String>,
    /// Names `runbot policy explain --user` and other command-line tools act as.
    pub cli_users: Vec<String>,
}

/// One runbot role and the identities that hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub hours: Hours,
    pub holders: Holders,
    /// Ids of `people.toml`: each holds the role on every platform they have an address on.
    pub people: Vec<String>,
    /// The platform ids of `people`, filled in by [`Roles::resolve_people`].
    via_people: Holders,
}

impl Role {
    /// Whether this identity holds the role: on its platform, as one of the role's people, or
    /// because the platform grants it by itself (a console account's own roles).
    pub fn held_by(&self, who: &super::Identity) -> bool {
        self.holders.include(who) || self.via_people.include(who) || who.roles.contains(&self.name)
    }
}

impl Role {
    /// Whether a person of `people.toml` holds the role: listed in its `people`, or by one of
    /// their addresses in its platform lists.
    pub fn held_by_person(&self, person: &super::people::Person) -> bool {
        let by = |platform: &str, id: &Option<String>| {
            id.as_ref().is_some_and(|id| {
                self.holders.include(&super::Identity {
                    platform: platform.into(),
                    user_id: id.clone(),
                    platform_roles: Vec::new(),
                    roles: Vec::new(),
                })
            })
        };
        self.people.contains(&person.id)
            || by("discord", &person.discord)
            || by("slack", &person.slack)
            || by("console", &person.console)
    }
}

impl Holders {
    fn include(&self, who: &super::Identity) -> bool {
        let has = |list: &[String], id: &str| list.iter().any(|x| x == id);
        match who.platform.as_str() {
            "discord" => {
                has(&self.discord_users, &who.user_id)
                    || who
                        .platform_roles
                        .iter()
                        .any(|r| has(&self.discord_roles, r))
            }
            "slack" => has(&self.slack_users, &who.user_id),
            "console" => has(&self.console_users, &who.user_id),
            "cli" => has(&self.cli_users, &who.user_id),
            _ => false,
        }
    }
}

/// Every role, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    roles: Vec<Role>,
}

impl Roles {
    pub fn parse(text: &str) -> anyhow::Result<Roles> {
        let file: RolesFile = toml::from_str(text)?;
        if file.roles.is_empty() {
            bail!("no roles: add at least one [roles.NAME] table");
        }
        let mut roles = Vec::new();
        for (name, value) in file.roles {
            roles.push(parse_role(&name, value).with_context(|| format!("[roles.{name}]"))?);
        }
        Ok(Roles { roles })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Role> {
        self.roles.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().map(|r| r.name.as_str())
    }

    /// Checks each role's `people` against `people.toml` (naming the line of an unknown or
    /// repeated one) and lets those people hold the role by their platform ids.
    pub fn resolve_people(
        &mut self,
        file: &str,
        text: &str,
        people: &People,
    ) -> anyhow::Result<()> {
        #[derive(Deserialize)]
        struct File {
            roles: BTreeMap<String, RolePeople>,
        }
        // Only `people`, with its lines; parse() has checked the rest.
        #[derive(Deserialize)]
        struct RolePeople {
            #[serde(default)]
            people: Vec<Spanned<String>>,
        }
        let spans: File = super::located::parse(file, text)?;
        let mut problems = Problems::new(file, text);
        for (name, entry) in &spans.roles {
            let mut seen = Vec::new();
            for id in &entry.people {
                if people.get(id.get_ref()).is_none() {
                    problems.at(
                        id.span(),
                        format!(
                            "roles.{name}.people: unknown person {:?}: add [people.{}] to people.toml (beside roles.toml), or use one of: {}",
                            id.get_ref(),
                            id.get_ref(),
                            super::located::choices(people.ids())
                        ),
                    );
                } else if seen.contains(&id.get_ref()) {
                    problems.at(
                        id.span(),
                        format!("roles.{name}.people: {:?} is listed twice", id.get_ref()),
                    );
                }
                seen.push(id.get_ref());
            }
        }
        problems.finish()?;
        for role in &mut self.roles {
            let mut via = Holders::default();
            for person in role.people.iter().filter_map(|id| people.get(id)) {
                via.discord_users.extend(person.discord.clone());
                via.slack_users.extend(person.slack.clone());
                via.console_users.extend(person.console.clone());
            }
            role.via_people = via;
        }
        Ok(())
    }
}

/// A Discord id (user, role, channel): a snowflake, 17 to 20 digits today.
pub fn is_snowflake(v: &str) -> bool {
    (17..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
}

/// A Slack member id: U or W, then capitals and digits.
pub fn is_slack_member(v: &str) -> bool {
    (v.starts_with('U') || v.starts_with('W'))
        && (3..=20).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A console or command-line user name: 1 to 64 characters, no spaces or control characters.
pub fn is_user_name(v: &str) -> bool {
    !v.is_empty()
        && v.chars().count() <= 64
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn parse_role(name: &str, value: toml::Value) -> anyhow::Result<Role> {
    if !super::located::is_name(name) {
        bail!("the role name: {}", super::located::NAME_RULE);
    }
    let toml::Value::Table(mut table) = value else {
        bail!("expected a table of the role's holders and hours");
    };
    let Some(hours) = table.remove("hours") else {
        bail!("missing field `hours`: use {}", Hours::CHOICES);
    };
    let hours = match hours.as_str() {
        Some(text) => Hours::parse(text)
            .ok_or_else(|| anyhow::anyhow!("hours = {text:?}: use {}", Hours::CHOICES))?,
        None => bail!("hours must be text: use {}", Hours::CHOICES),
    };
    let people: Vec<String> = match table.remove("people") {
        None => Vec::new(),
        Some(v) => v.try_into().map_err(|_| {
            anyhow::anyhow!("people: a list of ids of people.toml, e.g. people = [\"ana\"]")
        })?,
    };
    let holders: Holders = toml::Value::Table(table).try_into()?;
    let snowflake = is_snowflake;
    for (key, list) in [
        ("discord_roles", &holders.discord_roles),
        ("discord_users", &holders.discord_users),
    ] {
        if let Some(bad) = list.iter().find(|v| !snowflake(v)) {
            bail!("{key}: {bad:?} is not a Discord id (17 to 20 digits): turn on Developer Mode in Discord and use Copy ID");
        }
    }
    if let Some(bad) = holders.slack_users.iter().find(|v| !is_slack_member(v)) {
        bail!("slack_users: {bad:?} is not a Slack member id such as U024BE7LH (profile → ⋮ → Copy member ID)");
    }
    for (key, list) in [
        ("console_users", &holders.console_users),
        ("cli_users", &holders.cli_users),
    ] {
        if let Some(bad) = list.iter().find(|v| !is_user_name(v)) {
            bail!("{key}: {bad:?} is not a user name (1 to 64 characters, no spaces)");
        }
    }
    Ok(Role {
        name: name.to_string(),
        hours,
        holders,
        people,
        via_people: Holders::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Identity;

    fn err(text: &str) -> String {
        format!("{:#}", Roles::parse(text).unwrap_err())
    }

    #[test]
    fn the_shipped_roles_follow_the_runbook() {
        let roles = Roles::parse(super::super::EMBEDDED_ROLES).unwrap();
        let hours = |n: &str| roles.get(n).unwrap().hours;
        assert_eq!(hours("devops-lead"), Hours::Always);
        assert_eq!(hours("backend-lead"), Hours::Business);
        assert_eq!(hours("dba"), Hours::Weekends);
        assert_eq!(hours("security"), Hours::Always);
        assert_eq!(hours("cto"), Hours::Always);
        assert_eq!(hours("developer"), Hours::Business);
        assert_eq!(hours("viewer"), Hours::Business);
        assert_eq!(roles.iter().count(), 7);
    }

    #[test]
    fn identities_match_on_their_own_platform_only() {
        let roles = Roles::parse(
            "[roles.dba]\ndiscord_roles = [\"123456789012345678\"]\ndiscord_users = [\"223456789012345678\"]\n\
             slack_users = [\"U024BE7LH\"]\nconsole_users = [\"ana\"]\ncli_users = [\"ops\"]\nhours = \"weekends\"\n",
        )
        .unwrap();
        let dba = roles.get("dba").unwrap();
        let who = |platform: &str, user: &str, platform_roles: &[&str]| Identity {
            platform: platform.into(),
            user_id: user.into(),
            platform_roles: platform_roles.iter().map(|s| s.to_string()).collect(),
            roles: Vec::new(),
        };
        assert!(dba.held_by(&who("discord", "1", &["123456789012345678"])));
        assert!(dba.held_by(&who("discord", "223456789012345678", &[])));
        assert!(dba.held_by(&who("slack", "U024BE7LH", &[])));
        assert!(dba.held_by(&who("console", "ana", &[])));
        assert!(dba.held_by(&who("cli", "ops", &[])));
        assert!(!dba.held_by(&who("slack", "ana", &[])));
        assert!(!dba.held_by(&who("console", "U024BE7LH", &[])));
        // Roles a platform grants by itself, not platform role ids.
        let granted = Identity {
            roles: vec!["dba".into()],
            ..who("console", "bo", &[])
        };
        assert!(dba.held_by(&granted));
        assert!(!dba.held_by(&who("discord", "1", &["dba"])));
        assert!(!dba.held_by(&who("discord", "1", &[])));
    }

    #[test]
    fn a_listed_person_holds_the_role_on_every_platform_they_have() {
        let text = "[roles.dba]\nhours = \"weekends\"\npeople = [\"ana\"]\n";
        let mut roles = Roles::parse(text).unwrap();
        let people = People::parse(
            "people.toml",
            "[people.ana]\nname = \"Ana\"\ndiscord = \"100000000000000001\"\nslack = \"U0000000A1\"\nconsole = \"ana\"\n[people.bo]\nname = \"Bo\"\nconsole = \"bo\"\n",
        )
        .unwrap();
        roles.resolve_people("roles.toml", text, &people).unwrap();
        let dba = roles.get("dba").unwrap();
        assert_eq!(dba.people, ["ana"]);
        let who = |platform: &str, user: &str| Identity {
            platform: platform.into(),
            user_id: user.into(),
            platform_roles: Vec::new(),
            roles: Vec::new(),
        };
        assert!(dba.held_by(&who("discord", "100000000000000001")));
        assert!(dba.held_by(&who("slack", "U0000000A1")));
        assert!(dba.held_by(&who("console", "ana")));
        assert!(!dba.held_by(&who("console", "bo")));
        assert!(!dba.held_by(&who("discord", "ana")));

        let text = "[roles.dba]\nhours = \"weekends\"\npeople = [\n  \"ana\",\n  \"eve\",\n  \"ana\",\n]\n";
        let mut roles = Roles::parse(text).unwrap();
        let e = format!(
            "{:#}",
            roles
                .resolve_people("policies/roles.toml", text, &people)
                .unwrap_err()
        );
        assert!(
            e.contains("policies/roles.toml:5: roles.dba.people: unknown person \"eve\"")
                && e.contains("ana, bo"),
            "{e}"
        );
        assert!(e.contains("roles.toml:6:") && e.contains("twice"), "{e}");
    }

    #[test]
    fn bad_files_name_the_role_and_the_fix() {
        let e = err("[roles.dba]\nhours = \"weekend\"\n");
        assert!(e.contains("[roles.dba]") && e.contains("\"24/7\""), "{e}");
        let e = err("[roles.dba]\nhours = \"24/7\"\ndiscord_roles = [\"12345\"]\n");
        assert!(
            e.contains("[roles.dba]") && e.contains("not a Discord id"),
            "{e}"
        );
        let e = err("[roles.dba]\nhours = \"24/7\"\ndiscord_role = []\n");
        assert!(
            e.contains("[roles.dba]") && e.contains("discord_role"),
            "{e}"
        );
        let e = err("[roles.dba]\ndiscord_roles = []\n");
        assert!(e.contains("[roles.dba]") && e.contains("hours"), "{e}");
        let e = err("[roles.Big_Boss]\nhours = \"24/7\"\n");
        assert!(
            e.contains("[roles.Big_Boss]") && e.contains("lowercase"),
            "{e}"
        );
        let e = err("[roles.dba]\nhours = \"24/7\"\nslack_users = [\"alice\"]\n");
        assert!(e.contains("Slack member id"), "{e}");
        let e = err("[role.dba]\nhours = \"24/7\"\n");
        assert!(e.contains("role"), "{e}");
    }
}

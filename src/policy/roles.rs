//! `policies/roles.toml`: which people hold which runbot role, per platform, and when each
//! role is on call.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::Deserialize;

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
}

impl Role {
    /// Whether this identity holds the role: on its platform, or because the platform grants
    /// it by itself (a console account's own roles).
    pub fn held_by(&self, who: &super::Identity) -> bool {
        self.holders.include(who) || who.roles.contains(&self.name)
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
}

/// A console or command-line user name: 1 to 64 characters, no spaces or control characters.
pub fn is_user_name(v: &str) -> bool {
    !v.is_empty()
        && v.chars().count() <= 64
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn parse_role(name: &str, value: toml::Value) -> anyhow::Result<Role> {
    let valid_name = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        bail!("the role name: use 1-32 lowercase letters, digits or -, starting with a letter");
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
    let holders: Holders = toml::Value::Table(table).try_into()?;
    // Discord ids are snowflakes: 17 to 20 digits today.
    let snowflake = |v: &str| (17..=20).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit());
    for (key, list) in [
        ("discord_roles", &holders.discord_roles),
        ("discord_users", &holders.discord_users),
    ] {
        if let Some(bad) = list.iter().find(|v| !snowflake(v)) {
            bail!("{key}: {bad:?} is not a Discord id (17 to 20 digits): turn on Developer Mode in Discord and use Copy ID");
        }
    }
    // Slack member ids: U or W, then capitals and digits.
    let slack = |v: &str| {
        (v.starts_with('U') || v.starts_with('W'))
            && (3..=20).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    if let Some(bad) = holders.slack_users.iter().find(|v| !slack(v)) {
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

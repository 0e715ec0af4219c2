//! `/oncall` (who is on call, and taking a shift), `/escalate` and `/page`: the on-call side of
//! the core. Who is on duty is the policy's answer (`policies/oncall.toml` plus the overrides
//! in the store); the pages go through the store to the escalation engine, like a chain's.

use chrono::{DateTime, Utc};

use super::core::Core;
use super::{group_name, reply, utc_minute, Ctx, Done, ExecError};
use crate::domain::format_time;
use crate::escalation::engine::active_overrides;
use crate::escalation::{page_title, ways};
use crate::policy::oncall::{DutySource, Override};
use crate::request::page::Page;
use crate::store::NewPage;

/// The longest shift one override takes.
const SHIFT_MAX_DAYS: i64 = 31;

impl Core {
    async fn overrides(&self, now: DateTime<Utc>) -> Result<Vec<Override>, ExecError> {
        active_overrides(&self.store, now)
            .await
            .map_err(|e| ExecError(format!("the on-call overrides cannot be read ({e})")))
    }

    fn names(&self, ids: &[String]) -> String {
        if ids.is_empty() {
            return "nobody".into();
        }
        ids.iter()
            .map(|id| self.policies.people().name_of(id))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `/oncall`: per role, who is on duty now, until when, and who is next.
    pub(super) async fn oncall(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let overrides = self.overrides(ctx.now).await?;
        let mut r = reply(format!("On call now ({}):", utc_minute(ctx.now)), true);
        for on in self.policies.oncall(ctx.now) {
            let role = &on.role;
            let Some(duty) = self.policies.on_duty(&role.name, ctx.now, &overrides) else {
                continue;
            };
            let mut who = self.names(&duty.people);
            if duty.people.is_empty() {
                // The platform lists still grant the role to people runbot cannot name.
                let h = &role.holders;
                let mut ids: Vec<String> = Vec::new();
                ids.extend(h.discord_users.iter().map(|u| format!("<@{u}>")));
                ids.extend(h.discord_roles.iter().map(|r| format!("<@&{r}>")));
                ids.extend(h.slack_users.iter().map(|u| format!("<@{u}>")));
                ids.extend(h.console_users.iter().cloned());
                if !ids.is_empty() {
                    who = ids.join(", ");
                } else {
                    who = "nobody assigned (policies/roles.toml, people.toml)".into();
                }
            }
            match duty.source {
                DutySource::Override => who.push_str(" (override)"),
                DutySource::Rotation | DutySource::Holders => {}
            }
            if let Some(until) = duty.until {
                who.push_str(&format!(" · until {}", utc_minute(until)));
            }
            if let Some((next, at)) = &duty.next {
                who.push_str(&format!(
                    " · next: {} at {}",
                    self.names(next),
                    utc_minute(*at)
                ));
            }
            let state = if duty.in_hours {
                "🟢 on call"
            } else {
                "⚪ off hours"
            };
            r.fields.push((
                format!("{} · {} · {state}", role.name, role.hours.as_str()),
                who,
            ));
        }
        Ok(Done {
            reply: r,
            summary: "listed who is on call".into(),
        })
    }

    /// `/oncall override role:R person:P for:8h` (or `from`/`until`): takes a shift.
    pub(super) async fn take_shift(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let usage = "usage: /oncall override role:<role> person:<person> for:<8h> (or from:<time> until:<time>)";
        let (Some(role), Some(person)) = (ctx.text("role"), ctx.text("person")) else {
            return Err(ExecError(format!(
                "an override needs role and person; {usage}"
            )));
        };
        if self.policies.roles().get(role).is_none() {
            let known: Vec<&str> = self.policies.roles().names().collect();
            return Err(ExecError(format!(
                "there is no role {role:?}; roles: {}",
                known.join(", ")
            )));
        }
        if self.policies.people().get(person).is_none() {
            let known: Vec<&str> = self
                .policies
                .people()
                .iter()
                .map(|p| p.id.as_str())
                .collect();
            return Err(ExecError(format!(
                "there is no person {person:?} in policies/people.toml; people: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        }
        // Covering for a role one does not hold is allowed (someone must take the DBA's night):
        // the pages reach them, and acknowledging is open to every on-call role, but the role's
        // own commands stay with its holders. The answer says so.
        let holds = match (
            self.policies.roles().get(role),
            self.policies.people().get(person),
        ) {
            (Some(r), Some(who)) => r.held_by_person(who),
            _ => false,
        };
        let tz = self.policies.clock().tz;
        let read = |name: &str| -> Result<Option<DateTime<Utc>>, ExecError> {
            ctx.text(name)
                .map(|v| {
                    crate::policy::oncall::parse_time(v, tz).map_err(|_| {
                        ExecError(format!(
                            "{name}:{v:?} is not a time: use 2026-12-24T18:00 (in {}) or RFC 3339",
                            tz.name()
                        ))
                    })
                })
                .transpose()
        };
        let from = read("from")?.unwrap_or(ctx.now);
        let until = match (ctx.text("for"), read("until")?) {
            (Some(d), None) => {
                let d = crate::domain::duration::parse(d)
                    .ok_or_else(|| ExecError(format!("for:{d:?} is not a duration such as 8h")))?;
                from + chrono::Duration::from_std(d).unwrap_or_default()
            }
            (None, Some(u)) => u,
            (Some(_), Some(_)) => {
                return Err(ExecError(format!("give for or until, not both; {usage}")))
            }
            (None, None) => return Err(ExecError(format!("how long? {usage}"))),
        };
        if until <= from {
            return Err(ExecError("the shift must end after it starts".into()));
        }
        if until <= ctx.now {
            return Err(ExecError("that shift is already over".into()));
        }
        if until - from > chrono::Duration::days(SHIFT_MAX_DAYS) {
            return Err(ExecError(format!(
                "an override lasts at most {SHIFT_MAX_DAYS} days; change policies/oncall.toml for longer"
            )));
        }
        let id = self
            .store
            .add_override(
                role,
                person,
                &format_time(from),
                &format_time(until),
                &ctx.actor.name,
                &format_time(ctx.now),
            )
            .await
            .map_err(|e| ExecError(format!("the database did not take the override ({e})")))?;
        let name = self.policies.people().name_of(person);
        let text = format!(
            "🔁 **{name}** is on call for **{role}** from {} until {} (override #{id}, by {}).",
            utc_minute(from),
            utc_minute(until),
            ctx.actor.name
        );
        let reply_text = if holds {
            text.clone()
        } else {
            format!(
                "{text}\n⚠️ {name} does not hold {role}: they are paged for it and may acknowledge, but {role}'s commands need the role (add \"{person}\" to people = [...] of [roles.{role}] in policies/roles.toml)."
            )
        };
        if let Err(e) = self
            .store
            .announce_everywhere(&text, &format_time(ctx.now))
            .await
        {
            tracing::warn!(error = %e, "an override's announcement was not queued");
        }
        Ok(Done {
            reply: reply(reply_text, false),
            summary: format!("{person} takes {role} until {}", format_time(until)),
        })
    }

    /// `/escalate`: the group's next step fires now.
    pub(super) async fn escalate(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let g = ctx.group()?;
        let moved = self
            .store
            .escalate_now(g.id, &format_time(ctx.now))
            .await
            .map_err(|e| ExecError(format!("the database did not take it ({e})")))?;
        let name = group_name(g);
        if !moved {
            return Err(ExecError(format!(
                "{name} has no escalation to move on (resolved, or no chain in policies/escalation.toml for it); use /page role:… to wake someone"
            )));
        }
        self.escalation.changed();
        Ok(Done {
            reply: reply(
                format!(
                    "⏩ **{}** moved {name}'s escalation to its next step; runbot is paging it now.",
                    ctx.actor.name
                ),
                false,
            ),
            summary: format!("escalated {name}"),
        })
    }

    /// `/page role:R|person:P reason:…`: pages whoever is on call for the role, or the person,
    /// on every way configured.
    pub(super) async fn page(&self, ctx: &Ctx<'_>) -> Result<Done, ExecError> {
        let reason = ctx.text("reason").unwrap_or_default();
        if self.policies.people().are_examples() {
            return Err(ExecError(crate::escalation::engine::EXAMPLES_NOTE.into()));
        }
        let overrides = self.overrides(ctx.now).await?;
        let (targets, role) = match (ctx.text("role"), ctx.text("person")) {
            (Some(role), None) => {
                let Some(duty) = self.policies.on_duty(role, ctx.now, &overrides) else {
                    let known: Vec<&str> = self.policies.roles().names().collect();
                    return Err(ExecError(format!(
                        "there is no role {role:?}; roles: {}",
                        known.join(", ")
                    )));
                };
                if duty.people.is_empty() {
                    return Err(ExecError(format!(
                        "nobody runbot can page holds {role}: list people for it in policies/roles.toml (people = [...]) or policies/oncall.toml"
                    )));
                }
                (duty.people, Some(role.to_string()))
            }
            (None, Some(person)) => {
                if self.policies.people().get(person).is_none() {
                    return Err(ExecError(format!(
                        "there is no person {person:?} in policies/people.toml"
                    )));
                }
                (vec![person.to_string()], None)
            }
            _ => {
                return Err(ExecError(
                    "give role or person (one of them): /page role:cto reason:\"…\"".into(),
                ))
            }
        };
        let (title, summary) = match ctx.group {
            Some(g) => page_title(g, &self.runbook),
            None => (format!("Paged by {}", ctx.actor.name), String::new()),
        };
        let why = format!("paged by hand by {}: {reason}", ctx.actor.name);
        let mut pages = Vec::new();
        let mut unreachable = Vec::new();
        for id in &targets {
            let Some(person) = self.policies.people().get(id) else {
                continue;
            };
            let found = ways(person, &self.reach);
            if found.is_empty() {
                unreachable.push(person.name.clone());
            }
            for (via, target) in found {
                let page = Page {
                    id: 0,
                    group_id: ctx.group.map(|g| g.id),
                    severity: ctx.group.map(|g| g.severity.as_str().to_string()),
                    title: title.clone(),
                    summary: summary.clone(),
                    person: person.name.clone(),
                    role: role.clone(),
                    reason: why.clone(),
                    url: None,
                };
                pages.push(NewPage {
                    person: id.clone(),
                    role: role.clone(),
                    via: via.to_string(),
                    target,
                    body: serde_json::to_string(&page).unwrap_or_default(),
                });
            }
        }
        if pages.is_empty() {
            return Err(ExecError(format!(
                "runbot has no way to reach {}: give them discord, console or email in policies/people.toml, and configure that way",
                unreachable.join(", ")
            )));
        }
        self.store
            .queue_pages(ctx.group.map(|g| g.id), &pages, &format_time(ctx.now))
            .await
            .map_err(|e| ExecError(format!("the database did not take the page ({e})")))?;
        self.escalation.changed();
        let who = self.names(&targets);
        let mut text = format!(
            "📟 Paging **{who}**{} ({} way{}).",
            role.as_deref()
                .map(|r| format!(" for {r}"))
                .unwrap_or_default(),
            pages.len(),
            if pages.len() == 1 { "" } else { "s" }
        );
        if !unreachable.is_empty() {
            text.push_str(&format!(" No way to reach {}.", unreachable.join(", ")));
        }
        Ok(Done {
            reply: reply(text, false),
            summary: format!("paged {who}"),
        })
    }
}

//! `runbot check-config`: what runbot would use, read from the settings and data files.

use super::Data;
use crate::config::Settings;

/// Prints the report to stdout (problems to stderr); returns the exit code: 2 when the data
/// files are wrong. (Wrong settings never get here: loading them failed with exit 2.)
pub fn check_config(settings: &Settings) -> u8 {
    let data = match Data::load(settings) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("invalid data files: {e:#}");
            return 2;
        }
    };
    if let Err(e) = super::check_chain_webhooks(settings, &data.policies) {
        eprintln!("invalid data files: {e:#}");
        return 2;
    }
    let auth = match (
        &settings.alertmanager.webhook_token,
        &settings.alertmanager.basic_auth,
    ) {
        (Some(_), Some(_)) => "bearer token or basic auth",
        (Some(_), None) => "bearer token",
        (None, Some(_)) => "basic auth",
        (None, None) => "none: loopback callers only",
    };
    println!("settings ok");
    println!("  http.listen          {}", settings.http.listen);
    println!("  http.max_body_bytes  {}", settings.http.max_body_bytes);
    let h = &settings.http;
    println!(
        "  http limits          headers {} s, body {} s, {} connections, shutdown {} s",
        h.header_timeout_secs, h.body_timeout_secs, h.max_connections, h.shutdown_timeout_secs
    );
    println!(
        "  http hosts           {}",
        match &h.allowed_hosts {
            Some(list) => list.join(", "),
            None if settings.parsed.loopback_only() =>
                "127.0.0.1, localhost, [::1] (with the port)".into(),
            None => "any".into(),
        }
    );
    let c = &settings.console;
    println!(
        "  console              signed-in sessions (idle {} min, at most {} h, {} cookies){}",
        c.session_idle_minutes,
        c.session_max_hours,
        if c.insecure_cookies {
            "plain"
        } else {
            "Secure"
        },
        if c.token.is_some() {
            ", and console.token to read"
        } else {
            ""
        }
    );
    println!(
        "  database             {:?}",
        settings.database.backend().expect("validated")
    );
    println!("  webhook auth         {auth}");
    let d = &settings.discord;
    match (d.enabled(), d.mode) {
        (false, _) => println!("  discord              off (discord.bot_token not set)"),
        (true, crate::config::DiscordMode::Gateway) => println!(
            "  discord              gateway mode: interactions arrive over a Gateway connection runbot opens (no inbound address needed)"
        ),
        (true, crate::config::DiscordMode::Http) => println!(
            "  discord              http mode: interactions arrive at POST /discord/interactions{}",
            if d.public_key.is_some() {
                ""
            } else {
                " (discord.public_key not set: refused with 404)"
            }
        ),
    }
    let sl = &settings.slack;
    match (sl.enabled(), sl.effective_mode()) {
        (false, _) => println!("  slack                off (slack.bot_token not set)"),
        (true, crate::config::SlackMode::Socket) => println!(
            "  slack                socket mode: commands and clicks arrive over a WebSocket runbot opens (no inbound address needed); cards to {}",
            sl.alert_channel_id.as_deref().unwrap_or("?")
        ),
        (true, crate::config::SlackMode::Http) => println!(
            "  slack                http mode: commands and clicks arrive at POST /slack/commands and /slack/interactions; cards to {}",
            sl.alert_channel_id.as_deref().unwrap_or("?")
        ),
    }
    println!("  policies             {}", data.policy_source);
    let roles: Vec<&str> = data.policies.roles().names().collect();
    println!(
        "  roles                {} ({})",
        roles.len(),
        roles.join(", ")
    );
    println!(
        "  policy rules         {} in runbot.cedar, valid against the schema of {} commands",
        data.policies.rules().len(),
        data.commands.len()
    );
    let p = &data.policies;
    println!(
        "  people               {}{}",
        p.people().len(),
        if p.people().is_empty() {
            " (no people.toml: nobody is paged by name)".to_string()
        } else if p.people().are_examples() {
            format!(
                " ({}): the shipped EXAMPLES (examples = true): nobody is paged until you list your team and delete that line",
                p.people().ids().collect::<Vec<_>>().join(", ")
            )
        } else {
            format!(" ({})", p.people().ids().collect::<Vec<_>>().join(", "))
        }
    );
    let rotations: Vec<String> = p
        .rotations()
        .iter()
        .map(|r| format!("{} ({} each among {})", r.role, r.turn, r.people.join(", ")))
        .collect();
    println!(
        "  rotations            {}{}",
        rotations.len(),
        if rotations.is_empty() {
            " (roles page everyone they list)".to_string()
        } else {
            format!(": {}", rotations.join("; "))
        }
    );
    let chains: Vec<String> = p
        .chains()
        .iter()
        .map(|c| {
            let n = c.steps.len();
            format!("{} ({n} step{})", c.name, if n == 1 { "" } else { "s" })
        })
        .collect();
    println!(
        "  chains               {}{}",
        chains.len(),
        if chains.is_empty() {
            " (no escalation.toml: nobody is paged)".to_string()
        } else {
            format!(": {}", chains.join(", "))
        }
    );
    let clock = data.policies.clock();
    println!(
        "  policy clock         {}, business hours {}",
        clock.tz.name(),
        clock.business
    );
    println!(
        "  commands             {} ({} runbook entries)",
        data.commands_source,
        data.runbook.len()
    );
    match &settings.docker.project {
        Some(project) => println!(
            "  docker               project {project} at {}",
            settings.docker.host
        ),
        None => {
            println!("  docker               docker.project not set: /status and /logs will say so")
        }
    }
    match super::app_database(settings) {
        Some(db) => println!(
            "  app database         {}, backups in {}",
            db.target(),
            db.backup_dir().display()
        ),
        None => println!(
            "  app database         app_database.url not set: /backup, /restore and /db will say so"
        ),
    }
    let d = &settings.deploy;
    if d.services.is_empty() {
        println!(
            "  deploy               deploy.services not set: /deploy and /rollback will say so"
        );
    } else {
        println!(
            "  deploy               {}; backup {}; migrate {}; {} health and {} smoke checks",
            d.services.join(", "),
            if d.backup { "first" } else { "off" },
            d.migrate
                .as_ref()
                .map(|m| format!("`{}` in {}", m.command.join(" "), m.service))
                .unwrap_or_else(|| "none".into()),
            d.health.len(),
            d.smoke.len()
        );
    }
    let n = &settings.nginx;
    match &n.deny_file {
        None => println!(
            "  nginx                nginx.deny_file not set: /block-ip, /unblock-ip and /blocked will say so"
        ),
        Some(f) => println!(
            "  nginx                deny list {} ({}); test `{}`, reload `{}`; approval beyond /{} and /{}; {} allow-listed",
            f.display(),
            match n.mode {
                crate::config::NginxMode::Host => "on this host".to_string(),
                crate::config::NginxMode::Container => format!("in service {}", n.service),
            },
            n.test.join(" "),
            n.reload.join(" "),
            n.max_prefix_v4,
            n.max_prefix_v6,
            n.allow_list.len()
        ),
    }
    match &settings.parsed.email {
        None => println!("  email                email.host not set: no email pages"),
        Some(server) => println!(
            "  email                {}",
            crate::escalation::email::describe(server)
        ),
    }
    let hooks: Vec<&str> = settings
        .parsed
        .webhooks
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    if hooks.is_empty() {
        println!("  webhooks             none in [[notify.webhooks]]");
    } else {
        println!("  webhooks             {}", hooks.join(", "));
    }
    match &settings.security.log_path {
        None => println!("  security log         security.log_path not set: /security will say so"),
        Some(p) => println!("  security log         {}", p.display()),
    }
    0
}

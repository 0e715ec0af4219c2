//! `runbot audit verify|head|export`.

use std::io::Write;

use clap::Subcommand;

use super::{Audit, AuditError, AuditFilter, ExpectedHead, ExportFormat};
use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; name the first row that was changed, removed or reordered
    /// (exit 1), or say how many rows are intact (exit 0). Exit 2 if it cannot be read.
    Verify {
        /// Also fail (exit 1) unless this head, printed earlier by `runbot audit head` or
        /// logged by `runbot serve` ("audit head"), is still in the trail: catches a cut-off
        /// or rewritten end, which the chain alone cannot show. ID:HASH, "ID HASH" or HASH.
        #[arg(long, value_name = "ID:HASH")]
        expect_head: Option<ExpectedHead>,
    },
    /// Print the last row's id and hash ("ID HASH"), to keep for `verify --expect-head`.
    Head,
    /// Write audit rows to stdout, oldest first.
    Export {
        /// jsonl (one JSON object per line) or csv (with a header row).
        #[arg(long, value_name = "FORMAT", default_value = "jsonl")]
        format: ExportFormat,
        /// Only rows written at or after this time (RFC 3339, e.g. 2026-05-01T00:00:00Z).
        #[arg(long, value_name = "TIME", value_parser = crate::domain::time::parse_cli_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only rows of this actor (the platform's user id).
        #[arg(long, value_name = "ID")]
        actor: Option<String>,
        /// Only rows written before this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = crate::domain::time::parse_cli_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only rows of this command.
        #[arg(long, value_name = "NAME")]
        command: Option<String>,
        /// Only rows of this step: requested, denied, succeeded, failed, …
        #[arg(long, value_name = "STEP")]
        step: Option<super::Step>,
    },
}

/// Runs one `runbot audit …` command, writing to `out`; returns the exit code: 0 when done
/// (and the chain intact), 1 when the chain is broken, 2 when the trail cannot be read.
pub async fn run(settings: &Settings, command: AuditCommand, out: &mut dyn Write) -> u8 {
    let store = match super::open_store(&settings.database).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("runbot: {e:#}");
            return 2;
        }
    };
    let audit = Audit::new(store.clone());
    let code = match command {
        AuditCommand::Verify { expect_head } => verify(&audit, expect_head, out).await,
        AuditCommand::Head => match audit.head().await {
            Ok(Some(head)) => written(writeln!(out, "{} {}", head.id, head.hash), 0),
            Ok(None) => written(writeln!(out, "audit trail empty: no rows yet"), 0),
            Err(e) => {
                eprintln!("runbot: cannot read the audit head: {e}");
                2
            }
        },
        AuditCommand::Export {
            format,
            since,
            until,
            actor,
            command,
            step,
        } => {
            let filter = AuditFilter {
                since,
                until,
                actor_id: actor,
                command,
                step: step.map(|s| s.as_str().to_string()),
                invocation_id: None,
            };
            match audit.export(format, &filter, out).await {
                Ok(_) => 0,
                // `runbot audit export | head` is not an error.
                Err(AuditError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => {
                    eprintln!("runbot: cannot export the audit trail: {e}");
                    2
                }
            }
        }
    };
    store.close().await;
    code
}

async fn verify(audit: &Audit, expect_head: Option<ExpectedHead>, out: &mut dyn Write) -> u8 {
    let checked = async {
        let report = audit.verify().await?;
        let head = match &expect_head {
            Some(expected) => Some(audit.check_head(expected).await?),
            None => None,
        };
        Ok::<_, AuditError>((report, head))
    };
    match checked.await {
        Ok((report, head)) => {
            let mut text = format!("{report}\n");
            if let (None, Some(last)) = (&report.problem, &report.head) {
                text += &format!("last row {}, hash {}\n", last.id, last.hash);
            }
            if let Some(check) = &head {
                text += &format!("{check}\n");
            }
            let passed = report.is_intact() && head.as_ref().is_none_or(|c| c.passed());
            written(out.write_all(text.as_bytes()), if passed { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("runbot: cannot verify the audit trail: {e}");
            2
        }
    }
}

/// `code`, unless stdout is gone (as `println!` would have panicked, but quietly).
fn written(result: std::io::Result<()>, code: u8) -> u8 {
    match result {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("runbot: cannot write to stdout: {e}");
            2
        }
    }
}

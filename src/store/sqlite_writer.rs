//! SQLite's writer: the batch is stored from the writer thread itself with rusqlite, one
//! cached statement per step and point lookups by key, so storing a webhook makes no async
//! round trip. The logic of what changes is shared with PostgreSQL ([`super::ingest`]).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::ingest::{
    alert_from_row, alert_row, group_from_row, group_row, Applied, Columns, WorkingSet,
    ALERT_COLUMNS, ALERT_UPSERT, GROUP_COLUMNS, GROUP_UPSERT, OUTBOX_INSERT, OUTBOX_UPSERT,
};
use super::{values_list, Receipt, UnknownValue, WalShared};
use crate::config::Backend;
use crate::domain::alert::{IncomingGroup, Lifecycle};
use crate::domain::GroupStatus;

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, col: &str) -> rusqlite::Result<String> {
        self.get(col)
    }
    fn opt_text(&self, col: &str) -> rusqlite::Result<Option<String>> {
        self.get(col)
    }
    fn int(&self, col: &str) -> rusqlite::Result<i64> {
        self.get(col)
    }
    fn unknown(&self, col: &str, value: String) -> rusqlite::Error {
        let index = self.as_ref().column_index(col).unwrap_or_default();
        let column = col.to_string();
        let why = Box::new(UnknownValue { column, value });
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, why)
    }
}

/// The writer's own connection to the database file.
pub struct SqliteWriter {
    conn: Connection,
    /// Shared with the checkpointer (see `checkpoint_wal`).
    wal: Arc<WalShared>,
    /// Chat platforms whose cards each change queues in the outbox.
    chat_platforms: Arc<[String]>,
}

impl SqliteWriter {
    pub fn open(
        path: &Path,
        wal: Arc<WalShared>,
        chat_platforms: Arc<[String]>,
    ) -> rusqlite::Result<SqliteWriter> {
        let conn = Connection::open(path)?;
        // Checkpoints run from a reader connection (see `checkpoint_wal`), not in the writer.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 1000; \
             PRAGMA foreign_keys = ON; PRAGMA cache_size = -8192; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = 67108864;",
        )?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(SqliteWriter {
            conn,
            wal,
            chat_platforms,
        })
    }

    /// Takes the write lock and releases it: would a write succeed now?
    pub fn probe(&mut self) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE runbot_meta SET value = value WHERE key = 'probe'",
            [],
        )?;
        tx.commit()
    }

    /// Copies the log's tail into the database when the checkpointer asks (see
    /// [`WalShared::finish_wanted`]), so the next commit can start the log over. Answers the
    /// checkpoint's (busy, frames in the log, frames copied) when it ran.
    pub fn finish_checkpoint(&mut self) -> Option<(i64, i64, i64)> {
        if !self.wal.finish_wanted.swap(false, Ordering::AcqRel) {
            return None;
        }
        let started = std::time::Instant::now();
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            });
        match result {
            Ok((busy, frames, copied)) => {
                let took = started.elapsed();
                tracing::debug!(busy, frames, copied, ?took, "writer copied the WAL's tail");
                Some((busy, frames, copied))
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                None
            }
        }
    }

    /// Stores a batch in one transaction; same outcome as [`super::Store::ingest`].
    pub fn ingest(
        &mut self,
        batch: &[&IncomingGroup],
        now: DateTime<Utc>,
        lifecycle: Lifecycle,
    ) -> rusqlite::Result<Vec<Receipt>> {
        let mut set = WorkingSet::new(batch, now);
        let now = set.now.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut group = tx.prepare_cached(&format!(
                "SELECT id, {GROUP_COLUMNS} FROM alert_groups WHERE group_key = ?1 AND receiver = ?2"
            ))?;
            for gi in 0..set.keys.len() {
                let (receiver, key) = set.keys[gi];
                if let Some(loaded) = group
                    .query_row(params![key, receiver], |row| group_from_row(row))
                    .optional()?
                {
                    set.loaded(gi, loaded);
                }
            }
            let mut alert = tx.prepare_cached(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE group_id = ?1 AND fingerprint = ?2"
            ))?;
            let mut firing = tx.prepare_cached(&format!(
                "SELECT fingerprint, {ALERT_COLUMNS} FROM alerts WHERE group_id = ?1 AND status = 'firing'"
            ))?;
            for g in set.batch {
                let gi = set.group_of(g);
                let Some(id) = set.ids[gi] else {
                    continue;
                };
                for a in &g.alerts {
                    let fp = a.fingerprint.as_str();
                    if set.alerts[gi].contains_key(fp) {
                        continue;
                    }
                    if let Some(state) = alert
                        .query_row(params![id, fp], |row| alert_from_row(row))
                        .optional()?
                    {
                        set.alerts[gi].insert(fp.to_string(), (state, false));
                    }
                }
                // A group that resolves as a whole needs every firing alert, also those not sent.
                if g.status == GroupStatus::Resolved {
                    let mut rows = firing.query(params![id])?;
                    while let Some(row) = rows.next()? {
                        let fp: String = row.get("fingerprint")?;
                        if let std::collections::hash_map::Entry::Vacant(slot) =
                            set.alerts[gi].entry(fp)
                        {
                            slot.insert((alert_from_row(row)?, false));
                        }
                    }
                }
            }
        }
        let applied = set.apply_all(lifecycle);
        let ids = write(&tx, &applied, &now, &self.chat_platforms)?;
        tx.commit()?;
        self.wal
            .written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(applied.receipts(&ids))
    }
}

fn write(
    tx: &rusqlite::Transaction<'_>,
    applied: &Applied,
    now: &str,
    chat_platforms: &[String],
) -> rusqlite::Result<Vec<i64>> {
    let mut ids: Vec<i64> = applied.ids.iter().map(|id| id.unwrap_or(0)).collect();
    let one_row = |cols| values_list(Backend::Sqlite, 1, cols, 1);
    let mut insert_group = tx.prepare_cached(&format!(
        "INSERT INTO alert_groups ({GROUP_COLUMNS}) VALUES {} RETURNING id",
        one_row(15)
    ))?;
    let mut update_group = tx.prepare_cached(&format!(
        "INSERT INTO alert_groups (id, {GROUP_COLUMNS}) VALUES {} {GROUP_UPSERT}",
        one_row(16)
    ))?;
    for (gi, g) in applied.groups.iter().enumerate() {
        match applied.ids[gi] {
            None => ids[gi] = insert_group.query_row(group_row!(; g), |r| r.get(0))?,
            Some(id) if applied.dirty[gi] => {
                update_group.execute(group_row!(id; g))?;
            }
            Some(_) => {}
        }
    }
    let mut upsert_alert = tx.prepare_cached(&format!(
        "INSERT INTO alerts (group_id, fingerprint, {ALERT_COLUMNS}) VALUES {} {ALERT_UPSERT}",
        one_row(11)
    ))?;
    for (gi, fp, s) in applied.changed_alerts() {
        upsert_alert.execute(alert_row!(ids[gi], fp; s))?;
    }
    let mut insert_event = tx.prepare_cached(&format!(
        "INSERT INTO alert_events (group_id, fingerprint, kind, at, recorded_at) VALUES {}",
        one_row(5)
    ))?;
    for (gi, e) in applied.events() {
        insert_event.execute(params![ids[gi], e.fingerprint, e.kind.as_str(), e.at, now])?;
    }
    if !chat_platforms.is_empty() {
        let mut queue =
            tx.prepare_cached(&format!("{OUTBOX_INSERT} {} {OUTBOX_UPSERT}", one_row(4)))?;
        for gi in applied.changed_groups() {
            for platform in chat_platforms {
                queue.execute(params![ids[gi], platform, 1, now])?;
            }
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::SqliteWriter;
    // The test needs a real lifecycle to store anything; only the test reaches up to it.
    use crate::alerts::lifecycle;
    use crate::config::Settings;
    use crate::domain::alert::{Fingerprint, IncomingAlert, IncomingGroup};
    use crate::domain::{AlertStatus, GroupStatus, Severity};
    use crate::store::Store;

    fn webhook(n: usize) -> IncomingGroup {
        let labels = format!("{{\"alertname\":\"G{}\"}}", n % 7);
        IncomingGroup {
            receiver: "bot".into(),
            group_key: format!("{{}}:{{alertname=\"G{}\"}}", n % 7),
            status: GroupStatus::Firing,
            severity: Severity::Sev3,
            severity_note: None,
            runbook: None,
            group_labels: "{}".into(),
            common_labels: "{}".into(),
            common_annotations: "{}".into(),
            external_url: "http://am:9093".into(),
            truncated_alerts: 0,
            alerts: vec![IncomingAlert {
                fingerprint: Fingerprint::parse(&format!("{n:016x}")).unwrap(),
                status: AlertStatus::Firing,
                severity: Severity::Sev3,
                labels,
                annotations: "{}".into(),
                starts_at: "2026-11-27T19:31:13.000000000Z".into(),
                ends_at: None,
                generator_url: "http://p".into(),
            }],
        }
    }

    // A current-thread runtime that the test never yields to: the store's own checkpointer
    // never runs, so only the writer's checkpoint moves the log.
    #[tokio::test(flavor = "current_thread")]
    async fn copying_the_tail_lets_the_next_commit_start_the_log_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let settings =
            Settings::load_from(None, vec![("RUNBOT__DATABASE__URL".into(), url)]).unwrap();
        let store = Store::connect(&settings.database).await.unwrap();
        let wal = store.wal_shared();
        let mut writer =
            SqliteWriter::open(store.sqlite_path().unwrap(), wal.clone(), Arc::from([])).unwrap();
        let now = chrono::Utc::now();

        let first: Vec<IncomingGroup> = (0..50).map(webhook).collect();
        writer
            .ingest(&first.iter().collect::<Vec<_>>(), now, lifecycle::apply)
            .unwrap();
        assert_eq!(writer.finish_checkpoint(), None, "nobody asked");

        wal.finish_wanted.store(true, Ordering::Release);
        let (busy, before, copied) = writer.finish_checkpoint().unwrap();
        assert_eq!((busy, copied), (0, before), "the whole log is copied");
        assert!(!wal.finish_wanted.load(Ordering::Acquire));

        let one = webhook(1000);
        writer.ingest(&[&one], now, lifecycle::apply).unwrap();
        wal.finish_wanted.store(true, Ordering::Release);
        let (_, after, _) = writer.finish_checkpoint().unwrap();
        assert!(
            after < before,
            "the log started over: {after} frames, {before} before"
        );
        assert_eq!(wal.written.load(Ordering::Relaxed), 51);
    }
}

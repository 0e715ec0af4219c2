//! Walking the chain: the first row that was changed, removed or reordered.

use std::fmt;

use super::{row_hash, Audit, AuditError, AuditFilter, AuditHead, AuditRow, GENESIS};
use crate::store::audit::AuditHashColumn;

/// What [`Audit::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows that verified: all of them when the trail is intact, else those before the problem.
    pub rows: u64,
    /// The last row that verified. Keep its hash somewhere else: it pins everything before it.
    pub head: Option<AuditHead>,
    /// The first problem, or None when the whole chain verifies.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            None => write!(f, "audit trail intact: {} rows", self.rows),
            Some(p) => write!(
                f,
                "audit trail broken: {p} ({} rows before it verified)",
                self.rows
            ),
        }
    }
}

/// The first thing wrong with the chain, named by the row where it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The row's content no longer matches its hash.
    Changed { id: i64 },
    /// The row's content matches the hash it had as row `written_as`: rows were swapped or
    /// moved (their ids kept their places).
    Moved { id: i64, written_as: i64 },
    /// Ids `first_missing..=last_missing` are gone: the rows before `id` were removed.
    Removed {
        id: i64,
        first_missing: i64,
        last_missing: i64,
    },
    /// The row's own hash is right but it does not link to the row before it, and no id is
    /// missing. `written_after` is the row it does link to, when that row is still there.
    BrokenLink { id: i64, written_after: Option<i64> },
}

impl Problem {
    /// The row where the problem shows.
    pub fn id(&self) -> i64 {
        match *self {
            Problem::Changed { id }
            | Problem::Moved { id, .. }
            | Problem::Removed { id, .. }
            | Problem::BrokenLink { id, .. } => id,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::Changed { id } => {
                write!(
                    f,
                    "row {id} was changed: its content no longer matches its hash"
                )
            }
            Problem::Moved { id, written_as } => write!(
                f,
                "row {id} was changed: it holds what was written as row {written_as}, \
                 so rows were swapped or reordered"
            ),
            Problem::Removed {
                id,
                first_missing,
                last_missing,
            } if first_missing == last_missing => write!(
                f,
                "the row before {id} was removed: row {first_missing} is missing"
            ),
            Problem::Removed {
                id,
                first_missing,
                last_missing,
            } => write!(
                f,
                "the rows before {id} were removed: rows {first_missing} to {last_missing} \
                 are missing"
            ),
            Problem::BrokenLink {
                id,
                written_after: Some(after),
            } => write!(
                f,
                "the chain breaks before row {id}: it was written after row {after}, \
                 so rows were reordered"
            ),
            Problem::BrokenLink {
                id,
                written_after: None,
            } => write!(
                f,
                "the chain breaks before row {id}: the row before it is not the one it was \
                 written after (replaced with a recomputed hash, or removed and the ids \
                 renumbered)"
            ),
        }
    }
}

impl Audit {
    /// Walks the whole chain in id order, a page at a time, and names the first problem: a
    /// row whose content no longer matches its hash, a gap in the ids (removed rows), or a row
    /// that does not link to the one before it (reordered rows). An empty trail is intact.
    ///
    /// A chain cannot prove its own tail: removing the last rows leaves a shorter chain that
    /// verifies, and someone who can write the table can rewrite every row from some point to
    /// the end with fresh hashes. Compare [`VerifyReport::head`] and the row count with what
    /// you recorded earlier (regular exports, `runbot_audit_appended_total`) to catch that.
    #[tracing::instrument(skip_all)]
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        let mut head: Option<AuditHead> = None;
        let mut rows = 0u64;
        let all = AuditFilter::default();
        loop {
            let after = head.as_ref().map_or(0, |h| h.id);
            let page = self
                .store()
                .audit_rows_after(after, self.page_size(), &all)
                .await?;
            if page.is_empty() {
                return Ok(VerifyReport {
                    rows,
                    head,
                    problem: None,
                });
            }
            for row in page {
                if let Some(problem) = self.check(head.as_ref(), &row).await? {
                    return Ok(VerifyReport {
                        rows,
                        head,
                        problem: Some(problem),
                    });
                }
                rows += 1;
                head = Some(AuditHead {
                    id: row.id,
                    hash: row.hash,
                });
            }
        }
    }

    /// What is wrong with `row`, given the last row that verified.
    async fn check(
        &self,
        prev: Option<&AuditHead>,
        row: &AuditRow,
    ) -> Result<Option<Problem>, AuditError> {
        let expected_id = prev.map_or(1, |p| p.id + 1);
        let expected_prev = prev.map_or(GENESIS, |p| p.hash.as_str());
        if row_hash(row) != row.hash {
            return Ok(Some(self.explain_changed(row).await?));
        }
        if row.id != expected_id {
            return Ok(Some(Problem::Removed {
                id: row.id,
                first_missing: expected_id,
                last_missing: row.id - 1,
            }));
        }
        if row.prev_hash != expected_prev {
            let written_after = self
                .store()
                .audit_id_where(AuditHashColumn::Hash, &row.prev_hash)
                .await?;
            return Ok(Some(Problem::BrokenLink {
                id: row.id,
                written_after,
            }));
        }
        Ok(None)
    }

    /// A row whose hash does not match: changed in place, or content moved from another id
    /// (a swap keeps the ids where they were). Content written as row k still hashes right
    /// with id k, and row k + 1 (or nothing, if k was last) links to that hash.
    async fn explain_changed(&self, row: &AuditRow) -> Result<Problem, AuditError> {
        let store = self.store();
        let mut candidates = Vec::with_capacity(2);
        if let Some(next) = store
            .audit_id_where(AuditHashColumn::PrevHash, &row.hash)
            .await?
        {
            candidates.push(next - 1);
        }
        if let Some(last) = store.audit_head().await? {
            candidates.push(last.id);
        }
        for written_as in candidates {
            if written_as == row.id {
                continue;
            }
            let moved = AuditRow {
                id: written_as,
                ..row.clone()
            };
            if row_hash(&moved) == row.hash {
                return Ok(Problem::Moved {
                    id: row.id,
                    written_as,
                });
            }
        }
        Ok(Problem::Changed { id: row.id })
    }
}

//! Walking the chain: the first row that was changed, removed or reordered; and whether a head
//! recorded earlier is still there, which the chain alone cannot tell.

use std::fmt;
use std::str::FromStr;

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
    /// the end with fresh hashes. [`Audit::check_head`] compares with a head recorded earlier
    /// (`runbot audit head`, the `audit head` log line) to catch that.
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

/// A head recorded earlier: a row's hash, and its id when known. Parsed from `ID:HASH`,
/// `ID HASH` (the line `runbot audit head` prints) or `HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedHead {
    pub id: Option<i64>,
    /// 64 lowercase hex digits.
    pub hash: String,
}

impl FromStr for ExpectedHead {
    type Err = String;

    fn from_str(s: &str) -> Result<ExpectedHead, String> {
        const FORM: &str = "expected HASH, ID:HASH or the line `runbot audit head` prints \
                            (ID HASH), where HASH is 64 hex digits and ID a row number";
        let s = s.trim();
        let (id, hash) = match s.split_once([':', ' ']) {
            Some((id, hash)) => {
                let id = id
                    .parse::<i64>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| format!("{id:?} is not a row number: {FORM}"))?;
                (Some(id), hash.trim())
            }
            None => (None, s),
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{hash:?} is not a hash: {FORM}"));
        }
        Ok(ExpectedHead {
            id,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

impl fmt::Display for ExpectedHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "row {id} with hash {}", self.hash),
            None => write!(f, "row with hash {}", self.hash),
        }
    }
}

/// What [`Audit::check_head`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadCheck {
    /// Row `id` holds the expected hash; `highest` is the last id now (the trail may have grown).
    Present { id: i64, highest: i64 },
    /// No row holds it: the end of the trail was cut off or rewritten. `highest` is the last id
    /// present, None for an empty trail.
    Missing {
        expected: ExpectedHead,
        highest: Option<i64>,
    },
    /// Row `id` is there with another hash: it, or a row before it, was rewritten.
    Different {
        id: i64,
        hash: String,
        expected: String,
    },
}

impl HeadCheck {
    pub fn passed(&self) -> bool {
        matches!(self, HeadCheck::Present { .. })
    }
}

impl fmt::Display for HeadCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadCheck::Present { id, highest } if id == highest => {
                write!(f, "expected head present: row {id} is still the last row")
            }
            HeadCheck::Present { id, highest } => write!(
                f,
                "expected head present: row {id}, and {} rows written since (last row {highest})",
                highest - id
            ),
            HeadCheck::Missing { expected, highest } => {
                write!(f, "expected head missing: no {expected} ")?;
                match highest {
                    Some(h) => write!(f, "(the highest id present is {h})")?,
                    None => write!(f, "(the trail is empty)")?,
                }
                write!(f, ", so the end of the trail was cut off or rewritten")
            }
            HeadCheck::Different { id, hash, expected } => write!(
                f,
                "expected head changed: row {id} has hash {hash}, not {expected}, so it or a row \
                 before it was rewritten"
            ),
        }
    }
}

impl Audit {
    /// Whether a head recorded earlier is still in the trail. With [`Audit::verify`] passing,
    /// a present head means every row up to it is as it was when it was recorded.
    pub async fn check_head(&self, expected: &ExpectedHead) -> Result<HeadCheck, AuditError> {
        let store = self.store();
        let found = match expected.id {
            Some(id) => match store.audit_hash_of(id).await? {
                Some(hash) if hash == expected.hash => Some(id),
                Some(hash) => {
                    return Ok(HeadCheck::Different {
                        id,
                        hash,
                        expected: expected.hash.clone(),
                    })
                }
                None => None,
            },
            None => {
                store
                    .audit_id_where(AuditHashColumn::Hash, &expected.hash)
                    .await?
            }
        };
        let highest = store.audit_head().await?.map(|h| h.id);
        Ok(match (found, highest) {
            (Some(id), Some(highest)) => HeadCheck::Present { id, highest },
            _ => HeadCheck::Missing {
                expected: expected.clone(),
                highest,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ExpectedHead;

    const HASH: &str = "3F5A0000000000000000000000000000000000000000000000000000000000ab";

    #[test]
    fn an_expected_head_is_a_hash_with_an_optional_row_number() {
        let lower = HASH.to_ascii_lowercase();
        for (text, id) in [
            (HASH.to_string(), None),
            (format!("12:{HASH}"), Some(12)),
            (format!("12 {HASH}\n"), Some(12)),
        ] {
            let head: ExpectedHead = text.parse().unwrap();
            assert_eq!(
                head,
                ExpectedHead {
                    id,
                    hash: lower.clone()
                },
                "{text:?}"
            );
        }
        for bad in [
            "",
            "12",
            "12:",
            &HASH[1..],
            &format!("{HASH}0"),
            &format!("0:{HASH}"),
            &format!("-3:{HASH}"),
            &format!("x:{HASH}"),
            &HASH.replace('F', "g"),
        ] {
            let err = bad.parse::<ExpectedHead>().unwrap_err();
            assert!(err.contains("64 hex digits"), "{bad:?}: {err}");
        }
    }
}

//! Writing rows out for people and other tools: JSON lines or CSV, oldest first.

use std::io::Write;
use std::str::FromStr;

use super::{Audit, AuditError, AuditFilter, AuditRecord, AuditRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line with every column; `args`, `origin` and `detail` as JSON.
    Jsonl,
    /// A header row, then one row per record; `args`, `origin` and `detail` as their stored
    /// JSON text, an absent `reason` or `detail` as an empty cell.
    Csv,
}

impl FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<ExportFormat, String> {
        match s {
            "jsonl" => Ok(ExportFormat::Jsonl),
            "csv" => Ok(ExportFormat::Csv),
            other => Err(format!("unknown export format {other:?}: use jsonl or csv")),
        }
    }
}

/// The CSV header, in the table's column order.
pub const CSV_HEADER: [&str; 14] = [
    "id",
    "at",
    "invocation_id",
    "step",
    "actor_platform",
    "actor_id",
    "actor_name",
    "command",
    "args",
    "origin",
    "reason",
    "detail",
    "prev_hash",
    "hash",
];

impl Audit {
    /// Writes every row that matches `filter` to `out`, oldest first, reading a page at a
    /// time. Answers how many rows were written.
    pub async fn export<W: Write>(
        &self,
        format: ExportFormat,
        filter: &AuditFilter,
        out: W,
    ) -> Result<u64, AuditError> {
        let mut sink = match format {
            ExportFormat::Csv => {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(CSV_HEADER).map_err(csv_error)?;
                Sink::Csv(Box::new(w))
            }
            ExportFormat::Jsonl => Sink::Jsonl(std::io::BufWriter::new(out)),
        };
        let mut after = 0;
        let mut written = 0u64;
        loop {
            let page = self
                .store()
                .audit_rows_after(after, self.page_size(), filter)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for row in page {
                sink.write(row)?;
                written += 1;
            }
        }
        sink.finish()?;
        Ok(written)
    }
}

enum Sink<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Jsonl(std::io::BufWriter<W>),
}

impl<W: Write> Sink<W> {
    fn write(&mut self, row: AuditRow) -> Result<(), AuditError> {
        match self {
            Sink::Csv(w) => w.write_record(csv_record(&row)).map_err(csv_error),
            Sink::Jsonl(w) => {
                let record = AuditRecord::try_from(row)?;
                serde_json::to_writer(&mut *w, &record).map_err(|e| AuditError::Io(e.into()))?;
                w.write_all(b"\n")?;
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<(), AuditError> {
        match self {
            Sink::Csv(mut w) => w.flush()?,
            Sink::Jsonl(mut w) => w.flush()?,
        }
        Ok(())
    }
}

fn csv_record(row: &AuditRow) -> [String; 14] {
    [
        row.id.to_string(),
        row.at.clone(),
        row.invocation_id.clone(),
        row.step.clone(),
        row.actor_platform.clone(),
        row.actor_id.clone(),
        row.actor_name.clone(),
        row.command.clone(),
        row.args.clone(),
        row.origin.clone(),
        row.reason.clone().unwrap_or_default(),
        row.detail.clone().unwrap_or_default(),
        row.prev_hash.clone(),
        row.hash.clone(),
    ]
}

fn csv_error(e: csv::Error) -> AuditError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => AuditError::Io(e),
        other => AuditError::Export(format!("{other:?}")),
    }
}

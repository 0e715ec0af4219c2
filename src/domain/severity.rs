//! Sev1–Sev4: how bad an alert is, as `policies/severities.toml` maps its labels.

use serde::{Deserialize, Serialize};

/// Sev1 is the most severe. Ordering follows severity: `Sev1 < Sev2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    #[serde(rename = "sev1")]
    Sev1,
    #[serde(rename = "sev2")]
    Sev2,
    #[serde(rename = "sev3")]
    Sev3,
    #[serde(rename = "sev4")]
    Sev4,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Self::Sev1, Self::Sev2, Self::Sev3, Self::Sev4];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sev1 => "sev1",
            Self::Sev2 => "sev2",
            Self::Sev3 => "sev3",
            Self::Sev4 => "sev4",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::Sev1 => "Sev1",
            Self::Sev2 => "Sev2",
            Self::Sev3 => "Sev3",
            Self::Sev4 => "Sev4",
        }
    }
}

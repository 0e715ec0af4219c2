//! Firing or resolved: an alert's status, and its group's.

use serde::{Deserialize, Serialize};

/// Firing or resolved, stored and shown as `firing` / `resolved`. Two types from one shape, so
/// a group's status and an alert's are not mixed up.
macro_rules! status {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            Firing,
            Resolved,
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    Self::Firing => "firing",
                    Self::Resolved => "resolved",
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    "firing" => Some(Self::Firing),
                    "resolved" => Some(Self::Resolved),
                    _ => None,
                }
            }
        }
    };
}

status!(
    /// An alert's status, as Alertmanager sends it.
    AlertStatus
);
status!(
    /// A group fires while Alertmanager says so (while any of its alerts fires).
    GroupStatus
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_stored_text() {
        for s in [AlertStatus::Firing, AlertStatus::Resolved] {
            assert_eq!(AlertStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in [GroupStatus::Firing, GroupStatus::Resolved] {
            assert_eq!(GroupStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(AlertStatus::parse("Firing"), None);
    }
}

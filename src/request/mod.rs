//! The vocabulary of a request, shared by the core and every chat platform: who asks
//! ([`Actor`], [`Platform`]), from where ([`Origin`]), what ([`Request`]), what the core answers
//! ([`Answer`], [`Reply`]) and how it edits that answer later ([`Responder`]), and every button
//! id ([`button`]). A leaf: it imports nothing else of the crate, so the core and the adapters
//! can both depend on it.

pub mod button;
pub mod page;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use button::{ButtonId, Verb};

/// Where the actor asked from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Discord,
    Slack,
    Console,
    Cli,
}

impl Platform {
    pub const ALL: [Platform; 4] = [
        Platform::Discord,
        Platform::Slack,
        Platform::Console,
        Platform::Cli,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Discord => "discord",
            Platform::Slack => "slack",
            Platform::Console => "console",
            Platform::Cli => "cli",
        }
    }

    /// The platform's name in a sentence: "refused by Discord".
    pub fn title(self) -> &'static str {
        match self {
            Platform::Discord => "Discord",
            Platform::Slack => "Slack",
            Platform::Console => "the console",
            Platform::Cli => "the command line",
        }
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Platform, String> {
        Platform::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown actor platform {s:?}"))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub platform: Platform,
    pub user_id: String,
    /// The name people know them by, for messages and the audit trail.
    pub name: String,
    /// The platform's roles (Discord role ids), which `policies/roles.toml` maps to runbot's.
    pub platform_roles: Vec<String>,
    /// runbot roles the platform grants by itself (a console account's or API token's own),
    /// held in addition to what `policies/roles.toml` says.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Actor {
    /// `discord:1234`: one person on one platform.
    pub fn key(&self) -> String {
        format!("{}:{}", self.platform.as_str(), self.user_id)
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub channel_id: Option<String>,
    pub message_id: Option<String>,
    /// The alert group whose card the button was on.
    pub group_id: Option<i64>,
}

/// What a platform adapter hands the core.
#[derive(Debug, Clone)]
pub enum Request {
    /// A slash command with the options the platform sent, not yet validated.
    Command {
        actor: Actor,
        command: String,
        args: Vec<(String, RawValue)>,
        origin: Origin,
    },
    /// A button: a card's runbook action, or an answer to a confirmation or approval prompt.
    Button {
        actor: Actor,
        custom_id: String,
        origin: Origin,
    },
}

/// The first answer, which the adapter gives at once (Discord wants one within 3 s).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A new message answering the request.
    Message(Reply),
    /// "Working on it"; the result then edits the answer through the [`Responder`].
    Deferred { ephemeral: bool },
    /// Replace the message whose button was clicked (a prompt).
    Update(Reply),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Edits the answer to one request after the first answer was given: the deferred message,
/// or the prompt whose button was clicked.
pub trait Responder: Send + Sync + 'static {
    fn edit(&self, reply: Reply) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// What a platform sent for one option, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

/// What the core answers a person who ran a command or clicked a button, whatever the platform.
/// The adapter cuts it to the platform's limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub text: String,
    /// A refusal: nothing was done (a policy, a validation, a limit said no).
    pub refused: bool,
    /// Shown only to the person who asked (where the platform can do that).
    pub ephemeral: bool,
    /// None clears the buttons of the message this reply replaces, so an answered prompt
    /// cannot be answered twice.
    pub buttons: Vec<ReplyButton>,
    /// (name, value) pairs, rendered as one block (a Discord embed) when not empty.
    pub fields: Vec<(String, String)>,
    /// Preformatted text (log lines, command output), shown after `text`; when it must be cut,
    /// its end is kept, since the newest lines are last.
    pub code_block: Option<String>,
    /// A file to go with the message: the whole of what `code_block` could show only the end
    /// of; `text` says it is there. Discord uploads it with the edit that delivers a command's
    /// result (the only answer that carries one).
    /// At most [`ATTACHMENT_MAX_BYTES`].
    pub attachment: Option<Attachment>,
}

/// The largest file a reply attaches: the smallest upload limit of the platforms runbot speaks
/// to (Discord: 10 MiB per file for bots, in a guild without boosts).
pub const ATTACHMENT_MAX_BYTES: usize = 10 * 1024 * 1024;

/// A file that goes with a reply, whatever the platform.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    /// A plain name, e.g. `logs-backend-20261128-023700.txt`.
    pub filename: String,
    pub content: Vec<u8>,
}

/// Megabytes of log in a test failure help nobody: the size says enough.
impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("filename", &self.filename)
            .field("bytes", &self.content.len())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplyButton {
    /// What the platform sends back when it is clicked (Discord's `custom_id`).
    pub id: String,
    pub label: String,
    pub style: ButtonStyle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonStyle {
    Primary,
    Secondary,
    Success,
    Danger,
}

impl ButtonStyle {
    pub const ALL: [ButtonStyle; 4] = [
        ButtonStyle::Primary,
        ButtonStyle::Secondary,
        ButtonStyle::Success,
        ButtonStyle::Danger,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ButtonStyle::Primary => "primary",
            ButtonStyle::Secondary => "secondary",
            ButtonStyle::Success => "success",
            ButtonStyle::Danger => "danger",
        }
    }

    pub fn parse(s: &str) -> Option<ButtonStyle> {
        ButtonStyle::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

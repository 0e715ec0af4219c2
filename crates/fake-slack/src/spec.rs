//! The arguments each served method takes.
//!
//! Copied once from Slack's OpenAPI 2.0 description, `shared/specs/slack-web-openapi-v2.json`
//! (`paths./{method}.{get|post}.parameters`, every `in: formData|query` name; `token` is left
//! out because the fake reads the token only from the `Authorization` header, as Slack asks
//! of new apps), and `consumes` for whether a JSON body is read.
//!
//! The spec predates some documented arguments; those are added here, each marked:
//! `metadata` (message metadata, 2022) on chat.postMessage and chat.update,
//! `reply_broadcast` on chat.update, `include_all_metadata` on conversations.history and
//! conversations.replies. `apps.connections.open` (Socket Mode) is not in the spec at all: it
//! takes no argument but the app-level token.
//!
//! `client_msg_id` is NOT an argument of chat.postMessage: it is not in the spec nor in
//! Slack's method docs, and Slack's SDK maintainers say it belongs to Slack's own clients
//! (slackapi/java-slack-sdk#852); Slack offers no idempotency key (slackapi/slack-api-specs#10).
//! The fake refuses it, so that runbot finds its messages after a crash by `metadata`.

/// One Web API method as the fake serves it.
pub struct MethodSpec {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// Whether Slack reads a JSON body for it (`consumes` has `application/json`).
    pub json: bool,
    /// Whether it takes the app-level token (xapp-) instead of the bot token.
    pub app_token: bool,
}

pub const METHODS: &[MethodSpec] = &[
    MethodSpec {
        name: "auth.test",
        args: &[],
        json: true,
        app_token: false,
    },
    MethodSpec {
        name: "chat.postMessage",
        args: &[
            "as_user",
            "attachments",
            "blocks",
            "channel",
            "icon_emoji",
            "icon_url",
            "link_names",
            "mrkdwn",
            "parse",
            "reply_broadcast",
            "text",
            "thread_ts",
            "unfurl_links",
            "unfurl_media",
            "username",
            // Not in the spec (newer):
            "metadata",
        ],
        json: true,
        app_token: false,
    },
    MethodSpec {
        name: "chat.update",
        args: &[
            "as_user",
            "attachments",
            "blocks",
            "channel",
            "link_names",
            "parse",
            "text",
            "ts",
            // Not in the spec (newer):
            "metadata",
            "reply_broadcast",
        ],
        json: true,
        app_token: false,
    },
    MethodSpec {
        name: "chat.postEphemeral",
        args: &[
            "as_user",
            "attachments",
            "blocks",
            "channel",
            "icon_emoji",
            "icon_url",
            "link_names",
            "parse",
            "text",
            "thread_ts",
            "user",
            "username",
        ],
        json: true,
        app_token: false,
    },
    MethodSpec {
        name: "conversations.open",
        args: &["channel", "users", "return_im"],
        json: true,
        app_token: false,
    },
    MethodSpec {
        name: "conversations.history",
        args: &[
            "channel",
            "latest",
            "oldest",
            "inclusive",
            "limit",
            "cursor",
            // Not in the spec (newer):
            "include_all_metadata",
        ],
        json: false,
        app_token: false,
    },
    MethodSpec {
        name: "conversations.replies",
        args: &[
            "channel",
            "ts",
            "latest",
            "oldest",
            "inclusive",
            "limit",
            "cursor",
            // Not in the spec (newer):
            "include_all_metadata",
        ],
        json: false,
        app_token: false,
    },
    MethodSpec {
        name: "apps.connections.open",
        args: &[],
        json: true,
        app_token: true,
    },
];

pub fn method(name: &str) -> Option<&'static MethodSpec> {
    METHODS.iter().find(|m| m.name == name)
}

//! Block Kit as Slack checks it on a message: the documented limits (`shared/protocols.md`,
//! from Slack's Block Kit reference and its node SDK types) and the known shapes.
//!
//! Errors read like Slack's: `[ERROR] <what> [json-pointer:/blocks/0/text/text]`. The fake
//! knows fewer block and element types than Slack (header, section, context, actions,
//! divider; button, image, plain_text, mrkdwn): anything else is refused, which is stricter
//! than Slack, and says so in the error.

use std::collections::HashSet;

use serde_json::{Map, Value};

pub const MAX_BLOCKS: usize = 50;
pub const MAX_HEADER_TEXT: usize = 150;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_SECTION_FIELDS: usize = 10;
pub const MAX_FIELD_TEXT: usize = 2000;
pub const MAX_ACTIONS_ELEMENTS: usize = 25;
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
pub const MAX_BUTTON_TEXT: usize = 75;
pub const MAX_ACTION_ID: usize = 255;
pub const MAX_BUTTON_VALUE: usize = 2000;
pub const MAX_URL: usize = 3000;
pub const MAX_BLOCK_ID: usize = 255;
pub const MAX_ALT_TEXT: usize = 2000;

struct Checker {
    errors: Vec<String>,
    action_ids: HashSet<String>,
    block_ids: HashSet<String>,
}

impl Checker {
    fn err(&mut self, what: impl AsRef<str>, path: &str) {
        self.errors
            .push(format!("[ERROR] {} [json-pointer:{path}]", what.as_ref()));
    }

    fn keys(&mut self, o: &Map<String, Value>, allowed: &[&str], path: &str) {
        for k in o.keys() {
            if !allowed.contains(&k.as_str()) {
                self.err(format!("unsupported property '{k}'"), path);
            }
        }
    }

    /// A string of 1..=max characters (Slack counts characters, not bytes).
    fn string(&mut self, v: Option<&Value>, max: usize, path: &str, required: bool) {
        match v {
            None if required => self.err("missing required field", path),
            None => {}
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n == 0 {
                    self.err("must be more than 0 characters", path);
                } else if n > max {
                    self.err(format!("must be less than {} characters", max + 1), path);
                }
            }
            Some(_) => self.err("must be a string", path),
        }
    }

    /// A text object: plain_text (`emoji`) or, unless `plain_only`, mrkdwn (`verbatim`).
    fn text(&mut self, v: Option<&Value>, max: usize, plain_only: bool, path: &str) {
        let Some(v) = v else {
            return self.err("missing required field", path);
        };
        let Some(o) = v.as_object() else {
            return self.err("must be a text object", path);
        };
        match o.get("type").and_then(Value::as_str) {
            Some("plain_text") => self.keys(o, &["type", "text", "emoji"], path),
            Some("mrkdwn") if !plain_only => self.keys(o, &["type", "text", "verbatim"], path),
            Some("mrkdwn") => self.err("must be a plain_text object", &format!("{path}/type")),
            Some(t) => self.err(format!("unsupported type: {t}"), &format!("{path}/type")),
            None => self.err("missing required field", &format!("{path}/type")),
        }
        self.string(o.get("text"), max, &format!("{path}/text"), true);
    }

    fn block_id(&mut self, o: &Map<String, Value>, path: &str) {
        let p = format!("{path}/block_id");
        self.string(o.get("block_id"), MAX_BLOCK_ID, &p, false);
        if let Some(id) = o.get("block_id").and_then(Value::as_str) {
            if !self.block_ids.insert(id.to_string()) {
                self.err(format!("duplicate block_id '{id}'"), &p);
            }
        }
    }

    fn block(&mut self, v: &Value, path: &str) {
        let Some(o) = v.as_object() else {
            return self.err("must be an object", path);
        };
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "header" => {
                self.keys(o, &["type", "text", "block_id"], path);
                self.text(o.get("text"), MAX_HEADER_TEXT, true, &format!("{path}/text"));
            }
            "divider" => self.keys(o, &["type", "block_id"], path),
            "section" => {
                self.keys(
                    o,
                    &["type", "text", "fields", "accessory", "block_id", "expand"],
                    path,
                );
                if o.get("text").is_none() && o.get("fields").is_none() {
                    self.err("must provide either text or fields", path);
                }
                if o.contains_key("text") {
                    self.text(o.get("text"), MAX_SECTION_TEXT, false, &format!("{path}/text"));
                }
                if let Some(f) = o.get("fields") {
                    let fp = format!("{path}/fields");
                    match f.as_array() {
                        Some(a) if a.is_empty() => self.err("must have at least 1 item", &fp),
                        Some(a) if a.len() > MAX_SECTION_FIELDS => self.err(
                            format!("no more than {MAX_SECTION_FIELDS} items allowed"),
                            &fp,
                        ),
                        Some(a) => {
                            for (i, t) in a.iter().enumerate() {
                                self.text(Some(t), MAX_FIELD_TEXT, false, &format!("{fp}/{i}"));
                            }
                        }
                        None => self.err("must be an array", &fp),
                    }
                }
                if let Some(a) = o.get("accessory") {
                    self.element(a, &["button", "image"], &format!("{path}/accessory"));
                }
                if let Some(e) = o.get("expand") {
                    if !e.is_boolean() {
                        self.err("must be a boolean", &format!("{path}/expand"));
                    }
                }
            }
            "context" => {
                self.keys(o, &["type", "elements", "block_id"], path);
                self.elements(o, MAX_CONTEXT_ELEMENTS, &["plain_text", "mrkdwn", "image"], path);
            }
            "actions" => {
                self.keys(o, &["type", "elements", "block_id"], path);
                self.elements(o, MAX_ACTIONS_ELEMENTS, &["button"], path);
            }
            "" => return self.err("missing required field", &format!("{path}/type")),
            other => {
                return self.err(
                    format!(
                        "unsupported type: {other} (the fake knows header, section, context, actions, divider)"
                    ),
                    &format!("{path}/type"),
                )
            }
        }
        self.block_id(o, path);
    }

    fn elements(&mut self, o: &Map<String, Value>, max: usize, kinds: &[&str], path: &str) {
        let p = format!("{path}/elements");
        match o.get("elements").and_then(Value::as_array) {
            None => self.err("missing required field", &p),
            Some(a) if a.is_empty() => self.err("must have at least 1 item", &p),
            Some(a) if a.len() > max => self.err(format!("no more than {max} items allowed"), &p),
            Some(a) => {
                for (i, e) in a.iter().enumerate() {
                    self.element(e, kinds, &format!("{p}/{i}"));
                }
            }
        }
    }

    fn element(&mut self, v: &Value, kinds: &[&str], path: &str) {
        let Some(o) = v.as_object() else {
            return self.err("must be an object", path);
        };
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
        if !kinds.contains(&kind) {
            return self.err(
                format!(
                    "unsupported type: {kind} (allowed here: {})",
                    kinds.join(", ")
                ),
                &format!("{path}/type"),
            );
        }
        match kind {
            "plain_text" | "mrkdwn" => self.text(Some(v), MAX_SECTION_TEXT, false, path),
            "image" => {
                self.keys(o, &["type", "image_url", "alt_text", "slack_file"], path);
                if o.get("image_url").is_none() && o.get("slack_file").is_none() {
                    self.err("must provide either image_url or slack_file", path);
                }
                self.string(
                    o.get("image_url"),
                    MAX_URL,
                    &format!("{path}/image_url"),
                    false,
                );
                self.string(
                    o.get("alt_text"),
                    MAX_ALT_TEXT,
                    &format!("{path}/alt_text"),
                    true,
                );
            }
            "button" => self.button(o, path),
            _ => unreachable!("kinds are checked above"),
        }
    }

    fn button(&mut self, o: &Map<String, Value>, path: &str) {
        self.keys(
            o,
            &[
                "type",
                "text",
                "action_id",
                "url",
                "value",
                "style",
                "confirm",
                "accessibility_label",
            ],
            path,
        );
        self.text(
            o.get("text"),
            MAX_BUTTON_TEXT,
            true,
            &format!("{path}/text"),
        );
        let ap = format!("{path}/action_id");
        self.string(o.get("action_id"), MAX_ACTION_ID, &ap, false);
        if let Some(id) = o.get("action_id").and_then(Value::as_str) {
            // Slack's docs ask for unique action_ids within a block; the brief (and runbot's
            // custom ids) want them unique in the whole message, so the fake checks that.
            if !self.action_ids.insert(id.to_string()) {
                self.err(format!("duplicate action_id '{id}'"), &ap);
            }
        }
        self.string(
            o.get("value"),
            MAX_BUTTON_VALUE,
            &format!("{path}/value"),
            false,
        );
        self.string(o.get("url"), MAX_URL, &format!("{path}/url"), false);
        self.string(
            o.get("accessibility_label"),
            MAX_BUTTON_TEXT,
            &format!("{path}/accessibility_label"),
            false,
        );
        if let Some(s) = o.get("style") {
            if !matches!(s.as_str(), Some("primary") | Some("danger")) {
                self.err("must be one of: primary, danger", &format!("{path}/style"));
            }
        }
        if let Some(c) = o.get("confirm") {
            self.confirm(c, &format!("{path}/confirm"));
        }
    }

    /// A confirmation dialog object.
    fn confirm(&mut self, v: &Value, path: &str) {
        let Some(o) = v.as_object() else {
            return self.err("must be an object", path);
        };
        self.keys(o, &["title", "text", "confirm", "deny", "style"], path);
        self.text(o.get("title"), 100, true, &format!("{path}/title"));
        self.text(o.get("text"), 300, false, &format!("{path}/text"));
        self.text(o.get("confirm"), 30, true, &format!("{path}/confirm"));
        self.text(o.get("deny"), 30, true, &format!("{path}/deny"));
        if let Some(s) = o.get("style") {
            if !matches!(s.as_str(), Some("primary") | Some("danger")) {
                self.err("must be one of: primary, danger", &format!("{path}/style"));
            }
        }
    }
}

/// Checks a message's `blocks`; `Err` holds every error found, as Slack lists them in
/// `response_metadata.messages`.
pub fn check(blocks: &Value) -> Result<(), Vec<String>> {
    let mut c = Checker {
        errors: Vec::new(),
        action_ids: HashSet::new(),
        block_ids: HashSet::new(),
    };
    match blocks.as_array() {
        None => c.err("must be an array", "/blocks"),
        Some(a) if a.len() > MAX_BLOCKS => c.err(
            format!("no more than {MAX_BLOCKS} items allowed"),
            "/blocks",
        ),
        Some(a) => {
            for (i, b) in a.iter().enumerate() {
                c.block(b, &format!("/blocks/{i}"));
            }
        }
    }
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(c.errors)
    }
}

/// The blocks as Slack stores them: each block gets a `block_id` when it had none.
pub fn with_block_ids(blocks: &Value, seed: &str) -> Vec<Value> {
    let mut out = blocks.as_array().cloned().unwrap_or_default();
    for (i, b) in out.iter_mut().enumerate() {
        if let Some(o) = b.as_object_mut() {
            o.entry("block_id")
                .or_insert_with(|| Value::String(format!("{seed}{i}")));
        }
    }
    out
}

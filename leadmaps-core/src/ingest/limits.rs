//! The one table of collector limits. Validation, the HTTP layer, the docs and the tests all read
//! it, so a limit is changed in one place.

/// What a limit does when exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExceed {
    /// The event (or request) is rejected with a reason.
    Reject,
    /// The value is cut at the limit (on a character boundary) and the event kept.
    Truncate,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// What is limited.
    pub name: &'static str,
    /// The maximum, in the unit the description names.
    pub max: usize,
    /// What happens above it.
    pub on_exceed: OnExceed,
    /// Human description for docs and error messages.
    pub description: &'static str,
}

/// Event name, in bytes.
pub const NAME: Limit = Limit {
    name: "name",
    max: 120,
    on_exceed: OnExceed::Reject,
    description: "event name, bytes",
};
/// Page URL, in bytes.
pub const URL: Limit = Limit {
    name: "url",
    max: 2000,
    on_exceed: OnExceed::Reject,
    description: "page URL, bytes",
};
/// Referrer, in bytes; longer ones are truncated.
pub const REFERRER: Limit = Limit {
    name: "referrer",
    max: 2000,
    on_exceed: OnExceed::Truncate,
    description: "referrer, bytes (truncated)",
};
/// Custom properties per event.
pub const PROPS: Limit = Limit {
    name: "props",
    max: 30,
    on_exceed: OnExceed::Reject,
    description: "custom properties per event",
};
/// Custom property key, in bytes.
pub const PROP_KEY: Limit = Limit {
    name: "prop_key",
    max: 300,
    on_exceed: OnExceed::Reject,
    description: "custom property key, bytes",
};
/// Custom property value, in bytes.
pub const PROP_VALUE: Limit = Limit {
    name: "prop_value",
    max: 2000,
    on_exceed: OnExceed::Reject,
    description: "custom property value, bytes",
};
/// Request body as sent (compressed or not), in bytes.
pub const BODY: Limit = Limit {
    name: "body",
    max: 1024 * 1024,
    on_exceed: OnExceed::Reject,
    description: "request body, bytes",
};
/// Events per batch request.
pub const BATCH: Limit = Limit {
    name: "batch",
    max: 100,
    on_exceed: OnExceed::Reject,
    description: "events per batch",
};
/// Batch body after gzip inflation, in bytes; checked while inflating.
pub const INFLATED: Limit = Limit {
    name: "inflated",
    max: 1024 * 1024,
    on_exceed: OnExceed::Reject,
    description: "batch body after inflating, bytes",
};

/// Every limit, in the order the docs list them.
pub const ALL: [Limit; 9] = [
    NAME, URL, REFERRER, PROPS, PROP_KEY, PROP_VALUE, BODY, BATCH, INFLATED,
];

/// Cuts `value` to at most `max` bytes on a character boundary.
pub fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// A Markdown table of [`ALL`], for docs and the server's help.
pub fn markdown_table() -> String {
    let mut out = String::from("| limit | max | above it |\n|---|---|---|\n");
    for limit in ALL {
        let action = match limit.on_exceed {
            OnExceed::Reject => "rejected",
            OnExceed::Truncate => "truncated",
        };
        out.push_str(&format!(
            "| {} | {} | {action} |\n",
            limit.description, limit.max
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }

    #[test]
    fn the_table_lists_every_limit() {
        let table = markdown_table();
        for limit in ALL {
            assert!(table.contains(limit.description));
        }
    }
}

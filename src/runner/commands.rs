//! Workflow commands' escaping, as the runner un-escapes them.

/// Data after `::`: `%` first, then CR and LF.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// Property values: as data, plus `:` and `,` (a value ending in `:` would end the
/// command early).
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// Text a person reads in the log: control characters other than tabs and line breaks
/// (an ESC would colour the log, or move its cursor) are shown as escapes instead.
pub fn visible(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A fresh, unguessable token for `::stop-commands::`.
pub fn stop_token() -> String {
    format!("safe-deploy-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_escapes_percent_first_then_line_breaks() {
        assert_eq!(escape_data("50%\r\nnext"), "50%25%0D%0Anext");
    }

    #[test]
    fn properties_also_escape_colons_and_commas() {
        assert_eq!(escape_property("a:b,c%"), "a%3Ab%2Cc%25");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(visible("web\u{1b}[31mred\tok\n"), "web\\u{1b}[31mred\tok\n");
        assert_eq!(visible("plain é"), "plain é");
    }

    #[test]
    fn stop_tokens_differ_every_time() {
        assert_ne!(stop_token(), stop_token());
    }
}

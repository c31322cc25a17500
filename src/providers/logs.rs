//! Build, release and deploy logs as a summary shows them: the last lines on one
//! line, with passwords in URLs masked (a DATABASE_URL a migration printed).

/// Lines of a log kept for the summary.
const EXCERPT_LINES: usize = 12;

/// The last lines of a log, for a one-paragraph failure; passwords in URLs (a
/// DATABASE_URL a migration printed) are masked, as they go to the summary.
pub fn excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(EXCERPT_LINES);
    mask_url_passwords(&lines[start..].join(" / "))
}

/// `scheme://user:secret@host` becomes `scheme://user:***@host`.
pub fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', space or end; a password sits before '@'.
        let end = tail.find(|c: char| c == '/' || c.is_whitespace()).unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at_sign), Some(colon)) if colon < at_sign => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at_sign..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_keeps_the_last_lines_on_one_line() {
        let log = (1..=20).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        let e = excerpt(&log);
        assert!(e.starts_with("line 9 / ") && e.ends_with("line 20"), "{e}");
        assert_eq!(excerpt("\n\n"), "");
        assert_eq!(
            excerpt("connecting to postgres://app:s3cr3t@db.example.com:5432/shop\nfailed"),
            "connecting to postgres://app:***@db.example.com:5432/shop / failed"
        );
        assert_eq!(
            mask_url_passwords("see https://example.com/a:b@c"),
            "see https://example.com/a:b@c",
            "a path is no password"
        );
    }
}

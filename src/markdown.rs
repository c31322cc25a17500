//! Text from outside (a release name, an app, an answer body) put into GitHub's Markdown
//! so that it shows as written and makes nothing: no HTML, no link, no table cell break.

/// Text from outside, made safe for a Markdown table cell: no HTML, no pipes, one line.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("&#124;"),
            '`' => out.push_str("&#96;"),
            // No link, image or strikethrough can be made of outside text.
            '[' => out.push_str("&#91;"),
            ']' => out.push_str("&#93;"),
            '~' => out.push_str("&#126;"),
            '\\' => out.push_str("&#92;"),
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Text from outside for a `<code>` element: no Markdown at all may happen inside it
/// (GitHub would render a body's **x** there as bold), so emphasis marks go too.
pub fn escape_code(text: &str) -> String {
    escape(text).replace('*', "&#42;").replace('_', "&#95;")
}

/// "1 attempt", "3 attempts": a count with its noun, plural when it is not one.
pub fn counted(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_of_one_is_singular_and_any_other_plural() {
        assert_eq!(counted(1, "attempt"), "1 attempt");
        assert_eq!(counted(0, "attempt"), "0 attempts");
        assert_eq!(counted(3, "input problem"), "3 input problems");
    }
}

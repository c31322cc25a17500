//! The runner's file commands (`GITHUB_OUTPUT`, `GITHUB_STATE`): `NAME<<DELIM` heredocs
//! with a random delimiter that is checked against the value, as the toolkit does.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Appends `name` = `value` to a file command file.
pub fn append(path: &Path, name: &str, value: &str) -> std::io::Result<()> {
    let delimiter = loop {
        let d = format!("ghadelimiter_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        if !value.contains(&d) && !name.contains(&d) {
            break d;
        }
    };
    // A file this creates (a state file off a runner) is this user's alone; the
    // runner's own files exist already and keep their mode.
    let mut file = crate::secret::private_file(path)?;
    // One write, so a concurrent reader never sees half an entry.
    file.write_all(format!("{name}<<{delimiter}\n{value}\n{delimiter}\n").as_bytes())
}

/// Reads a file command file as the runner does: `NAME=VALUE` lines and heredocs;
/// the last value of a name wins.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.split('\n');
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                out.insert(line[..e].to_string(), line[e + 1..].to_string());
            }
            (_, Some(h)) => {
                let (name, delimiter) = (&line[..h], &line[h + 2..]);
                if name.is_empty() || delimiter.is_empty() {
                    return Err(format!("invalid heredoc line '{line}'"));
                }
                let mut value = Vec::new();
                loop {
                    match lines.next() {
                        Some(l) if l == delimiter => break,
                        Some(l) => value.push(l),
                        None => return Err(format!("matching delimiter not found for {name}")),
                    }
                }
                out.insert(name.to_string(), value.join("\n"));
            }
            _ => return Err(format!("invalid format '{line}'")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_the_round_trip_whatever_they_contain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        append(&path, "status", "deployed").unwrap();
        append(&path, "body", "line one\nEOF\nghadelimiter_x\n= <<").unwrap();
        append(&path, "status", "rolled-back").unwrap();
        let parsed = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(parsed["status"], "rolled-back", "the last value wins");
        assert_eq!(parsed["body"], "line one\nEOF\nghadelimiter_x\n= <<");
    }

    #[test]
    fn the_parser_reads_plain_lines_and_rejects_unclosed_heredocs() {
        assert_eq!(parse("a=b=c\n").unwrap()["a"], "b=c");
        assert!(parse("x<<END\nvalue\n").is_err());
        assert!(parse("nonsense\n").is_err());
    }
}

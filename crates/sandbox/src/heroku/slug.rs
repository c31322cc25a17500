//! What a build makes of an uploaded source tarball: the directory it unpacks to and
//! the test app's settings read from it, as Heroku reads a Procfile.
//!
//! - `Procfile`: `web:` is the test app with the flags after its first word
//!   (`web: sandbox-app --health error500`); `release:` is a shell command run in the
//!   unpacked directory for every new release, whose exit code decides the release.
//! - `VERSION`: what the app's `/version` answers; else the build's source version.

use std::io::Read;
use std::path::{Path, PathBuf};

/// A built slug: where it was unpacked and what its processes run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug {
    pub id: String,
    pub dir: PathBuf,
    /// Flags for the test app, from the Procfile's `web:` line.
    pub web: Vec<String>,
    /// The Procfile's `release:` command, run with `sh -c`.
    pub release: Option<String>,
    pub version: String,
    /// The Procfile's process types, for the build log.
    pub process_types: Vec<String>,
}

/// Unpacks a gzipped tarball into `dir` and reads the slug's settings; the error is
/// what the build log says.
pub fn build(id: &str, tarball: &[u8], dir: &Path, source_version: &str) -> Result<Slug, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make the build directory: {e}"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    archive.set_overwrite(true);
    // `unpack` refuses paths that leave `dir` (.. or absolute), as a build must.
    archive.unpack(dir).map_err(|e| format!("the source tarball could not be unpacked: {e}"))?;
    // A tarball of a directory may hold one top folder (GitHub's archives do).
    let root = single_top_folder(dir).unwrap_or_else(|| dir.to_path_buf());
    let procfile = read(&root.join("Procfile")).ok_or("no Procfile in the source: declare a web process")?;
    let mut web = None;
    let mut release = None;
    let mut process_types = Vec::new();
    for line in procfile.lines() {
        let Some((kind, command)) = line.split_once(':') else { continue };
        let (kind, command) = (kind.trim(), command.trim());
        if kind.is_empty() || kind.starts_with('#') {
            continue;
        }
        process_types.push(kind.to_string());
        match kind {
            "web" => web = Some(command.split_whitespace().skip(1).map(str::to_string).collect()),
            "release" => release = Some(command.to_string()),
            _ => {}
        }
    }
    let web = web.ok_or("the Procfile declares no web process")?;
    let version = read(&root.join("VERSION"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| source_version.to_string());
    Ok(Slug { id: id.to_string(), dir: root, web, release, version, process_types })
}

fn read(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path).ok()?.read_to_string(&mut text).ok()?;
    Some(text)
}

fn single_top_folder(dir: &Path) -> Option<PathBuf> {
    if dir.join("Procfile").exists() {
        return None;
    }
    let entries: Vec<_> = std::fs::read_dir(dir).ok()?.filter_map(Result::ok).collect();
    match entries.as_slice() {
        [only] if only.path().join("Procfile").is_file() => Some(only.path()),
        _ => None,
    }
}

/// A gzipped tarball of `files` (path, content): for tests and the demo.
pub fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let _ = builder.append_data(&mut header, path, content.as_bytes());
    }
    builder.into_inner().and_then(|gz| gz.finish()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_procfile_gives_the_web_flags_and_the_release_command() {
        let dir = std::env::temp_dir().join(format!("slug-test-{}", std::process::id()));
        let tgz = tarball(&[
            ("Procfile", "web: sandbox-app --health error500\nrelease: echo migrating\n# worker: no\n"),
            ("VERSION", "v7\n"),
        ]);
        let slug = build("s1", &tgz, &dir, "abc123").expect("builds");
        assert_eq!(slug.web, ["--health", "error500"]);
        assert_eq!(slug.release.as_deref(), Some("echo migrating"));
        assert_eq!(slug.version, "v7");
        assert_eq!(slug.process_types, ["web", "release"]);
        let no_web = tarball(&[("Procfile", "worker: run\n")]);
        assert!(build("s2", &no_web, &dir.join("b"), "x").unwrap_err().contains("no web process"));
        assert!(build("s3", b"not a tarball", &dir.join("c"), "x").unwrap_err().contains("unpacked"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The source tarball a Heroku build gets: the source folder's files as `git push`
//! would send them and the slug keeps them, so `.gitignore` and `.slugignore` are
//! honoured (through the `ignore` crate, git's own rules) and `.git` stays out.

use std::path::Path;

/// A gzipped tarball of `dir`, and how many files it holds.
pub fn pack(dir: &Path) -> Result<(Vec<u8>, usize), String> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    builder.follow_symlinks(false);
    let walk = ignore::WalkBuilder::new(dir)
        .hidden(false)
        .require_git(false)
        .git_global(false)
        .add_custom_ignore_filename(".slugignore")
        .filter_entry(|e| e.file_name() != ".git")
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut files = 0;
    for entry in walk {
        let entry = entry.map_err(|e| format!("cannot read the source folder: {e}"))?;
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(dir) else { continue };
        if relative.as_os_str().is_empty() || !entry.file_type().is_some_and(|t| t.is_file() || t.is_symlink()) {
            continue;
        }
        builder
            .append_path_with_name(path, relative)
            .map_err(|e| format!("cannot add {} to the tarball: {e}", relative.display()))?;
        files += 1;
    }
    if files == 0 {
        return Err(format!("{} has no files to deploy (check it, and .gitignore/.slugignore)", dir.display()));
    }
    let gz = builder.into_inner().map_err(|e| format!("cannot finish the tarball: {e}"))?;
    let bytes = gz.finish().map_err(|e| format!("cannot finish the tarball: {e}"))?;
    Ok((bytes, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn names(tgz: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                e.path().unwrap().display().to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_tarball_leaves_out_what_gitignore_slugignore_and_git_say() {
        let dir = tempfile::tempdir().unwrap();
        let write = |p: &str, c: &str| {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        };
        write("Procfile", "web: run\n");
        write(".gitignore", "node_modules/\n*.log\n");
        write(".slugignore", "docs/\n");
        write("node_modules/x/index.js", "x");
        write("debug.log", "x");
        write("docs/guide.md", "x");
        write(".git/config", "x");
        write("src/app.rb", "x");
        let (tgz, n) = pack(dir.path()).unwrap();
        assert_eq!(names(&tgz), [".gitignore", ".slugignore", "Procfile", "src/app.rb"]);
        assert_eq!(n, 4);
        let empty = tempfile::tempdir().unwrap();
        assert!(pack(empty.path()).unwrap_err().contains("no files"));
    }
}

//! Where the PostgreSQL server binaries are.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a test that needs PostgreSQL and finds none fails with.
pub(crate) const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with \
    `apt-get install -y postgresql` (Debian/Ubuntu) or `brew install postgresql`, \
    or set TOLLGATE_PG_URL=postgres://… to use an existing server";

/// The directory that holds `initdb` and `pg_ctl`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian, Ubuntu), else the directory of the `initdb` on `PATH`.
pub(crate) fn find() -> Result<PathBuf, String> {
    pg_config_bindir()
        .filter(|dir| has_server(dir))
        .or_else(|| newest_under(Path::new("/usr/lib/postgresql")))
        .or_else(|| first_on(&env::var_os("PATH")?).filter(|dir| has_server(dir)))
        .ok_or_else(|| NOT_FOUND.to_string())
}

/// Whether `dir` holds both programs this crate runs (`pg_ctl` finds `postgres` next to itself).
fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// What `pg_config --bindir` says; it may name a directory without the server (libpq-dev alone).
fn pg_config_bindir() -> Option<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !dir.trim().is_empty()).then(|| PathBuf::from(dir.trim()))
}

/// The newest `<root>/<version>/bin` with a server in it, by numeric version (Debian's layout).
fn newest_under(root: &Path) -> Option<PathBuf> {
    let versions = fs::read_dir(root).ok()?.filter_map(|entry| {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let version: Vec<u32> = name.to_str()?.split('.').map(|part| part.parse().ok()).collect::<Option<_>>()?;
        let bin = entry.path().join("bin");
        has_server(&bin).then_some((version, bin))
    });
    versions.max_by(|a, b| a.0.cmp(&b.0)).map(|(_, bin)| bin)
}

/// The first directory of `path` (a `PATH` value) with an `initdb` in it.
fn first_on(path: &OsStr) -> Option<PathBuf> {
    env::split_paths(path).find(|dir| dir.join("initdb").is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_in(dir: &Path, programs: &[&str]) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        for program in programs {
            fs::write(dir.join(program), "").unwrap();
        }
        dir.to_path_buf()
    }

    #[test]
    fn the_newest_complete_version_wins_by_number() {
        let root = tempfile::tempdir().unwrap();
        server_in(&root.path().join("9.6/bin"), &["initdb", "pg_ctl"]);
        let fifteen = server_in(&root.path().join("15/bin"), &["initdb", "pg_ctl"]);
        server_in(&root.path().join("16/bin"), &["initdb"]);
        server_in(&root.path().join("common/bin"), &["initdb", "pg_ctl"]);
        assert_eq!(newest_under(root.path()), Some(fifteen));
        assert_eq!(newest_under(&root.path().join("missing")), None);
    }

    #[test]
    fn path_gives_the_first_directory_with_initdb() {
        let root = tempfile::tempdir().unwrap();
        let none = server_in(&root.path().join("a"), &["pg_ctl"]);
        let first = server_in(&root.path().join("b"), &["initdb", "pg_ctl"]);
        let second = server_in(&root.path().join("c"), &["initdb", "pg_ctl"]);
        let path = env::join_paths([none, first.clone(), second]).unwrap();
        assert_eq!(first_on(&path), Some(first));
    }
}

//! The Python-built fixtures the typed-model tests share: the dev venv's interpreter, and the
//! users' model exports of tests/python/user_models/build.py, built once per machine into the
//! shared cache (`--cached`, keyed by the builder's and the lock's hash).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::repo_root;

/// The dev lock's venv Python (scripts/python-env.sh builds it when missing or stale).
pub fn dev_python() -> PathBuf {
    let venv = Command::new(repo_root().join("scripts/python-env.sh"))
        .arg("requirements/dev.lock")
        .current_dir(repo_root())
        .output()
        .expect("run scripts/python-env.sh");
    assert!(
        venv.status.success(),
        "python-env.sh failed: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    PathBuf::from(String::from_utf8(venv.stdout).unwrap().trim()).join("bin/python")
}

/// The users' model fixtures (tests/python/user_models/README.md), built once.
pub fn user_models() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cache = std::env::var_os("FERRUM_CACHE").map_or_else(
            || PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/ferrum-serve"),
            PathBuf::from,
        );
        let built = Command::new(dev_python())
            .arg(repo_root().join("tests/python/user_models/build.py"))
            .arg("--cached")
            .arg(cache)
            .current_dir(repo_root())
            .output()
            .expect("run build.py");
        assert!(
            built.status.success(),
            "build.py failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        PathBuf::from(String::from_utf8(built.stdout).unwrap().trim())
    })
}

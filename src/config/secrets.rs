//! Files that hold secrets: the TLS private key, API key files and the
//! admin token file must be private to their owner (refused otherwise), and
//! a configuration file with keys written inline should not be readable by
//! others (warned about).
//!
//! Files under `$CREDENTIALS_DIRECTORY` are accepted as they are: systemd's
//! `LoadCredential=` makes them mode 0400 with an ACL entry for the service
//! user, which `stat` shows as 0440 (the group bits of a file with an ACL are
//! its mask), in a read-only mount private to the service.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::file::FileConfig;
use super::problems::{quoted, Problems};

/// Why `mode` is too open for a secret file, or `None`.
pub(crate) fn loose(mode: u32, what: &str) -> Option<String> {
    let perm = mode & 0o777;
    let why = if perm & 0o044 != 0 {
        "readable"
    } else if perm & 0o033 != 0 {
        "writable"
    } else {
        return None;
    };
    Some(format!(
        "has mode {perm:04o}: {what} must not be {why} by group or others (chmod 600)"
    ))
}

fn in_credentials_dir(path: &Path, creds: Option<&str>) -> bool {
    let Some(dir) = creds.filter(|d| !d.is_empty()) else {
        return false;
    };
    match (
        std::fs::canonicalize(path),
        std::fs::canonicalize(Path::new(dir)),
    ) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

/// Refuses `path` (the value of `key`) when group or others may read or
/// write it. A file that cannot be read is reported by the caller.
pub(crate) fn private_file(p: &mut Problems, key: &str, path: &str, what: &str) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let creds = std::env::var("CREDENTIALS_DIRECTORY").ok();
    if in_credentials_dir(Path::new(path), creds.as_deref()) {
        return;
    }
    if let Some(why) = loose(meta.permissions().mode(), what) {
        p.0.push(format!("{key} = {} {why}", quoted(path)));
    }
}

/// Warnings about the configuration file itself: keys written inline
/// (`[[api_keys]] key = "..."`) in a file others can read.
pub(crate) fn file_warnings(path: &Path, text: &str) -> Vec<String> {
    let Ok(file) = toml::from_str::<FileConfig>(text) else {
        return Vec::new();
    };
    let inline = file.api_keys.iter().filter(|k| k.key.is_some()).count();
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let mode = meta.permissions().mode() & 0o777;
    if inline == 0 || mode & 0o004 == 0 {
        return Vec::new();
    }
    vec![format!(
        "{} has mode {mode:04o} and holds {inline} API key(s) written inline (api_keys[].key): \
         anyone on this host can read them; move them to key_file (mode 0600, or systemd \
         LoadCredential=) or chmod o-r the file",
        path.display()
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(loose(0o100600, "a private key"), None);
        assert_eq!(loose(0o100400, "a private key"), None);
        assert_eq!(
            loose(0o100644, "a private key").unwrap(),
            "has mode 0644: a private key must not be readable by group or others (chmod 600)"
        );
        assert!(loose(0o100640, "x").unwrap().contains("readable"));
        assert!(loose(0o100604, "x").unwrap().contains("readable"));
        assert!(loose(0o100620, "x").unwrap().contains("writable"));
        assert!(loose(0o100601, "x").unwrap().contains("writable"));
    }

    #[test]
    fn credentials_directory_is_trusted() {
        let dir = std::env::temp_dir().join(format!("sluice-creds-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("team-a");
        std::fs::write(&f, "secret").unwrap();
        let d = dir.to_str().unwrap();
        assert!(in_credentials_dir(&f, Some(d)));
        assert!(!in_credentials_dir(&f, None));
        assert!(!in_credentials_dir(&f, Some("/nonexistent")));
        assert!(!in_credentials_dir(Path::new("/etc/passwd"), Some(d)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

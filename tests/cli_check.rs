//! `sluice check` through the real binary: every example in `conf/` passes,
//! and each class of mistake is refused with a message naming the key.

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("sluice-check-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BACKEND: &str = "[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:18080\"\n";

#[test]
fn every_example_config_is_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/conf");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            n += 1;
            let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("check")
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(n >= 2, "no example configs found");
}

#[test]
fn each_class_of_mistake_names_the_key() {
    let cases: &[(&str, String, &str)] = &[
        (
            "unknown key",
            format!("{BACKEND}[scrape]\nintreval = \"1s\"\n"),
            "intreval",
        ),
        (
            "bad scheme",
            "[[backends]]\nname = \"a\"\nurl = \"htp://x\"\n".into(),
            "backends[0].url = \"htp://x\" is not valid: scheme must be http",
        ),
        (
            "no backends",
            "[server]\nthreads = 2\n".into(),
            "backends is missing",
        ),
        (
            "zero interval",
            format!("[scrape]\ninterval = \"0s\"\n{BACKEND}"),
            "scrape.interval = \"0s\" is not valid: must be greater than zero",
        ),
        (
            "duplicate name",
            format!("{BACKEND}[[backends]]\nname = \"a\"\nurl = \"http://127.0.0.1:18081\"\n"),
            "backends[1].name = \"a\" is not valid: another backend already has this name",
        ),
        (
            "duplicate address",
            format!("{BACKEND}[[backends]]\nname = \"b\"\nurl = \"http://127.0.0.1:18080/\"\n"),
            "another backend already uses 127.0.0.1:18080",
        ),
        (
            "bad listen address",
            format!("[server]\nlisten = \"localhost\"\n{BACKEND}"),
            "server.listen = \"localhost\" is not valid",
        ),
        (
            "idle timeout over llama-server keep-alive",
            format!("[routing]\nidle_timeout = \"6s\"\n{BACKEND}"),
            "routing.idle_timeout = \"6s\" is not valid: must be under 5s",
        ),
        (
            "wrong type",
            format!("[routing]\nmax_deferred = \"many\"\n{BACKEND}"),
            "max_deferred",
        ),
        (
            "TOML syntax",
            "[[backends]\nname = 1".into(),
            "TOML parse error",
        ),
    ];
    for (what, text, needle) in cases {
        let (ok, err) = check(text);
        assert!(!ok, "{what}: accepted");
        assert!(
            err.contains(needle),
            "{what}: expected {needle:?} in {err:?}"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "/nonexistent/sluice.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/sluice.toml"));
}

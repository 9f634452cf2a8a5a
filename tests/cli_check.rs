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
            "empty default model",
            format!("[routing]\ndefault_model = \" \"\n{BACKEND}"),
            "routing.default_model = \" \" is not valid: must be a model name",
        ),
        (
            "unloaded-model policy",
            format!("[routing]\nunloaded_model = \"load\"\n{BACKEND}"),
            "routing.unloaded_model = \"load\" is not valid: use \"wait\"",
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

/// `sluice check` on `text` written to `sluice.toml` (mode `conf_mode`) in
/// `dir`: (success, stderr).
fn check_in(dir: &std::path::Path, text: &str, conf_mode: u32) -> (bool, String) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(conf_mode)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("check")
        .arg(&path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn secret_file(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

#[test]
fn secret_files_readable_by_group_or_others_are_refused() {
    let dir = std::env::temp_dir().join(format!("sluice-perm-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n";
    let cert = secret_file(&dir, "cert.pem", pem, 0o644);
    let mut seen = Vec::new();
    for (mode, ok) in [
        (0o644, false),
        (0o640, false),
        (0o604, false),
        (0o620, false),
        (0o600, true),
        (0o400, true),
    ] {
        let key = secret_file(&dir, &format!("key-{mode:o}.pem"), pem, mode);
        let token = secret_file(
            &dir,
            &format!("token-{mode:o}"),
            "0123456789abcdef-admin\n",
            mode,
        );
        let team = secret_file(&dir, &format!("team-{mode:o}"), "team-a-secret-key\n", mode);
        let text = format!(
            "[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\n[admin]\ntoken_file = {token:?}\n\
             {BACKEND}[[api_keys]]\nname = \"team-a\"\nkey_file = {team:?}\n"
        );
        let (success, err) = check_in(&dir, &text, 0o644);
        assert_eq!(success, ok, "mode {mode:04o}: {err}");
        if !ok {
            let why = if mode & 0o044 != 0 {
                "readable"
            } else {
                "writable"
            };
            for expected in [
                format!("server.tls_key = {key:?} has mode {mode:04o}: a private key must not be {why} by group or others (chmod 600)"),
                format!("admin.token_file = {token:?} has mode {mode:04o}: a token file must not be {why} by group or others (chmod 600)"),
                format!("api_keys[0].key_file = {team:?} has mode {mode:04o}: an API key file must not be {why} by group or others (chmod 600)"),
            ] {
                assert!(err.contains(&expected), "mode {mode:04o}: missing {expected:?} in {err}");
            }
            // The certificate is public: never named.
            assert!(!err.contains("server.tls_cert"), "{err}");
        }
        seen.push(format!(
            "{mode:04o}: {}",
            if success { "ok" } else { "refused" }
        ));
    }
    println!("secret file modes: {}", seen.join(", "));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inline_keys_in_a_world_readable_config_are_warned_about() {
    let dir = std::env::temp_dir().join(format!("sluice-perm-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!("{BACKEND}[[api_keys]]\nname = \"team-a\"\nkey = \"team-a-inline-key\"\n");
    let (ok, err) = check_in(&dir, &text, 0o644);
    assert!(ok, "a warning, not a refusal: {err}");
    assert!(
        err.contains("warning:")
            && err.contains("has mode 0644 and holds 1 API key(s) written inline"),
        "{err}"
    );
    let (ok, err) = check_in(&dir, &text, 0o640);
    assert!(
        ok && !err.contains("warning"),
        "not readable by others: {err}"
    );
    // Without inline keys, a world-readable file is the documented set-up.
    let (ok, err) = check_in(&dir, BACKEND, 0o644);
    assert!(ok && !err.contains("warning"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cors_origins_are_checked() {
    for (text, expected) in [
        (
            "[server]\ncors_origins = [\"*\"]\n",
            "server.cors_origins[0] = \"*\" is not valid: a wildcard would let every web page call the gateway",
        ),
        (
            "[server]\ncors_origins = [\"https://app.example\", \"https://app.example/\"]\n",
            "server.cors_origins[1] = \"https://app.example/\" is not valid: an origin has no path",
        ),
        (
            "[server]\ncors_origins = [\"app.example\"]\n",
            "server.cors_origins[0] = \"app.example\" is not valid: must start with https:// or http://",
        ),
        (
            "[server]\ncors_origins = [\"https://a.example\", \"https://A.example\"]\n",
            "server.cors_origins[1] = \"https://A.example\" is not valid: listed twice",
        ),
        (
            "[server]\ncors_allow_credentials = true\n",
            "server.cors_allow_credentials = true is not valid: needs server.cors_origins",
        ),
    ] {
        let (ok, err) = check(&format!("{text}{BACKEND}"));
        assert!(!ok, "{text}");
        assert!(err.contains(expected), "{text}: {err}");
    }
    let (ok, err) = check(&format!(
        "[server]\ncors_origins = [\"https://app.example\", \"http://localhost:3000\"]\ncors_allow_credentials = true\n{BACKEND}"
    ));
    assert!(ok, "{err}");
}

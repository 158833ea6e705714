//! `keysmith token generate` and `keysmith token inspect`, run as a user would run them.

use std::process::{Command, Output};

fn keysmith(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keysmith"))
        .args(args)
        .output()
        .expect("run keysmith")
}

fn generate(args: &[&str]) -> String {
    let output = keysmith(&[&["token", "generate"], args].concat());
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout.strip_suffix('\n').expect("one line");
    assert!(!token.contains('\n'));
    token.to_owned()
}

#[test]
fn generated_hex_token_inspects_as_valid() {
    let token = generate(&["--prefix", "myorg_dt_", "--encoding", "hex"]);
    // 9 prefix + 64 hex (32 bytes) + 8 checksum.
    assert_eq!(token.len(), 81);
    let output = keysmith(&["token", "inspect", &token]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = String::from_utf8(output.stdout).unwrap();
    assert!(report.contains("checksum: valid\n"), "{report}");
    assert!(report.contains("prefix:   myorg_dt_\n"), "{report}");
    assert!(
        report.contains(&format!("id:       {}\n", &token[..15])),
        "{report}"
    );
    assert!(report.contains("encoding: hex\n"), "{report}");
    assert!(report.contains(&format!(
        "sha256:   {}\n",
        keysmith::token::sha256_hex(&token)
    )));
}

#[test]
fn changing_any_single_character_fails_inspection() {
    let token = generate(&["--prefix", "myorg_dt_", "--encoding", "hex"]);
    for (position, original) in token.char_indices() {
        let replacement = if original == 'a' { 'b' } else { 'a' };
        let mut tampered = token.clone();
        tampered.replace_range(position..=position, &replacement.to_string());
        let output = keysmith(&["token", "inspect", &tampered]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "position {position}: {output:?}"
        );
    }
}

#[test]
fn base62_is_the_default_and_bytes_set_the_length() {
    let token = generate(&["--prefix", "ks_", "--bytes", "16"]);
    assert_eq!(token.len(), 3 + 22 + 6);
    let output = keysmith(&["token", "inspect", &token]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("encoding: base62\n")
    );
}

#[test]
fn bad_flags_are_named_and_exit_2() {
    for (args, flag) in [
        (&["--prefix", "my-org_"][..], "--prefix"),
        (&["--prefix", &"a".repeat(33)][..], "--prefix"),
        (&["--prefix", "ks_", "--bytes", "15"][..], "--bytes"),
        (&["--prefix", "ks_", "--bytes", "65"][..], "--bytes"),
        (
            &["--prefix", "ks_", "--encoding", "base64"][..],
            "--encoding",
        ),
    ] {
        let output = keysmith(&[&["token", "generate"], args].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn malformed_input_fails_inspection_without_echoing_it() {
    for garbage in ["not a token", "ks_", "x", "ks_secretpart123456"] {
        let output = keysmith(&["token", "inspect", garbage]);
        assert_eq!(output.status.code(), Some(1), "{garbage:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(stdout.starts_with("checksum: invalid"), "{stdout}");
        assert!(!stdout.contains("secretpart123456"), "{stdout}");
    }
}

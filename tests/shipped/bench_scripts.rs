//! `bench/openloop.sh`, `bench/load.sh` and `bench/tenants.sh` refuse wrong arguments (and the
//! first a machine without its load generator) before they build or start anything, and say what
//! to do. Their timings are never asserted: they are run by hand (docs/BENCHMARKS.md), not here.

use std::env;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn openloop(args: &[&str]) -> Command {
    let mut command = Command::new(Path::new(ROOT).join("bench/openloop.sh"));
    command.args(args);
    command
}

fn run(mut command: Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run the script");
    let code = status.code().expect("the script exits by itself");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (code, text(stdout), text(stderr))
}

#[test]
fn help_names_every_flag_and_its_default() {
    let (code, stdout, stderr) = run(openloop(&["--help"]));
    assert_eq!(code, 0, "{stderr}");
    for expected in [
        "Usage: bench/openloop.sh",
        "--rates",
        "1000,2000,5000,10000",
        "--runs",
        "default 3",
        "--duration",
        "10s",
        "--keys",
        "--control",
        "--trace",
        "apt-get install nginx",
        "apt-get install linux-perf",
        "testenv/install vegeta",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}

#[test]
fn wrong_arguments_exit_2_naming_the_flag() {
    for (args, expected) in [
        (&["--rates", "5k"][..], "--rates '5k'"),
        (&["--rates", "5000,,20000"], "--rates '5000,,20000'"),
        (&["--runs", "0"], "--runs '0'"),
        (&["--runs", "three"], "--runs 'three'"),
        (&["--duration", "3"], "--duration '3'"),
        (&["--keys", "0"], "--keys '0'"),
        (&["--duration"], "--duration needs a value"),
        (&["--rate", "5000"], "unknown argument '--rate'"),
    ] {
        let (code, _, stderr) = run(openloop(args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: {expected:?} missing from:\n{stderr}"
        );
    }
}

#[test]
fn load_refuses_a_run_count_that_is_not_a_whole_number() {
    for args in [&["--runs", "0"][..], &["--runs", "five"], &["--runs"]] {
        let mut command = Command::new(Path::new(ROOT).join("bench/load.sh"));
        command.args(args);
        let (code, _, stderr) = run(command);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("--runs needs a whole number, at least 1"),
            "{args:?}: {stderr}"
        );
    }
}

/// `name` on this process's PATH.
fn on_path(name: &str) -> PathBuf {
    env::split_paths(&env::var_os("PATH").expect("PATH is set"))
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

#[test]
fn without_vegeta_or_go_it_stops_saying_how_to_get_vegeta() {
    // A machine without Go: a PATH holding only what the script and testenv/install run before
    // they would build vegeta, and an empty folder for the pinned tools.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("path");
    std::fs::create_dir(&path).unwrap();
    for tool in ["bash", "dirname", "mkdir", "awk", "cat", "sha256sum", "cut"] {
        symlink(on_path(tool), path.join(tool)).unwrap();
    }
    let mut command = openloop(&["--rates", "2000", "--duration", "3s"]);
    command
        .env("PATH", &path)
        .env("KEYSMITH_TESTENV_BIN", dir.path().join("bin"));
    let (code, stdout, stderr) = run(command);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("Go 1.26 or newer is needed to build vegeta"),
        "{stderr}"
    );
    assert!(
        stderr.contains("vegeta is missing and could not be built")
            && stderr.contains("then run testenv/install vegeta"),
        "{stderr}"
    );
}

#[test]
fn tenants_refuses_a_wrong_duration_or_loop_count_before_building() {
    for (args, expected) in [
        (
            &["10"][..],
            "DURATION is whole seconds such as 10s, not '10'",
        ),
        (&["1m"], "DURATION is whole seconds such as 10s, not '1m'"),
        (
            &["10s", "0"],
            "LOOPS is a whole number, at least 1, not '0'",
        ),
        (&["10s", "6", "more"], "at most DURATION and LOOPS"),
    ] {
        let mut command = Command::new(Path::new(ROOT).join("bench/tenants.sh"));
        command.args(args);
        let (code, stdout, stderr) = run(command);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: nothing runs: {stdout}");
    }
}

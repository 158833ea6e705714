//! The release machinery, without publishing anything: `scripts/release-notes` prints exactly the
//! CHANGELOG section of a version and refuses one the changelog does not describe; the pinned
//! actionlint (`testenv/install actionlint`) accepts the workflows and rejects broken copies of
//! them; the Dockerfile's base images and the workflows' actions are pinned; the install docs
//! install the published chart of this version.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use keysmith_testenv::binaries::binary;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const RELEASE_WORKFLOW: &str = ".github/workflows/release.yml";

fn read(path: &str) -> String {
    fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `scripts/release-notes VERSION` on the repository's CHANGELOG.md, or on `changelog`.
fn release_notes(version: &str, changelog: Option<&Path>) -> Output {
    let mut command = Command::new(Path::new(ROOT).join("scripts/release-notes"));
    command.arg(version);
    match changelog {
        Some(path) => command.env("CHANGELOG", path),
        None => command.env_remove("CHANGELOG"),
    };
    command.output().expect("run scripts/release-notes")
}

/// The `## ` sections of a Keep a Changelog file as (heading, body), split here independently
/// of the script: a body ends at the next `## ` heading or at the link definitions
/// (`[0.1.0]: https://...`) closing the file, without its surrounding blank lines.
fn sections(changelog: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, Vec<&str>)> = Vec::new();
    for line in changelog.lines() {
        let link_definition = line.starts_with('[') && line.contains("]: ");
        if line.starts_with("## ") {
            sections.push((line.to_owned(), Vec::new()));
        } else if link_definition {
            break;
        } else if let Some((_, body)) = sections.last_mut() {
            body.push(line);
        }
    }
    sections
        .into_iter()
        .map(|(heading, body)| {
            let blank = |line: &&str| line.trim().is_empty();
            let start = body.iter().position(|l| !blank(l)).unwrap_or(body.len());
            let end = body
                .iter()
                .rposition(|l| !blank(l))
                .map_or(start, |i| i + 1);
            (heading, body[start..end].join("\n"))
        })
        .collect()
}

/// The version a release heading names: `## [Unreleased]` or `## [X.Y.Z] - YYYY-MM-DD`, the
/// two forms docs/releasing.md describes; anything else fails.
fn heading_version(heading: &str) -> &str {
    let rest = heading
        .strip_prefix("## [")
        .unwrap_or_else(|| panic!("{heading:?}: a section heading is `## [VERSION]...`"));
    let (version, date) = rest
        .split_once(']')
        .unwrap_or_else(|| panic!("{heading:?}: no closing bracket"));
    if version == "Unreleased" {
        assert_eq!(date, "", "{heading:?}: the Unreleased heading has no date");
        return version;
    }
    let core = version.split_once('-').map_or(version, |(core, _pre)| core);
    let numbers: Vec<&str> = core.split('.').collect();
    assert!(
        numbers.len() == 3
            && numbers
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        "{heading:?}: the version is not X.Y.Z"
    );
    let date = date
        .strip_prefix(" - ")
        .unwrap_or_else(|| panic!("{heading:?}: a release heading ends with ` - YYYY-MM-DD`"));
    let shape: String = date
        .chars()
        .map(|c| if c.is_ascii_digit() { 'D' } else { c })
        .collect();
    assert_eq!(
        shape, "DDDD-DD-DD",
        "{heading:?}: the date is not YYYY-MM-DD"
    );
    version
}

#[test]
fn release_notes_are_the_versions_section_of_the_real_changelog() {
    let changelog = read("CHANGELOG.md");
    let sections = sections(&changelog);
    assert!(
        sections.iter().any(|(h, _)| h == "## [Unreleased]"),
        "CHANGELOG.md has an Unreleased section"
    );
    for (heading, body) in &sections {
        let version = heading_version(heading);
        assert!(!body.is_empty(), "{heading:?} lists no change");
        // A tag is written vX.Y.Z: the script takes it as it comes.
        let argument = if version == "Unreleased" {
            version.to_owned()
        } else {
            format!("v{version}")
        };
        let output = release_notes(&argument, None);
        assert!(output.status.success(), "{argument}: {}", stderr(&output));
        assert_eq!(stdout(&output), format!("{body}\n"), "notes of {argument}");
        assert!(
            !stdout(&output).contains("\n## "),
            "{argument}: one section only"
        );
    }
}

#[test]
fn a_version_the_changelog_does_not_describe_fails_naming_the_heading() {
    let changelog = read("CHANGELOG.md");
    let missing = format!("{VERSION}.404");
    assert!(!changelog.contains(&format!("[{missing}]")));
    let output = release_notes(&missing, None);
    assert!(!output.status.success(), "{missing} has no notes");
    assert_eq!(stdout(&output), "", "nothing printed for {missing}");
    assert!(
        stderr(&output).contains(&format!("no \"## [{missing}]\" section"))
            && stderr(&output).contains("docs/releasing.md"),
        "the error says what to add: {}",
        stderr(&output)
    );
}

#[test]
fn release_notes_match_whole_versions_and_leave_out_link_definitions() {
    let changelog = "# Changelog\n\n\
        ## [Unreleased]\n\n\
        ## [0.1.10] - 2026-03-01\n\n### Fixed\n\n- ten\n\n\
        ## [0.1.1] - 2026-02-01\n\n### Added\n\n- one\n  continued\n\n\
        ## [0.1.0] - 2026-01-01\n\n- first\n\n\
        [0.1.10]: https://example.com/compare/v0.1.1...v0.1.10\n\
        [0.1.1]: https://example.com/compare/v0.1.0...v0.1.1\n";
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("CHANGELOG.md");
    fs::write(&path, changelog).expect("write the changelog");

    let cases = [
        ("0.1.1", "### Added\n\n- one\n  continued\n"),
        ("v0.1.10", "### Fixed\n\n- ten\n"),
        ("0.1.0", "- first\n"),
    ];
    for (version, notes) in cases {
        let output = release_notes(version, Some(&path));
        assert!(output.status.success(), "{version}: {}", stderr(&output));
        assert_eq!(stdout(&output), notes, "notes of {version}");
    }

    // A prefix of a version is not that version; an empty section has no notes to publish.
    for (version, error) in [
        ("0.1", "no \"## [0.1]\" section"),
        ("Unreleased", "section of"),
    ] {
        let output = release_notes(version, Some(&path));
        assert!(!output.status.success(), "{version} must fail");
        assert_eq!(stdout(&output), "", "nothing printed for {version}");
        assert!(
            stderr(&output).contains(error),
            "{version}: {}",
            stderr(&output)
        );
    }
}

/// Runs the pinned actionlint in `dir` on `files` (all of `dir`'s workflows when empty).
fn actionlint(dir: &Path, files: &[&str]) -> Output {
    Command::new(binary("actionlint"))
        .arg("-no-color")
        .args(files)
        .current_dir(dir)
        .output()
        .expect("run actionlint")
}

#[test]
fn actionlint_accepts_the_workflows() {
    let workflows: Vec<String> = fs::read_dir(Path::new(ROOT).join(".github/workflows"))
        .expect(".github/workflows")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for name in ["ci.yml", "release.yml"] {
        assert!(
            workflows.iter().any(|w| w == name),
            "{name} in {workflows:?}"
        );
    }
    let output = actionlint(Path::new(ROOT), &[]);
    assert!(
        output.status.success(),
        "actionlint:\n{}{}",
        stdout(&output),
        stderr(&output)
    );
}

#[test]
fn actionlint_rejects_a_broken_release_workflow() {
    let workflow = read(RELEASE_WORKFLOW);
    let cases = [
        (
            "an output the check job does not declare",
            "needs.check.outputs.version",
            "needs.check.outputs.versoin",
            "property \"versoin\" is not defined",
        ),
        (
            "a permission scope GitHub does not have",
            "packages: write",
            "package: write",
            "unknown permission scope \"package\"",
        ),
        (
            "a job that needs a job that does not exist",
            "needs: check\n",
            "needs: chek\n",
            "needs job \"chek\" which does not exist",
        ),
    ];
    for (what, from, to, error) in cases {
        assert!(
            workflow.contains(from),
            "{what}: {from:?} is in the workflow"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(RELEASE_WORKFLOW);
        fs::create_dir_all(path.parent().expect("parent")).expect("workflows folder");
        fs::write(&path, workflow.replace(from, to)).expect("write the broken copy");
        let output = actionlint(dir.path(), &[RELEASE_WORKFLOW]);
        assert!(!output.status.success(), "{what}: actionlint must fail");
        assert!(
            stdout(&output).contains(error),
            "{what}: expected {error:?} in\n{}{}",
            stdout(&output),
            stderr(&output)
        );
    }
}

/// `name:tag@sha256:<64 hex digits>`, the tag kept for readers and Dependabot.
fn assert_pinned_image(reference: &str, line: &str) {
    let (name_tag, digest) = reference
        .split_once("@sha256:")
        .unwrap_or_else(|| panic!("{line:?}: not pinned by digest (image:tag@sha256:...)"));
    assert!(
        name_tag
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':')),
        "{line:?}: keep the tag next to the digest"
    );
    assert!(
        digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{line:?}: a sha256 digest has 64 lowercase hex digits"
    );
}

#[test]
fn every_base_image_of_the_dockerfile_is_pinned_by_digest() {
    let dockerfile = read("Dockerfile");
    let syntax = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("# syntax="))
        .expect("the Dockerfile names its frontend");
    assert_pinned_image(syntax, syntax);

    let mut stages: Vec<String> = Vec::new();
    let mut external = 0;
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words
            .first()
            .is_some_and(|w| w.eq_ignore_ascii_case("FROM"))
        {
            continue;
        }
        let mut rest = words[1..].iter().skip_while(|w| w.starts_with("--"));
        let image = rest.next().unwrap_or_else(|| panic!("{line:?}: no image"));
        // `FROM build` names an earlier stage, not an image.
        if !stages.iter().any(|stage| stage == image) {
            assert_pinned_image(image, line);
            external += 1;
        }
        if let (Some(as_), Some(name)) = (rest.next(), rest.next()) {
            assert!(as_.eq_ignore_ascii_case("AS"), "{line:?}");
            stages.push((*name).to_owned());
        }
    }
    assert!(external >= 2, "the build and the runtime image: {external}");
}

#[test]
fn every_action_of_the_workflows_is_pinned_by_commit() {
    let github = Path::new(ROOT).join(".github");
    let workflows = fs::read_dir(github.join("workflows")).expect("workflows");
    // The workflows' own composite actions use third-party actions too.
    let local_actions = fs::read_dir(github.join("actions"))
        .expect("local actions")
        .map(|dir| Ok::<_, std::io::Error>(dir?.path().join("action.yml")));
    let mut local = 0;
    let mut pinned = 0;
    for path in workflows.map(|e| e.map(|e| e.path())).chain(local_actions) {
        let path = path.expect("entry");
        let workflow = fs::read_to_string(&path).expect("workflow");
        for line in workflow.lines() {
            let Some(uses) = line
                .trim_start()
                .trim_start_matches("- ")
                .strip_prefix("uses: ")
            else {
                continue;
            };
            if uses.starts_with("./") {
                local += 1;
                continue;
            }
            let (action, rest) = uses
                .split_once('@')
                .unwrap_or_else(|| panic!("{}: {line:?} has no ref", path.display()));
            let (commit, comment) = rest.split_once(" # ").unwrap_or((rest, ""));
            assert!(
                action.split('/').count() >= 2
                    && commit.len() == 40
                    && commit.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: {line:?} is not pinned by a full commit SHA",
                path.display()
            );
            assert!(
                comment.starts_with('v'),
                "{}: {line:?} names the release it pins in a comment (# vX.Y.Z)",
                path.display()
            );
            pinned += 1;
        }
    }
    assert!(pinned > 0, "the workflows use actions");
    assert!(local > 0, "the jobs share the toolchains action");
}

#[test]
fn the_install_docs_install_the_published_chart_of_this_version() {
    let install = format!(
        "helm install keysmith oci://ghcr.io/keysmith-dev/charts/keysmith --version {VERSION}"
    );
    for doc in ["README.md", "docs/operations.md"] {
        assert!(read(doc).contains(&install), "{doc}: {install}");
    }
}

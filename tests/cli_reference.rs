//! The command line as a user meets it: every command's `--help` describes that
//! command (and no other), and `docs/reference/cli.md`, generated from the same
//! definition, is what the binary prints. Runs the binary; needs no services.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What each command does, in the words its help must begin with. A new command
/// fails the test until it is listed here, with the summary its help gives.
const SUMMARIES: [(&str, &str); 19] = [
    (
        "",
        "One identity per customer from a stream of order events.",
    ),
    (
        "run",
        "Worker, outbox relay and HTTP sidecar (the main job).",
    ),
    ("http", "The HTTP sidecar only; needs no Kafka"),
    ("migrate", "Apply database migrations and exit"),
    (
        "unmerge",
        "Undo the merge that absorbed the primary contact ID",
    ),
    ("forget", "Erase a person:"),
    ("history", "Print the merges and additions of the identity"),
    ("explain", "Print why the contacts of the identity"),
    ("reviews", "The review queue:"),
    ("reviews list", "Print pending entries, oldest first"),
    ("reviews approve", "Make the refused merge now"),
    ("reviews reject", "Keep the two identities apart for good"),
    ("tail", "Print the records of the identities topic"),
    ("dlq", "Dead letters: list them, or re-publish them"),
    ("dlq list", "Print one JSON line per dead letter"),
    ("dlq redrive", "Re-publish dead letters to the input topic"),
    ("produce", "Produce order-contact events"),
    ("topics", "Create the Kafka topics the service needs"),
    ("contracts", "Write the documents generated from the code"),
];

fn identity_reconciler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
        .args(args)
        .output()
        .expect("run identity-reconciler")
}

fn stdout_of(args: &[&str]) -> String {
    let output = identity_reconciler(args);
    assert!(
        output.status.success(),
        "identity-reconciler {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// The subcommands a help lists under "Commands:" (clap's own `help` left out).
fn listed_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command reachable from the top-level help, by path ("" for the binary
/// itself), with what `<path> --help` prints.
fn every_help() -> BTreeMap<String, String> {
    let mut helps = BTreeMap::new();
    let mut pending = vec![String::new()];
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.split_whitespace().collect();
        args.push("--help");
        let help = stdout_of(&args);
        for sub in listed_subcommands(&help) {
            pending.push(format!("{path} {sub}").trim().to_owned());
        }
        helps.insert(path, help);
    }
    helps
}

fn reference_dir() -> PathBuf {
    repository_root().join("docs/reference")
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn every_command_s_help_describes_that_command_and_no_other() {
    let helps = every_help();
    let listed: Vec<&str> = helps.keys().map(String::as_str).collect();
    let expected: Vec<&str> = {
        let mut paths: Vec<&str> = SUMMARIES.iter().map(|(path, _)| *path).collect();
        paths.sort_unstable();
        paths
    };
    assert_eq!(
        listed, expected,
        "the commands the binary lists differ from SUMMARIES; describe a new command there"
    );
    for (path, summary) in SUMMARIES {
        let help = &helps[path];
        assert!(
            help.starts_with(summary),
            "`identity-reconciler {path} --help` should begin with {summary:?}:\n{help}"
        );
        let usage = format!("Usage: {}", format!("identity-reconciler {path}").trim());
        assert!(
            help.lines().any(|line| line.starts_with(&usage)),
            "`identity-reconciler {path} --help` has no line starting {usage:?}:\n{help}"
        );
        // A parent lists its subcommands' summaries; nothing else quotes another's.
        for (other, other_summary) in SUMMARIES {
            let descendant = path.is_empty() || other.starts_with(&format!("{path} "));
            if other != path && !descendant {
                assert!(
                    !help.contains(other_summary),
                    "`identity-reconciler {path} --help` describes `{other}` too:\n{help}"
                );
            }
        }
    }
}

#[test]
fn the_committed_cli_reference_is_what_the_code_generates() {
    let root = repository_root();
    let output = identity_reconciler(&["contracts", "--check", "--dir", root.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}\nregenerate it with `cargo run -- contracts` and commit docs/reference/",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

#[test]
fn the_cli_reference_shows_what_every_command_s_help_prints() {
    let reference =
        std::fs::read_to_string(reference_dir().join("cli.md")).expect("docs/reference/cli.md");
    for (path, help) in every_help() {
        let heading = format!("## {}", format!("identity-reconciler {path}").trim());
        let section = reference
            .split("\n## ")
            .find(|s| format!("## {}", s.lines().next().unwrap_or_default()) == heading)
            .unwrap_or_else(|| panic!("docs/reference/cli.md has no section {heading:?}"));
        let shown: String = help
            .lines()
            .map(|l| format!("{}\n", l.trim_end()))
            .collect();
        assert!(
            section.contains(shown.trim_end()),
            "the section {heading:?} of docs/reference/cli.md is not what `--help` prints:\n{help}"
        );
    }
}

#[test]
fn a_stale_reference_is_named_with_the_command_that_regenerates_it() {
    let dir = std::env::temp_dir().join(format!("ir-cli-reference-{}", std::process::id()));
    let dir_arg = dir.to_str().unwrap();
    stdout_of(&["contracts", "--dir", dir_arg]);
    stdout_of(&["contracts", "--check", "--dir", dir_arg]);

    let page = dir.join("docs/reference/cli.md");
    let edited = std::fs::read_to_string(&page)
        .unwrap()
        .replace("Produce order-contact events", "Produce events");
    std::fs::write(&page, edited).unwrap();
    let output = identity_reconciler(&["contracts", "--check", "--dir", dir_arg]);

    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cli.md"), "{stderr}");
    assert!(stderr.contains("identity-reconciler contracts"), "{stderr}");
}

//! `identity-reconciler reference` (hidden: a developer's command): the reference
//! documents of `docs/reference/` that the code defines, written from it, or checked
//! against it (`--check`, and `tests/cli_reference.rs`), so that they cannot drift.
//!
//! `cli.md` is every command's `--help`, walked from the clap definition: the same
//! text the binary prints, so the page and the binary cannot disagree.

use anyhow::Context;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// Write the generated reference documents of `docs/reference/` (`cli.md`: every
/// command's help) from the code, or with --check fail when a committed one is
/// stale. Needs no settings.
#[derive(clap::Args)]
pub struct Reference {
    /// Compare instead of writing; exit 1 naming the stale files.
    #[arg(long)]
    check: bool,
    /// The directory of the reference documents.
    #[arg(long, default_value = "docs/reference")]
    dir: PathBuf,
}

impl Reference {
    pub fn run(self) -> anyhow::Result<()> {
        let dir = &self.dir;
        if !self.check {
            return write(dir)
                .with_context(|| format!("cannot write the reference into {}", dir.display()));
        }
        let stale = stale(dir);
        anyhow::ensure!(
            stale.is_empty(),
            "stale reference documents in {}: {} (run `cargo run -- reference` and commit them)",
            dir.display(),
            stale.join(", ")
        );
        Ok(())
    }
}

/// Every generated reference document: file name and content.
fn generated() -> Vec<(&'static str, String)> {
    vec![("cli.md", cli_markdown())]
}

fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in generated() {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(())
}

/// The documents whose file in `dir` is missing or differs from the generated one.
fn stale(dir: &Path) -> Vec<&'static str> {
    generated()
        .into_iter()
        .filter(|(name, content)| {
            std::fs::read_to_string(dir.join(name)).ok().as_ref() != Some(content)
        })
        .map(|(name, _)| name)
        .collect()
}

/// `docs/reference/cli.md`: a contents list, then what each visible command's
/// `--help` prints, depth first.
fn cli_markdown() -> String {
    let mut root = super::Cli::command();
    root.build();
    let mut commands = Vec::new();
    visible_commands(&root, root.get_name().to_owned(), &mut commands);
    let mut page = String::from(
        "# Command-line reference\n\
         \n\
         <!-- Generated from the code by `cargo run -- reference`; do not edit.\n     \
         tests/cli_reference.rs fails when this file is stale. -->\n\
         \n\
         Each section is what `<command> --help` prints.\n\
         \n",
    );
    for (path, command) in &commands {
        let about = command.get_about().map(ToString::to_string);
        page.push_str(&format!(
            "- [`{path}`](#{}): {}\n",
            path.replace(' ', "-"),
            about.unwrap_or_default()
        ));
    }
    for (path, _) in commands {
        let help = help_of(&path);
        let help: Vec<&str> = help.lines().map(str::trim_end).collect();
        page.push_str(&format!(
            "\n## {path}\n\n```text\n{}\n```\n",
            help.join("\n").trim_end()
        ));
    }
    page
}

/// What `<path> --help` prints, asked as the binary asks it: clap picks the short or
/// the long layout per command, so rendering the long help would not always match.
fn help_of(path: &str) -> String {
    let args = path.split(' ').chain(["--help"]);
    match super::Cli::command().try_get_matches_from(args) {
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.render().to_string(),
        _ => panic!("`{path} --help` does not print a help"),
    }
}

/// `command` and its visible subcommands, depth first, each with its path from the
/// binary's name. Leaves out clap's own `help` subcommand.
fn visible_commands(
    command: &clap::Command,
    path: String,
    into: &mut Vec<(String, clap::Command)>,
) {
    into.push((path.clone(), command.clone()));
    for sub in command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
    {
        visible_commands(sub, format!("{path} {}", sub.get_name()), into);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_argument_has_help() {
        let mut root = Cli::command();
        root.build();
        let mut commands = Vec::new();
        super::visible_commands(&root, "identity-reconciler".to_owned(), &mut commands);
        for (path, command) in commands {
            assert!(command.get_about().is_some(), "`{path}` has no help");
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") || arg.is_hide_set() {
                    continue;
                }
                assert!(arg.get_help().is_some(), "`{path}`: `{id}` has no help");
            }
        }
    }
}

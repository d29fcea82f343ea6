//! `docs/reference/cli.md`, written and checked by `identity-reconciler contracts`
//! with the other generated documents (the binary alone knows its commands, so this
//! page is added there), and checked by `tests/cli_reference.rs`.
//!
//! The page is every command's `--help`, walked from the clap definition: the same
//! text the binary prints, so the page and the binary cannot disagree.

use clap::CommandFactory;

/// Where the page goes, from the repository's root.
pub(super) const CLI_PAGE: &str = "docs/reference/cli.md";

/// `docs/reference/cli.md`: a contents list, then what each visible command's
/// `--help` prints, depth first.
pub(super) fn cli_markdown() -> String {
    let mut root = super::Cli::command();
    root.build();
    let mut commands = Vec::new();
    visible_commands(&root, root.get_name().to_owned(), &mut commands);
    let mut page = String::from(
        "# Command-line reference\n\
         \n\
         <!-- Generated from the code by `cargo run -- contracts`; do not edit.\n     \
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

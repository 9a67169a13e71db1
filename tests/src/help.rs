//! Reads the options a binary's `--help` lists, with the environment variable of each.

use std::process::Command;

use crate::procs::bin;

/// One option entry of a `--help` page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpOption {
    /// `--flag`.
    pub flag: String,
    /// The variable in its `[env: NAME=…]` line, if any.
    pub env: Option<String>,
    /// The whole entry, whitespace-normalised (for messages).
    pub text: String,
}

/// The options of `binary --help`, in order.
pub fn options(binary: &str) -> Vec<HelpOption> {
    let output = Command::new(bin(binary))
        .arg("--help")
        // A fixed width, so wrapping does not depend on the terminal the tests run in.
        .env("COLUMNS", "100")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary} --help: {e}"));
    assert!(output.status.success(), "{binary} --help failed");
    parse(&String::from_utf8_lossy(&output.stdout))
}

/// Parses clap's long help: an option entry starts with a line indented at most 6 columns whose text
/// starts with `-`; its description lines are indented deeper; a section heading or a positional
/// argument ends it.
pub fn parse(help: &str) -> Vec<HelpOption> {
    let mut entries: Vec<(String, Vec<String>)> = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if indent <= 6 {
            if let Some(done) = current.take() {
                entries.push(done);
            }
            if text.starts_with('-')
                && let Some(flag) = text.split([' ', ',']).find(|token| token.starts_with("--"))
            {
                current = Some((flag.to_string(), vec![text.to_string()]));
            }
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(text.to_string());
        }
    }
    entries.extend(current);
    entries
        .into_iter()
        .map(|(flag, lines)| {
            let text = lines.join(" ");
            let env = text.split_once("[env:").map(|(_, rest)| {
                rest.trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            });
            HelpOption { flag, env, text }
        })
        .collect()
}

/// Every environment variable `binary --help` names.
pub fn variables(binary: &str) -> Vec<String> {
    options(binary).into_iter().filter_map(|o| o.env).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clap_long_help() {
        let help = "\
Usage: x [OPTIONS] [-- <ARGS>...]

Options:
      --socket <PATH>
          Unix socket
          
          [env: RINGWAY_SOCKET=]
          [default: /run/ringway/control.sock]

      --log-format <F>
          Possible values:
          - text: For people
          
          [env:
          RINGWAY_LOG_FORMAT=]

      --no-env
          Nothing

  -h, --help
          Print help

Supervisor (--spawn-dataplane):
      --spawn-dataplane
          Also run [env: RINGWAY_SPAWN_DATAPLANE=]

  [ARGS]...
          Dataplane arguments --not-a-flag
";
        let options = parse(help);
        let summary: Vec<(&str, Option<&str>)> = options
            .iter()
            .map(|o| (o.flag.as_str(), o.env.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("--socket", Some("RINGWAY_SOCKET")),
                ("--log-format", Some("RINGWAY_LOG_FORMAT")),
                ("--no-env", None),
                ("--help", None),
                ("--spawn-dataplane", Some("RINGWAY_SPAWN_DATAPLANE")),
            ]
        );
    }
}

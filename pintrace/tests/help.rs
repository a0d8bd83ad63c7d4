//! `--help` of every command and subcommand, hidden ones included: clap
//! shows doc comments as they are, so no rustdoc syntax (intra-doc links
//! such as "[`NAME`]") may be in them.

use std::process::Command;

fn help(path: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pintrace"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{path:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists under "Commands:" (`help` aside).
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_help_text_shows_rustdoc_syntax() {
    // The hidden commands are not listed: start from them too.
    let mut todo: Vec<Vec<String>> = vec![vec![], vec!["zoo".into()], vec!["bench-probe".into()]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for bad in ["[`", "`]"] {
            assert!(
                !text.contains(bad),
                "`{bad}` in pintrace {path:?} --help:\n{text}"
            );
        }
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        seen += 1;
    }
    // pintrace, its five listed commands, zoo and its five, bench-probe:
    // a parse of "Commands:" that found nothing would pass vacuously.
    assert!(seen >= 13, "only {seen} help texts read");
}

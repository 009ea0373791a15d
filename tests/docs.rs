//! The docs promise only flags that exist (issue 25: `--resume-replay-ms` was in three READMEs
//! and fifo-layout.md while tts-writer's flag is `--resume-replay`). For each Rust program,
//! every `--flag` that its README (`bins/<program>/README.md`), the root README.md or
//! fifo-layout.md attribute to it must be an option in its `--help`.
//!
//! Who a flag belongs to is read the way a person reads it: the nearest program named before it
//! in the same sentence, table row or command line ("vadseg's `--min-speech`", "`llm-relay
//! --preempt on`", "tgcat q.wav | vadseg --threshold 0.6"); in a program's own README, a flag
//! with no program named before it is that program's. A flag after another command (tg-bridge,
//! scripts/voicecall, cargo, ffplay, …) is not checked here. Each failure names the file and
//! line, the flag and the program, so a wrong flag is fixed in the doc, or the sentence names
//! the program it means. In a program's own README its own flags also pass where the sentence
//! names another program first ("… so tts-writer drops the paused reply … `--interrupt-after`").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use tgvoice::testkit::bin_path;

/// The Rust programs whose `--help` is checked.
const PROGRAMS: &[&str] = &[
    "tgcat", "vadseg", "sttd", "llm-relay", "tts-writer", "framecat", "callsim", "tgvoice-rundir", "whisper-convert",
    "phone-bridge",
];

/// Other commands: a flag after one of these, up to the end of that command (a pipe, `;`,
/// `&&`, a closing backtick or parenthesis, a `#` comment), is theirs, and so are the program
/// names among their arguments (`cargo bench -p sttd --bench latency`).
const OTHER_COMMANDS: &[&str] = &[
    "tg-bridge", "voicecall", "scripts/", "launchd/", "install.sh", "cargo", "pytest", "pip", "ffplay", "ffmpeg", "ffprobe",
    "sox", "curl", "ssh", "socat", "cloudflared", "ngrok", "espeak-ng", "apt-get", "gen_exit_codes",
];

/// Where another command's arguments end.
const COMMAND_ENDS: &[&str] = &["|", ";", "`", "#", "&&", ")"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The long options `program --help` defines (lines such as `  -i, --input <PATH>`).
fn help_flags(program: &str) -> BTreeSet<String> {
    let out = Command::new(bin_path(program)).arg("--help").output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} --help failed");
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = if l.len() > 3 && l.starts_with('-') && !l.starts_with("--") && l[2..].starts_with(", ") { &l[4..] } else { l };
            let name: String = l.strip_prefix("--")?.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// A piece of text read as one unit (a sentence, a table row, a line of a code block), with the
/// line it starts on.
struct Unit {
    line: usize,
    text: String,
    /// A line of a code block (a command line, where quotes group arguments).
    code: bool,
}

/// Split Markdown into units: code-block lines and table rows alone, prose by sentences.
fn units(doc: &str) -> Vec<Unit> {
    let mut out = vec![];
    let mut para: Vec<(usize, &str)> = vec![];
    let mut in_code = false;
    let flush = |para: &mut Vec<(usize, &str)>, out: &mut Vec<Unit>| {
        if para.is_empty() {
            return;
        }
        let start = para[0].0;
        let mut text = String::new();
        let mut line_starts = vec![];
        for (n, l) in para.iter() {
            line_starts.push((text.len(), *n));
            text.push_str(l.trim());
            text.push(' ');
        }
        // Sentences end at ". ", "! ", "? " or "; " before an upper-case letter, a backtick or a
        // bracket (so "e.g. `x`" splits too, which only ever shortens the context).
        let bytes = text.as_bytes();
        let mut begin = 0;
        for i in 0..bytes.len().saturating_sub(2) {
            if matches!(bytes[i], b'.' | b'!' | b'?' | b';') && bytes[i + 1] == b' ' && (bytes[i + 2].is_ascii_uppercase() || b"`([".contains(&bytes[i + 2])) {
                let line = line_starts.iter().rev().find(|(off, _)| *off <= begin).map_or(start, |x| x.1);
                out.push(Unit { line, text: text[begin..=i].to_string(), code: false });
                begin = i + 2;
            }
        }
        let line = line_starts.iter().rev().find(|(off, _)| *off <= begin).map_or(start, |x| x.1);
        out.push(Unit { line, text: text[begin..].to_string(), code: false });
        para.clear();
    };
    for (i, l) in doc.lines().enumerate() {
        let n = i + 1;
        if l.trim_start().starts_with("```") {
            flush(&mut para, &mut out);
            in_code = !in_code;
            continue;
        }
        if in_code || l.trim_start().starts_with('|') {
            flush(&mut para, &mut out);
            out.push(Unit { line: n, text: l.to_string(), code: in_code });
        } else if l.trim().is_empty() || l.starts_with('#') || l.trim_start().starts_with("- ") || l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.trim_start().contains(". ") {
            // A heading, a blank line or a new list item starts a new paragraph.
            flush(&mut para, &mut out);
            if !l.trim().is_empty() && !l.starts_with('#') {
                para.push((n, l));
            }
        } else {
            para.push((n, l));
        }
    }
    flush(&mut para, &mut out);
    out
}

/// Is `text[at..]` the name `name` standing alone: not inside a longer word, and not a part of
/// a path ("bins/vadseg/README.md" names a file, not the program)? A name ending in '/' is a
/// directory prefix ("scripts/") and may be followed by anything.
fn name_at(text: &str, at: usize, name: &str) -> bool {
    let before = text[..at].chars().next_back();
    let after = text[at + name.len()..].chars().next();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/';
    !before.is_some_and(word) && (name.ends_with('/') || !after.is_some_and(word))
}

/// A program or command named in a unit.
struct Name {
    at: usize,
    len: usize,
    /// None: another command, whose arguments end at `scope_end`.
    program: Option<&'static str>,
    scope_end: usize,
    /// "vadseg's …": the owner of a flag right after it ("vadseg's 4 s `--x`"), not of one after
    /// other words ("vadseg's segments, `--x`").
    possessive: bool,
}

/// Each `--flag` of a unit with the program it belongs to (None: another command's, or nobody's).
fn flags_in(unit: &str, default: Option<&'static str>, code: bool) -> Vec<(String, Option<&'static str>)> {
    let mut names: Vec<Name> = vec![];
    for &p in PROGRAMS {
        for (at, _) in unit.match_indices(p).filter(|(i, _)| name_at(unit, *i, p)) {
            let possessive = unit[at + p.len()..].starts_with("'s ");
            names.push(Name { at, len: p.len(), program: Some(p), scope_end: 0, possessive });
        }
    }
    for &c in OTHER_COMMANDS {
        for (at, _) in unit.match_indices(c).filter(|(i, _)| name_at(unit, *i, c)) {
            let from = at + c.len();
            let scope_end = COMMAND_ENDS.iter().filter_map(|e| unit[from..].find(e).map(|x| from + x)).min().unwrap_or(unit.len());
            names.push(Name { at, len: c.len(), program: None, scope_end, possessive: false });
        }
    }
    names.sort_by_key(|n| n.at);
    let b = unit.as_bytes();
    let mut out = vec![];
    for (i, _) in unit.match_indices("--") {
        let before_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-' || b[i - 1] == b'_');
        let flag: String = unit[i + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        if !before_ok || !flag.starts_with(|c: char| c.is_ascii_lowercase()) {
            continue;
        }
        // Inside a quoted argument of a command line (`--command 'say --data-format=…'`): the
        // quoted command's flag.
        let ticks = unit[..i].matches('`').count();
        let quoted_from = if ticks % 2 == 1 { unit[..i].rfind('`').map(|x| x + 1) } else if code { Some(0) } else { None };
        if quoted_from.is_some_and(|from| unit[from..i].matches('\'').count() % 2 == 1) {
            continue;
        }
        let (mut owner, mut scope) = (default, 0);
        for n in names.iter().take_while(|n| n.at < i) {
            if n.at < scope {
                continue; // an argument of another command
            }
            match n.program {
                None => (owner, scope) = (None, n.scope_end),
                Some(_) if n.possessive && unit[n.at + n.len + 3..i].split(|c: char| !c.is_ascii_alphabetic()).any(|w| w.len() >= 3) => {}
                Some(p) => owner = Some(p),
            }
        }
        if i < scope {
            owner = None;
        }
        out.push((flag.trim_end_matches('-').to_string(), owner));
    }
    out
}

#[test]
fn every_flag_the_docs_attribute_to_a_program_is_in_its_help() {
    let root = root();
    let mut docs: Vec<(PathBuf, Option<&'static str>)> = vec![(root.join("README.md"), None), (root.join("fifo-layout.md"), None)];
    for &p in PROGRAMS {
        let readme = root.join("bins").join(p).join("README.md");
        if readme.exists() {
            docs.push((readme, Some(p)));
        }
    }
    let mut help: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut failures = vec![];
    let mut checked = 0;
    for (path, default) in &docs {
        let text = std::fs::read_to_string(path).unwrap();
        let rel = path.strip_prefix(&root).unwrap().display().to_string();
        for unit in units(&text) {
            for (flag, owner) in flags_in(&unit.text, *default, unit.code) {
                let Some(program) = owner else { continue };
                checked += 1;
                if help.entry(program).or_insert_with(|| help_flags(program)).contains(&flag) {
                    continue;
                }
                // In a program's own README, its own flag in a sentence about another program
                // ("… so tts-writer drops the reply … (`--interrupt-after`)") is its own.
                if let Some(own) = default.filter(|own| *own != program) {
                    if help.entry(own).or_insert_with(|| help_flags(own)).contains(&flag) {
                        continue;
                    }
                }
                failures.push(format!("{rel}:{}: `--{flag}` (read as {program}'s) is not an option of `{program} --help`", unit.line));
            }
        }
    }
    println!("{checked} flag mentions checked in {} documents", docs.len());
    assert!(checked > 100, "only {checked} flags found: is the reading of the docs broken?");
    assert!(failures.is_empty(), "flags in the docs that the programs do not have:\n{}", failures.join("\n"));
}

#[test]
fn the_reading_attributes_flags_as_a_person_would() {
    let owners = |s: &str, d| flags_in(s, d, false).into_iter().map(|(f, p)| format!("{f}={}", p.unwrap_or("-"))).collect::<Vec<_>>();
    assert_eq!(owners("vadseg's `--min-speech` and llm-relay (`--barge-in pause`)", None), ["min-speech=vadseg", "barge-in=llm-relay"]);
    assert_eq!(owners("tgcat --realtime q.wav | vadseg --threshold 0.6 | sttd", None), ["realtime=tgcat", "threshold=vadseg"]);
    assert_eq!(owners("scripts/voicecall --instance call2 start", Some("sttd")), ["instance=-"]);
    assert_eq!(owners("see bins/vadseg/README.md for `--eot-complete`", Some("sttd")), ["eot-complete=sttd"]);
    assert_eq!(owners("`--model` any ggml model", Some("sttd")), ["model=sttd"]);
    assert_eq!(owners("tts-writer-like --x, callsim --run-dir $RUN", None), ["x=-", "run-dir=callsim"]);
    assert_eq!(owners("`cargo bench -p sttd --bench latency` and `sttd --model m`", None), ["bench=-", "model=sttd"]);
    assert_eq!(owners("vadseg's segments, `--speculate-after`; tts-writer's 4 s `--pause-timeout`", Some("sttd")), ["speculate-after=sttd", "pause-timeout=tts-writer"]);
    assert_eq!(flags_in("tts-writer --command 'say --data-format=x' --engine command", None, true).len(), 2);
    let u = units("A sentence about vadseg.\nThen `--pre-roll`.\n\n| `--x` | y |\n```\ntgcat --realtime\n```\n");
    let got: Vec<(usize, &str)> = u.iter().map(|u| (u.line, u.text.trim())).collect();
    assert_eq!(got, [(1, "A sentence about vadseg."), (2, "Then `--pre-roll`."), (4, "| `--x` | y |"), (6, "tgcat --realtime")]);
}

//! Every pipeline example of the READMEs runs as written and prints something a person can
//! read (issue 29). An example is a line of a code block in README.md or bins/*/README.md that
//! names one of the programs and pipes or redirects (`|`, `<`, `>`); lines about a live
//! instance (`$RUN/…`) are the supervisor's, not examples to type. Each runs in a directory
//! holding the files examples name (tests/pty.rs), with stdout on a pseudo-terminal, as typed
//! at a shell. Only two things are put in for what a test cannot have: the microphone (`sox -d`)
//! is question.wav, and an audio player at the end is `wc -c` (the raw audio must reach it). The
//! LLM is the loopback stand-in (tests/standin_llm.rs), Claude's too. A new example that this
//! file does not know fails the test until its check is added below. Runs the real-time
//! examples in real time: the full suite, not the fast tier.

mod common;
mod pty;
mod standin_llm;

use pty::{examples_dir, final_transcripts, frames_of, run, Stdout, ANSWER};
use std::path::Path;
use std::time::Duration;

/// The programs whose examples are run.
const PROGRAMS: &[&str] = &["tgcat", "vadseg", "sttd", "llm-relay", "tts-writer", "framecat", "callsim"];
/// Audio players an example may end in: replaced by `wc -c`.
const PLAYERS: &[&str] = &["| ffplay ", "| aplay ", "| play "];

/// What an example must print on the terminal, or write.
enum Expect {
    /// Its terminal output passes `check` (`what` says what it should be).
    Terminal { what: &'static str, check: Box<dyn Fn(&str) -> bool> },
    /// It prints nothing and writes `file`, which passes `check`.
    File { file: &'static str, what: &'static str, check: Box<dyn Fn(&[u8]) -> bool> },
    /// Raw audio (a whole number of samples) reaches its player.
    Player,
}

/// The check of each known example.
fn expect(example: &str, heard: &str) -> Option<Expect> {
    let line = format!("{heard}\n");
    let transcript = |what| {
        let line = line.clone();
        Expect::Terminal { what, check: Box::new(move |t: &str| t == line) }
    };
    let json_lines_with = |kind: &'static str| Expect::Terminal {
        what: "JSON lines",
        check: Box::new(move |t: &str| {
            let lines: Vec<serde_json::Value> = t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            lines.len() == t.lines().count() && lines.iter().any(|l| l["type"] == kind)
        }),
    };
    let event_lines_with = |kind: &'static str| Expect::Terminal {
        what: "a line per event and per second of audio",
        check: Box::new(move |t: &str| t.lines().any(|l| l.contains(&format!("  {kind}  turn ")))),
    };
    Some(match example {
        "tgcat --realtime question.wav | vadseg | sttd"
        | "tgcat --realtime call.wav | vadseg | sttd"
        | "sox -d -t raw -r 48000 -e signed -b 16 -c 1 - | tgcat - | vadseg | sttd" => transcript("the question, one line"),
        "tgcat question.wav | framecat | head" => Expect::Terminal {
            what: "ten audio summaries",
            check: Box::new(|t: &str| {
                t.lines().count() == 10 && t.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["type"] == "audio"))
            }),
        },
        "tgcat question.wav | vadseg" => event_lines_with("speech-end"),
        "tgcat question.wav | vadseg | sttd --format jsonl | jq -r .type" => Expect::Terminal {
            what: "event types, transcript among them",
            check: Box::new(|t: &str| t.lines().any(|l| l == "transcript") && t.lines().any(|l| l == "speech-start")),
        },
        "tgcat question.wav | vadseg | sttd --format text > transcript.txt" => {
            let line = line.clone();
            Expect::File { file: "transcript.txt", what: "the question, one line", check: Box::new(move |b: &[u8]| b == line.as_bytes()) }
        }
        "tgcat --realtime question.wav | vadseg | sttd | framecat" => json_lines_with("transcript"),
        "tgcat question.wav | vadseg | framecat" => json_lines_with("speech-start"),
        "sttd < speech.frames | llm-relay" => Expect::Terminal { what: "the reply, one line", check: Box::new(|t: &str| t == format!("{ANSWER}\n")) },
        "ANTHROPIC_API_KEY=... llm-relay --model claude-haiku-4-5 < text.frames | framecat" => json_lines_with("reply-chunk"),
        "tts-writer --unpaced --output-format frames < reply.frames | framecat" => json_lines_with("reply-played"),
        "tts-writer --unpaced --output-format frames < reply.frames" => event_lines_with("reply-played"),
        "tts-writer --engine command --command 'espeak-ng --stdout -v en-gb' < lines.txt > out.raw" => Expect::File {
            file: "out.raw",
            what: "raw audio",
            check: Box::new(|b: &[u8]| b.len() > 48_000 && b.len() % 2 == 0),
        },
        e if PLAYERS.iter().any(|p| e.contains(p)) => Expect::Player,
        _ => return None,
    })
}

fn heard_now() -> String {
    final_transcripts(&frames_of(&std::fs::read(examples_dir().join("text.frames")).unwrap(), "text.frames")).remove(0)
}

/// The pipeline examples of the READMEs, each once, with where it is written.
fn examples(root: &Path) -> Vec<(String, String)> {
    let mut docs = vec![root.join("README.md")];
    let mut bins: Vec<_> = std::fs::read_dir(root.join("bins")).unwrap().map(|e| e.unwrap().path().join("README.md")).filter(|p| p.exists()).collect();
    bins.sort();
    docs.extend(bins);
    let mut out: Vec<(String, String)> = vec![];
    for doc in docs {
        let mut in_code = false;
        for (i, line) in std::fs::read_to_string(&doc).unwrap().lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            let cmd = line.split(" #").next().unwrap().trim();
            let words: Vec<&str> = cmd.split(|c: char| c.is_whitespace() || "|<>".contains(c)).collect();
            let example = in_code && cmd.contains(['|', '<', '>']) && !cmd.contains("$RUN") && PROGRAMS.iter().any(|p| words.contains(p));
            if example && !out.iter().any(|(e, _)| e == cmd) {
                out.push((cmd.to_string(), format!("{}:{}", doc.strip_prefix(root).unwrap().display(), i + 1)));
            }
        }
    }
    out
}

/// The example as run: the microphone is question.wav, a player is `wc -c`, Claude is the stand-in.
fn as_run(example: &str) -> String {
    let mut line = example.replace("sox -d ", "sox question.wav ").replace("ANTHROPIC_API_KEY=... ", "");
    if let Some(at) = PLAYERS.iter().filter_map(|p| line.find(p)).min() {
        line.truncate(at);
        line.push_str("| wc -c");
    }
    line
}

#[test]
fn every_readme_pipeline_example_prints_what_a_person_can_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = examples_dir();
    std::fs::write(dir.join("lines.txt"), "hello there\n").unwrap();
    let llm = standin_llm::StandInLlm::start(standin_llm::Replies::Cycle(vec![ANSWER.to_string()]));
    let base_url = llm.base_url();
    let heard = heard_now();
    let found = examples(root);
    assert!(found.len() >= 15, "only {} examples found: is the reading of the READMEs broken?", found.len());
    let mut failures = vec![];
    for (example, at) in &found {
        let Some(expect) = expect(example, &heard) else {
            failures.push(format!("{at}: `{example}`: an example this test does not know; add its check to expect()"));
            continue;
        };
        let line = as_run(example);
        for file in ["transcript.txt", "out.raw"] {
            let _ = std::fs::remove_file(dir.join(file));
        }
        let r = run(&line, dir, &[("TGVOICE_LLM_BASE_URL", &base_url)], Stdout::Terminal, Duration::from_secs(60));
        println!("{:5.1} s  {at}: {example}\n         {:?}", r.secs, r.text().chars().take(200).collect::<String>());
        let readable = std::str::from_utf8(&r.out).is_ok_and(|t| !t.contains("TGVF") && !t.chars().any(|c| c.is_control() && !"\n\r\t".contains(c)));
        let problem = match (&expect, r.code) {
            (_, code) if code != Some(0) => Some(format!("exited {code:?}")),
            _ if !readable => Some("printed binary to the terminal".to_string()),
            (Expect::Terminal { what, check }, _) => (!check(&r.text())).then(|| format!("printed {:?}, expected {what}", r.text())),
            (Expect::File { file, what, check }, _) => {
                let written = std::fs::read(dir.join(file)).unwrap_or_default();
                (!r.out.is_empty() || !check(&written)).then(|| format!("printed {:?} and wrote {} bytes to {file}, expected {what}", r.text(), written.len()))
            }
            (Expect::Player, _) => {
                let bytes: usize = r.text().trim().parse().unwrap_or(0);
                (bytes < 4_800 || bytes % 2 != 0).then(|| format!("gave its player {bytes} bytes, expected raw audio"))
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{at}: `{example}` (run as `{line}`): {p}\nstderr:\n{}", r.stderr));
        }
    }
    assert!(failures.is_empty(), "README examples that do not do what they say:\n{}", failures.join("\n\n"));
}

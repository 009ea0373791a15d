//! A terminal is a first-class reader (issue 29): a program that writes frames writes lines a
//! person reads when its output is a terminal, and the frame stream, unchanged, into a pipe, a
//! FIFO or a file; `--format` (and each stage's variable) says which instead. Every command
//! line here runs as a person's shell runs it, with stdout on a pseudo-terminal (tests/pty.rs)
//! or on a pipe. Needs scripts/setup (models, ONNX Runtime, the Piper voice) and the programs
//! built. No real-time audio and no LLM server (llm-relay talks to the loopback stand-in).

mod common;
mod pty;
mod standin_llm;

use pty::{examples_dir, final_transcripts, frames_of, run, Stdout, ANSWER};
use std::path::Path;
use std::time::Duration;
use tgvoice::testkit::bin_path;

const T: Duration = Duration::from_secs(60);

/// The one transcript sttd makes of the test question (from text.frames).
fn heard() -> String {
    let text = std::fs::read(examples_dir().join("text.frames")).unwrap();
    final_transcripts(&frames_of(&text, "text.frames")).remove(0)
}

#[test]
fn the_chain_on_a_terminal_prints_what_was_said_and_nothing_else() {
    let r = run("tgcat q.wav | vadseg | sttd", examples_dir(), &[], Stdout::Terminal, T);
    r.assert_ok();
    r.assert_readable();
    assert_eq!(r.text(), format!("{}\n", heard()), "sttd on a terminal prints each final transcript as one line");
    let lower = r.text().to_lowercase();
    assert!(lower.contains("capital") && lower.contains("france"), "not the question: {:?}", r.text());
    println!("{:.1} s: {:?}", r.secs, r.text());
}

#[test]
fn into_a_pipe_a_fifo_or_framecat_the_chain_writes_the_frame_stream() {
    let dir = examples_dir();
    // The chain into a FIFO given with -o while stdout is a terminal: the FIFO decides, the
    // terminal gets nothing, the FIFO the frame stream byte for byte (frames_of checks it).
    let fifo = tempfile::tempdir().unwrap();
    let link = fifo.path().join("text.frames");
    tgvoice::fifo::ensure_fifo(&link).unwrap();
    let reader = {
        let link = link.clone();
        std::thread::spawn(move || std::fs::read(link).unwrap())
    };
    let line = format!("tgcat q.wav | vadseg | sttd -o {}", link.display());
    let to_fifo = run(&line, dir, &[], Stdout::Terminal, T);
    to_fifo.assert_ok();
    assert!(to_fifo.out.is_empty(), "sttd -o FIFO wrote to its terminal stdout: {:?}", to_fifo.text());
    assert_eq!(final_transcripts(&frames_of(&reader.join().unwrap(), "sttd -o FIFO")), [heard()]);

    // Into a pipe to framecat on a terminal: the pipe carries exactly frames (kept by tee),
    // which framecat prints as JSON lines.
    let out = tempfile::tempdir().unwrap();
    let kept = out.path().join("sttd.out");
    let shown = run(&format!("sttd < speech.frames | tee {} | framecat --events-only", kept.display()), dir, &[], Stdout::Terminal, T);
    shown.assert_ok();
    shown.assert_readable();
    assert_eq!(final_transcripts(&frames_of(&std::fs::read(&kept).unwrap(), "sttd into a pipe")), [heard()]);
    let events: Vec<serde_json::Value> = shown.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().any(|e| e["type"] == "transcript" && e["text"] == heard().as_str()), "{}", shown.text());
}

#[test]
fn jsonl_parses_line_by_line_and_text_is_the_transcripts_alone() {
    let dir = examples_dir();
    let jsonl = run("sttd --format jsonl < speech.frames", dir, &[], Stdout::Pipe, T);
    jsonl.assert_ok();
    let lines: Vec<serde_json::Value> = jsonl
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a --format jsonl line is not JSON ({e}): {l:?}")))
        .collect();
    let frames = frames_of(&std::fs::read(dir.join("text.frames")).unwrap(), "text.frames");
    assert_eq!(lines.len(), frames.len(), "one line per frame:\n{}", jsonl.text());
    assert!(lines.iter().any(|l| l["type"] == "transcript" && l["text"] == heard().as_str() && l["final"] == true));
    assert!(lines.iter().any(|l| l["type"] == "speech-start"), "events are forwarded as their JSON");

    // The flag wins over the variable.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("transcript.txt");
    let text = run(&format!("sttd --format text < speech.frames > {}", file.display()), dir, &[("STTD_FORMAT", "jsonl")], Stdout::Terminal, T);
    text.assert_ok();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{}\n", heard()), "--format text is the transcripts alone");

    let bad_env = run("sttd < speech.frames", dir, &[("STTD_FORMAT", "binary")], Stdout::Pipe, T);
    assert_eq!(bad_env.code, Some(78), "a bad STTD_FORMAT is a configuration error\n{}", bad_env.stderr);
    assert!(bad_env.stderr.contains("STTD_FORMAT"), "{}", bad_env.stderr);
    let bad_flag = run("sttd --format binary < speech.frames", dir, &[], Stdout::Pipe, T);
    assert_eq!(bad_flag.code, Some(2), "{}", bad_flag.stderr);
}

#[test]
fn tts_writer_refuses_raw_audio_on_a_terminal_and_plays_into_a_pipe() {
    let dir = examples_dir();
    let refused = run("echo hello | tts-writer", dir, &[], Stdout::Terminal, T);
    assert_eq!(refused.code, Some(2), "raw audio to a terminal: exit 2 (usage)\n{}", refused.stderr);
    assert!(refused.out.is_empty(), "tts-writer wrote {} bytes to the terminal", refused.out.len());
    let lines: Vec<&str> = refused.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{}", refused.stderr);
    assert!(lines[0].contains("| ffplay -nodisp -autoexit -f s16le -ar 48000 -ac 1 -") && lines[0].contains("play -t raw"), "{}", lines[0]);
    assert!(refused.secs < 5.0, "the refusal comes before the voice is loaded: {:.1} s", refused.secs);

    // Into a pipe it writes raw audio as always: a player there would play it.
    let piped = run("echo hello | tts-writer --engine espeak-ng", dir, &[], Stdout::Pipe, T);
    piped.assert_ok();
    assert!(piped.out.len() > 48_000, "{} bytes of audio for \"hello\"", piped.out.len());
    assert_eq!(piped.out.len() % 2, 0);

    // framecat --pcm refuses too, naming the rate of the audio it was given (vadseg's 16 kHz).
    let framecat = run("framecat --pcm < speech.frames", dir, &[], Stdout::Terminal, T);
    assert_eq!(framecat.code, Some(2), "{}", framecat.stderr);
    assert!(framecat.out.is_empty() && framecat.stderr.contains("| ffplay -nodisp -autoexit -f s16le -ar 16000 -ac 1 -"), "{}", framecat.stderr);

    // --format is for the framed output only.
    let raw_format = run("echo hello | tts-writer --format text", dir, &[], Stdout::Pipe, T);
    assert_eq!(raw_format.code, Some(2), "{}", raw_format.stderr);
}

#[test]
fn tts_writer_frames_on_a_terminal_are_lines_per_event_and_second() {
    let r = run("tts-writer --engine espeak-ng --unpaced --output-format frames < reply.frames", examples_dir(), &[], Stdout::Terminal, T);
    r.assert_ok();
    r.assert_readable();
    let text = r.text();
    assert!(text.lines().any(|l| l.contains("  audio  ") && l.contains("48000 Hz")), "{text}");
    assert!(text.lines().any(|l| l.contains("  reply-played  turn 1") && l.contains(ANSWER)), "{text}");
    assert!(text.lines().count() < 20, "audio is summarised, a line a second:\n{text}");
}

#[test]
fn tgcat_and_vadseg_on_a_terminal_print_a_line_per_event_with_its_time() {
    let dir = examples_dir();
    let tgcat = run("tgcat q.wav", dir, &[], Stdout::Terminal, T);
    tgcat.assert_ok();
    tgcat.assert_readable();
    let lines: Vec<String> = tgcat.text().lines().map(String::from).collect();
    assert!(!lines.is_empty() && lines.len() <= 5, "3.5 s of audio: a line a second\n{}", tgcat.text());
    assert!(lines[0].contains("  audio  1.00 s at 48000 Hz"), "{}", lines[0]);
    assert!(lines.iter().all(|l| is_timed(l)), "every line starts with HH:MM:SS.mmm\n{}", tgcat.text());

    let vadseg = run("tgcat q.wav | vadseg", dir, &[], Stdout::Terminal, T);
    vadseg.assert_ok();
    vadseg.assert_readable();
    let text = vadseg.text();
    for event in ["speech-onset", "speech-start", "speech-end"] {
        assert!(text.lines().any(|l| is_timed(l) && l.contains(&format!("  {event}  turn "))), "no {event} line:\n{text}");
    }
    assert!(text.lines().any(|l| l.contains("  speech-end  turn ") && l.contains(" s of speech")), "{text}");
    assert!(text.lines().any(|l| l.contains("  audio  ") && l.contains("16000 Hz  turn ")), "{text}");
}

fn is_timed(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 14 && b[2] == b':' && b[5] == b':' && b[8] == b'.' && &line[12..14] == "  "
}

#[test]
fn llm_relay_on_a_terminal_streams_the_reply_text() {
    let llm = standin_llm::StandInLlm::start(standin_llm::Replies::Cycle(vec![ANSWER.to_string()]));
    let r = run("llm-relay < text.frames", examples_dir(), &[("TGVOICE_LLM_BASE_URL", &llm.base_url())], Stdout::Terminal, T);
    r.assert_ok();
    r.assert_readable();
    assert_eq!(r.text(), format!("{ANSWER}\n"), "stderr:\n{}", r.stderr);
}

/// Each stage's format variable is the one fifo-layout.md names and `scripts/voicecall` unsets,
/// so an exported `STTD_FORMAT=text` never reaches a link of an instance.
#[test]
fn voicecall_unsets_every_stage_format_variable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let voicecall = std::fs::read_to_string(root.join("scripts/voicecall")).unwrap();
    let unset = voicecall.lines().find(|l| l.starts_with("unset ") && l.contains("_FORMAT")).expect("voicecall unsets the format variables");
    let layout = std::fs::read_to_string(root.join("fifo-layout.md")).unwrap();
    for stage in ["tgcat", "vadseg", "sttd", "llm-relay", "tts-writer"] {
        let help = std::process::Command::new(bin_path(stage)).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        let var = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--format"))
            .find_map(|l| l.trim().strip_prefix("[env: ")?.split('=').next().map(String::from))
            .unwrap_or_else(|| panic!("{stage} --help shows no variable for --format"));
        assert!(unset.split_whitespace().any(|w| w == var), "scripts/voicecall does not unset {var} ({stage}): {unset}");
        assert!(layout.contains(&format!("`{var}`")), "fifo-layout.md does not name {var}");
    }
}

//! FULL CHAIN over the wire: `tgcat calls.wav | vadseg | sttd --engine openai|wyoming` against
//! the stand-in servers of bins/sttd/tests/standin_stt.py on 127.0.0.1 (an OpenAI-style server
//! that parses the multipart body and the WAV, a Wyoming service on the protocol's own
//! package). The recording is the four utterances of vadseg's test data with 1.5 s pauses;
//! every turn vadseg cuts must come out of sttd as exactly the text the stand-in answered for
//! it, in order, with the audio the stand-in checked (16 kHz mono 16-bit, not silence). The
//! speculative decode is off here so each turn is one request; its rules over the wire (a
//! superseded request dropped, a pause previewed) and the failures are bins/sttd/tests/wire.rs.
//! Needs tgcat, vadseg and sttd built and the venv's wyoming package (scripts/setup).

mod common;
#[path = "../bins/sttd/tests/common/standin.rs"]
mod standin;

use common::*;
use standin::StandIn;
use std::time::Duration;
use tgvoice::event::kind;

const TEXTS: [&str; 4] = ["Is the capital of France Paris?", "We are four people.", "A table for four, um, at eight.", "A table for two, please."];

/// vadseg's test utterances, one after the other with 1.5 s of silence around each.
fn recording(dir: &std::path::Path) -> std::path::PathBuf {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bins/vadseg/tests/data");
    let gap = vec![0i16; RATE as usize * 3 / 2];
    let mut audio = gap.clone();
    for name in ["capital-of-france.wav", "four-people.wav", "table-for-um.wav", "table-for.wav"] {
        let (rate, samples) = tgvoice::resample::read_wav_mono(std::fs::File::open(data.join(name)).unwrap()).unwrap();
        assert_eq!(rate, RATE, "{name}");
        audio.extend(samples);
        audio.extend_from_slice(&gap);
    }
    let wav = dir.join("calls.wav");
    tgvoice::resample::write_wav_mono(&wav, RATE, &audio).unwrap();
    wav
}

fn through(protocol: &'static str, standin_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let wav = recording(dir.path());
    let texts = TEXTS.join("|");
    let mut args = vec!["--texts", &texts];
    args.extend_from_slice(standin_args);
    let mut server = StandIn::start(protocol, &args);
    let mut sttd_args = server.sttd_args();
    sttd_args.extend(["--speculate-after".into(), "0".into()]);
    let sttd_args: Vec<&str> = sttd_args.iter().map(String::as_str).collect();
    let chain = run_chain(&wav, &[], &[], &sttd_args, Duration::from_secs(60));
    let turns = chain.events.iter().filter(|e| e.is(kind::SPEECH_END)).count();
    let finals: Vec<&str> = chain
        .events
        .iter()
        .filter(|e| e.is(kind::TRANSCRIPT) && e.get_bool("final") == Some(true))
        .map(|e| e.text.as_deref().unwrap_or(""))
        .collect();
    let replies: Vec<String> = server.reports("reply").iter().map(|r| r["text"].as_str().unwrap().to_string()).collect();
    let requests = server.reports("request");
    println!("{protocol}: {turns} turns in {:.2} s; finals {finals:?}; requests {requests:?}", chain.secs);
    assert_eq!(turns, TEXTS.len(), "vadseg cuts one turn per utterance: {:?}", chain.events);
    assert_eq!(finals, replies, "sttd's final transcripts are the stand-in's answers, in order");
    assert_eq!(finals, TEXTS, "one request per turn");
    assert!(requests.iter().all(|r| r["samples"].as_u64().unwrap() >= RATE as u64 / 2 && r["language"] == "en"), "{requests:?}");
    assert!(server.reports("bad-request").is_empty(), "{:?}", server.seen);
    assert!(!chain.sttd_log.contains(" error: ") && !chain.sttd_log.contains(" warn: "), "{}", chain.sttd_log);
}

#[test]
fn a_call_through_sttd_engine_openai_gives_the_servers_transcripts() {
    through("openai", &[]);
}

/// As wyoming-faster-whisper does, the service closes the connection after each transcript.
#[test]
fn a_call_through_sttd_engine_wyoming_gives_the_services_transcripts() {
    through("wyoming", &["--close-after-transcript"]);
}

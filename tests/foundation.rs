//! Foundation tests: tgcat/framecat round trips, bad input, and the FIFO rules with real
//! processes killed by SIGKILL (fifo-layout.md §3).

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::fifo::{ensure_fifo, Endpoint, FifoWriter, WriteOutcome};
use tgvoice::frame::{encode, FrameDecoder};
use tgvoice::testkit::bin_path;
use tgvoice::{AudioFrame, Event, Frame};

/// These tests spawn processes and some measure latency: run them one at a time, so on a
/// 2-core machine one test's processes do not show up as another test's latency.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn tone(rate: u32, secs: f64, channels: u16) -> Vec<i16> {
    let n = (rate as f64 * secs) as usize;
    (0..n)
        .flat_map(|i| {
            let t = i as f64 / rate as f64;
            let l = ((t * 440.0 * std::f64::consts::TAU).sin() * 9000.0) as i16;
            let r = ((t * 660.0 * std::f64::consts::TAU).sin() * 9000.0) as i16;
            if channels == 2 { vec![l, r] } else { vec![l] }
        })
        .collect()
}

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let spec = hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

fn run_pipe(cmd: &str, args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(bin_path(cmd))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let code = out.status.code().unwrap_or(-1);
    (code, out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tgcat_pcm(wav: &Path) -> Vec<i16> {
    let out = Command::new(bin_path("tgcat")).arg(wav).stderr(Stdio::null()).output().unwrap();
    assert!(out.status.success());
    let (code, pcm, err) = run_pipe("framecat", &["--pcm"], &out.stdout);
    assert_eq!(code, 0, "{err}");
    pcm.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect()
}

#[test]
fn tgcat_framecat_round_trip_is_exact_for_48k_mono() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("a.wav");
    let samples = tone(48_000, 1.234, 1);
    write_wav(&wav, 48_000, 1, &samples);
    assert_eq!(tgcat_pcm(&wav), samples);
}

#[test]
fn tgcat_converts_16k_stereo_to_48k_mono_of_the_same_duration() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("b.wav");
    write_wav(&wav, 16_000, 2, &tone(16_000, 2.5, 2));
    let pcm = tgcat_pcm(&wav);
    let secs = pcm.len() as f64 / 48_000.0;
    assert!((secs - 2.5).abs() <= 0.020, "duration {secs} s");
    // The mix of 440 Hz and 660 Hz at half amplitude each: energy present, not clipped.
    let rms = (pcm.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
    assert!(rms > 3000.0 && rms < 7000.0, "rms {rms}");
}

#[test]
fn tgcat_frames_are_20ms_with_running_index_and_timestamps() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("c.wav");
    write_wav(&wav, 48_000, 1, &tone(48_000, 0.5, 1));
    let out = Command::new(bin_path("tgcat")).arg(&wav).stderr(Stdio::null()).output().unwrap();
    let mut d = FrameDecoder::new();
    d.push(&out.stdout);
    let mut frames = vec![];
    while let Some(f) = d.next() {
        match f.unwrap() {
            Frame::Audio(a) => frames.push(a),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(frames.len(), 25);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.samples.len(), 960);
        assert_eq!(f.sample_index, i as u64 * 960);
        assert_eq!(f.capture_us - frames[0].capture_us, i as u64 * 20_000);
    }
}

/// Each kind of bad input: exit 65 with one line, no panic/backtrace.
#[test]
fn framecat_rejects_non_frame_input_with_one_clear_line() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("d.wav");
    write_wav(&wav, 48_000, 1, &tone(48_000, 0.2, 1));
    let wav_bytes = std::fs::read(&wav).unwrap();
    let pcm: Vec<u8> = tone(48_000, 0.2, 1).iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut x: u64 = 99;
    let random: Vec<u8> = (0..10_000)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("wav", wav_bytes, "WAV"),
        ("pcm", pcm, "raw 16-bit PCM"),
        ("random", random, "random binary"),
        ("text", b"hello there\nthis is text\n".to_vec(), "text"),
    ];
    for (name, bytes, expect) in cases {
        let (code, out, err) = run_pipe("framecat", &[], &bytes);
        assert_eq!(code, 65, "{name}: {err}");
        assert!(out.is_empty(), "{name}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: {err}");
        assert!(lines[0].contains(expect) && lines[0].contains("not a tgvoice frame stream"), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}");
    }
}

fn event_frame(kind: &str, turn: u64) -> Vec<u8> {
    encode(&Frame::Event(Event::new(kind).with_turn(turn)))
}

fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = b"TGVF\x01".to_vec();
    b.push(kind);
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

/// Mid-stream bad frames are logged, skipped, and the good frames after them come through.
#[test]
fn bad_frames_mid_stream_are_skipped_and_reading_resumes() {
    let _serial = serial();
    let mut stream = event_frame("speech-start", 1);
    let mut oversize = b"TGVF\x01\x01\x00\x00".to_vec();
    oversize.extend_from_slice(&(2u32 << 30).to_le_bytes()); // claims 2 GiB
    stream.extend(&oversize);
    stream.extend(event_frame("a", 2));
    stream.extend(raw_frame(2, b"\xff\xfe\xfd not utf-8"));
    stream.extend(event_frame("b", 3));
    stream.extend(raw_frame(2, b"{\"type\": broken json"));
    stream.extend(event_frame("c", 4));
    stream.extend(b"some random text in the middle");
    stream.extend(event_frame("d", 5));
    let truncated = event_frame("never", 6);
    stream.extend(&truncated[..truncated.len() - 3]);
    let (code, out, err) = run_pipe("framecat", &["--events-only"], &stream);
    assert_eq!(code, 0, "{err}");
    let kinds: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["speech-start", "a", "b", "c", "d"]);
    for expect in ["over the 1048576-byte cap", "not UTF-8", "not a JSON event", "look like text", "ended inside a frame"] {
        assert!(err.contains(expect), "missing {expect:?} in:\n{err}");
    }
    assert!(!err.contains("panicked"));
}

fn mkfifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    ensure_fifo(&p).unwrap();
    p
}

fn kill9(child: &mut Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
}

/// A writer process that writes the given bytes to a FIFO then sleeps (until killed).
fn writer_process(fifo: &Path, bytes: &[u8]) -> Child {
    let dir = fifo.parent().unwrap();
    let data = dir.join(format!("data-{}", bytes.len()));
    std::fs::write(&data, bytes).unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(format!("cat '{}' > '{}' && exec sleep 30", data.display(), fifo.display()))
        .spawn()
        .unwrap()
}

/// Lines a reader prints, collected on a thread.
fn collect_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn recv_type(rx: &std::sync::mpsc::Receiver<String>) -> String {
    let line = rx.recv_timeout(Duration::from_secs(5)).expect("reader printed nothing within 5 s");
    serde_json::from_str::<serde_json::Value>(&line).unwrap()["type"].as_str().unwrap().to_string()
}

/// The writer is SIGKILLed mid-frame and restarted: the reader drops the partial frame and
/// continues with the new writer's frames.
#[test]
fn reader_survives_writer_killed_mid_frame() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let fifo = mkfifo(dir.path(), "text.frames");
    let mut reader = Command::new(bin_path("framecat"))
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = collect_lines(&mut reader);

    let mut first = event_frame("first", 1);
    let partial = event_frame("partial", 2);
    first.extend(&partial[..partial.len() / 2]);
    let mut w1 = writer_process(&fifo, &first);
    assert_eq!(recv_type(&lines), "first");
    std::thread::sleep(Duration::from_millis(100));
    kill9(&mut w1); // mid-frame: half of "partial" is in the pipe

    let mut second = event_frame("second", 3);
    second.extend(event_frame("third", 4));
    let mut w2 = writer_process(&fifo, &second);
    assert_eq!(recv_type(&lines), "second");
    assert_eq!(recv_type(&lines), "third");
    kill9(&mut w2);
    kill9(&mut reader);
    let mut err = String::new();
    reader.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("ended inside a frame"), "{err}");
    assert!(err.contains("went away"), "{err}");
}

/// The reader is SIGKILLed and restarted: the writer never blocks longer than one frame period
/// (20 ms), counts what it dropped, and delivers to the new reader.
#[test]
fn writer_never_blocks_on_dead_reader_and_delivers_to_new_one() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let fifo = mkfifo(dir.path(), "audio.frames");
    let spawn_reader = || {
        Command::new(bin_path("framecat")).arg(&fifo).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
    };
    let mut writer = FifoWriter::open(Endpoint::Path(fifo.clone())).unwrap();
    let frame = |i: u64| {
        encode(&Frame::Audio(AudioFrame {
            sample_rate: 48_000,
            channels: 1,
            turn: 0,
            capture_us: i,
            sample_index: i * 960,
            samples: vec![(i % 1000) as i16; 960],
        }))
    };
    let mut r1 = spawn_reader();
    let lines1 = collect_lines(&mut r1);
    let mut worst = Duration::ZERO;
    let mut outcomes = vec![];
    for i in 0..150u64 {
        if i == 50 {
            kill9(&mut r1);
        }
        if i == 100 {
            r1 = spawn_reader();
        }
        let t = Instant::now();
        outcomes.push(writer.write_chunk(&frame(i)));
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines2 = collect_lines(&mut r1);
    assert!(worst < Duration::from_millis(20), "a write blocked for {worst:?}");
    let first_reader: Vec<String> = lines1.try_iter().collect();
    assert!(first_reader.len() >= 40, "first reader got {} frames", first_reader.len());
    let dropped = outcomes.iter().filter(|o| **o == WriteOutcome::Dropped).count();
    assert!(dropped >= 40 && writer.total_dropped_chunks as usize == dropped, "dropped {dropped}");
    // The new reader receives the frames written after it connected.
    std::thread::sleep(Duration::from_millis(200));
    let got: Vec<serde_json::Value> = lines2.try_iter().map(|l| serde_json::from_str(&l).unwrap()).collect();
    assert!(got.len() >= 30, "new reader got only {} frames", got.len());
    assert_eq!(got.last().unwrap()["capture_us"], 149);
    kill9(&mut r1);
}

/// tgcat on a named FIFO survives its writer (the bridge) going away and coming back.
#[test]
fn tgcat_survives_raw_writer_restart() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let fifo = mkfifo(dir.path(), "tg_input.raw");
    let mut tgcat = Command::new(bin_path("tgcat"))
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = tgcat.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut d = FrameDecoder::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            d.push(&buf[..n]);
            while let Some(Ok(Frame::Audio(a))) = d.next() {
                let _ = tx.send(a);
            }
        }
    });
    let pcm = |secs: f64| -> Vec<u8> { tone(48_000, secs, 1).iter().flat_map(|s| s.to_le_bytes()).collect() };
    let mut w1 = writer_process(&fifo, &pcm(0.5));
    std::thread::sleep(Duration::from_millis(300));
    kill9(&mut w1);
    let mut w2 = writer_process(&fifo, &pcm(0.7));
    let mut got = 0usize;
    let mut last_index = None;
    while got < 48_000 * 12 / 10 {
        let a = rx.recv_timeout(Duration::from_secs(5)).expect("tgcat stopped emitting after the writer restarted");
        if let Some(prev) = last_index {
            assert!(a.sample_index > prev, "sample index went backwards");
        }
        last_index = Some(a.sample_index);
        got += a.samples.len();
    }
    assert_eq!(got, 48_000 * 12 / 10);
    kill9(&mut w2);
    kill9(&mut tgcat);
}

/// Everything a FIFO delivers while `stop` is unset, read non-blocking (as tgcat, or a
/// `voicecall tap` listener, would: the reader is there before the writer).
fn fifo_reader(path: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap();
        let (mut got, mut buf) = (vec![], vec![0u8; 65536]);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match f.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(5)), // no writer yet, or nothing new
            }
        }
        got
    })
}

/// Call control (fifo-layout.md "Call control"): callsim, as the line owner, says on its
/// `call-start` that it can end calls, and on a `hangup` on line.frames — written by tts-writer
/// after the goodbye's last sample — it ends the call once the goodbye has been read out of
/// tg_output.raw: `call-end {reason: "ended"}`, its script cut short.
#[test]
fn callsim_ends_the_call_on_the_assistants_hangup_after_the_goodbye_has_played() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    for name in ["tg_input.raw", "tg_output.raw", "control.frames", "line.frames"] {
        mkfifo(run, name);
    }
    let wav = run.join("caller.wav");
    write_wav(&wav, 48_000, 1, &tone(48_000, 0.5, 1));
    // control.frames as tgcat holds it: open for the whole call (read-write: never EOF).
    let (events_tx, events) = std::sync::mpsc::channel::<Event>();
    let control = std::fs::OpenOptions::new().read(true).write(true).open(run.join("control.frames")).unwrap();
    std::thread::spawn(move || {
        let (mut control, mut decoder, mut buf) = (control, FrameDecoder::new(), vec![0u8; 4096]);
        while let Ok(n) = control.read(&mut buf) {
            decoder.push(&buf[..n]);
            while let Some(Ok(Frame::Event(e))) = decoder.next() {
                if events_tx.send(e).is_err() {
                    return;
                }
            }
        }
    });
    let reply_wav = run.join("reply.wav");
    let t0 = Instant::now();
    let mut callsim = Command::new(bin_path("callsim"))
        .arg("--run-dir")
        .arg(run)
        .arg("--record-reply")
        .arg(&reply_wav)
        .args(["--lead-in", "0.2", "--reply-timeout", "20"])
        .args([&wav, &wav])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = events.recv_timeout(Duration::from_secs(10)).expect("a call-start");
    assert!(start.is("call-start"), "{start:?}");
    assert_eq!(start.extra.get("controls"), Some(&serde_json::json!(["end"])));

    // tts-writer's part: the goodbye (1 s), then the hangup once its last byte is in the pipe.
    let mut out = std::fs::OpenOptions::new().write(true).open(run.join("tg_output.raw")).unwrap();
    let goodbye: Vec<u8> = tone(48_000, 1.0, 1).iter().flat_map(|s| s.to_le_bytes()).collect();
    out.write_all(&goodbye).unwrap();
    let mut line = std::fs::OpenOptions::new().write(true).open(run.join("line.frames")).unwrap();
    line.write_all(&encode(&Frame::Event(Event::new("hangup").with_turn(1).with("reason", "assistant")))).unwrap();

    let end = events.recv_timeout(Duration::from_secs(10)).expect("a call-end");
    assert!(end.is("call-end"), "{end:?}");
    assert_eq!(end.get_str("reason"), Some("ended"));
    let done = callsim.wait_with_output().unwrap();
    assert!(done.status.success(), "callsim failed: {}", String::from_utf8_lossy(&done.stderr));
    assert!(t0.elapsed() < Duration::from_secs(10), "callsim took {:?}: the hangup did not end the call", t0.elapsed());
    let stdout = String::from_utf8_lossy(&done.stdout);
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["ended_by"], "assistant", "{stdout}");
    assert!(summary["answered"].as_u64() < Some(2), "the second turn was never said: {stdout}");
    // The whole goodbye was taken before the call ended.
    let (_, heard) = tgvoice::resample::read_wav_mono(std::fs::File::open(&reply_wav).unwrap()).unwrap();
    let voiced = heard.iter().filter(|s| **s != 0).count();
    assert!(voiced >= 47_000, "{voiced} samples of the 48000-sample goodbye were heard");
}

/// `voicecall tap tg_input` on a callsim call (issue 25): callsim writes tg_input.raw, so it
/// fills tg_input.tap too, while someone reads it — the caller's audio, sample for sample what
/// the link carried. (phone-bridge writes tg_input.raw with the same RawInputWriter.)
#[test]
fn callsim_fills_the_tg_input_tap() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let (raw, tap) = (mkfifo(run, "tg_input.raw"), mkfifo(run, "tg_input.tap"));
    mkfifo(run, "tg_output.raw");
    let wav = run.join("caller.wav");
    write_wav(&wav, 48_000, 1, &tone(48_000, 1.0, 1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (link_reader, tap_reader) = (fifo_reader(raw, stop.clone()), fifo_reader(tap, stop.clone()));
    let t0 = Instant::now();
    let out = Command::new(bin_path("callsim"))
        .arg("--run-dir")
        .arg(run)
        .args(["--no-call-events", "--lead-in", "0.8", "--reply-timeout", "1", "--reply-silence", "0.5"])
        .arg(&wav)
        .output()
        .unwrap();
    assert!(out.status.success(), "callsim failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(t0.elapsed() < Duration::from_secs(15), "callsim took {:?}", t0.elapsed());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = |b: Vec<u8>| -> Vec<i16> { b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect() };
    let (link, tapped) = (samples(link_reader.join().unwrap()), samples(tap_reader.join().unwrap()));
    // The caller's words without the silence around them (the two readers may attach a tick apart).
    let voiced = |v: &[i16]| -> Vec<i16> {
        let first = v.iter().position(|&s| s != 0).unwrap_or(0);
        let last = v.iter().rposition(|&s| s != 0).map_or(0, |i| i + 1);
        v[first..last.max(first)].to_vec()
    };
    let (link_voice, tap_voice) = (voiced(&link), voiced(&tapped));
    assert!(link_voice.len() >= 47_000, "tg_input.raw carried {} voiced samples, expected ~48000", link_voice.len());
    assert!(tap_voice.len() >= 47_000, "tg_input.tap carried {} voiced samples of the caller's 1 s tone ({} samples in all)", tap_voice.len(), tapped.len());
    assert!(tap_voice == link_voice, "tg_input.tap differs from what tg_input.raw carried");
}

//! Benchmark: per-hop latency through a FIFO link and the CPU cost of framing 48 kHz audio.
//!
//! `cargo bench -p tgvoice --bench fifo_hop` prints:
//! * hop latency: a FrameSink → named FIFO → FrameSource, 20 ms audio frames sent at real time
//!   for 10 s; latency = receive time − send time (median, p99, max, µs). Target p99 < 1 ms.
//! * framing cost: encode + decode of 48 kHz mono audio in 20 ms frames, CPU seconds per audio
//!   second, as % of one core. Target < 1 %.

use std::time::{Duration, Instant};
use tgvoice::fifo::ensure_fifo;
use tgvoice::frame::{encode_into, FrameDecoder};
use tgvoice::{AudioFrame, Endpoint, Frame, FrameSink, FrameSource, Input, TapFormat};

fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn frame(i: u64) -> Frame {
    Frame::Audio(AudioFrame {
        sample_rate: 48_000,
        channels: 1,
        turn: 0,
        capture_us: tgvoice::clock::now_us(),
        sample_index: i * 960,
        samples: (0..960).map(|k| ((k as i64 * 37 + i as i64) % 2000 - 1000) as i16).collect(),
    })
}

fn main() {
    let dir = std::env::temp_dir().join(format!("tgvoice-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("audio.frames");
    ensure_fifo(&link).unwrap();
    let source = FrameSource::open(Endpoint::Path(link.clone())).unwrap();
    let rx = source.spawn();
    let sink = FrameSink::open(Endpoint::Path(link.clone()), None, TapFormat::Pcm).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let frames = 500u64; // 10 s at real time
    let mut lat = Vec::with_capacity(frames as usize);
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    for i in 0..frames {
        let due = start + Duration::from_millis(20 * i);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        sink.send(frame(i));
        if let Ok(Input::Frame(Frame::Audio(a))) = rx.recv_timeout(Duration::from_secs(1)) {
            lat.push(tgvoice::clock::now_us() - a.capture_us);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu_link = cpu_seconds() - cpu0;
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!("fifo hop latency over {} frames (20 ms, 48 kHz): median {} µs, p99 {} µs, max {} µs", lat.len(), pct(50), pct(99), lat[lat.len() - 1]);
    println!("link process CPU while streaming at real time: {:.3} % of one core", cpu_link / wall * 100.0);

    // Framing cost: encode + decode 60 s of 48 kHz audio.
    let audio_secs = 60u64;
    let all: Vec<Frame> = (0..audio_secs * 50).map(frame).collect();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let mut d = FrameDecoder::new();
    let mut n = 0;
    for f in &all {
        buf.clear();
        encode_into(f, &mut buf).expect("bench frames are under the cap");
        d.push(&buf);
        while let Some(Ok(_)) = d.next() {
            n += 1;
        }
    }
    assert_eq!(n, all.len());
    let wall_framing = t0.elapsed().as_secs_f64();
    let share = (cpu_seconds() - cpu0) / audio_secs as f64 * 100.0;
    println!("framing cost (encode+decode) of {audio_secs} s of 48 kHz audio: {:.2} ms, {share:.4} % of one core", wall_framing * 1000.0);
    println!(
        "SUMMARY fifo_hop: p99 {} µs (target < 1000) {}; framing {share:.4} % of a core (target < 1 %) {}",
        pct(99),
        if pct(99) < 1000 { "PASS" } else { "MISS" },
        if share < 1.0 { "PASS" } else { "MISS" }
    );
    drop(sink);
    let _ = std::fs::remove_dir_all(&dir);
}

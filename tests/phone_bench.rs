//! Benchmark: voice-to-voice through phone-bridge (stand-in Twilio, 8 kHz μ-law) against the
//! same questions through callsim (straight into tg_input.raw), on the same machine and the
//! same shared LLM server; then k calls at once (k = 1..PHONE_BENCH_MAX_CALLS, default 3) and
//! the largest k whose voice-to-voice p90 stays under 2 s. Prints median, p90 and `uptime`.
//!
//!   cargo bench -p system-tests --bench phone          (PHONE_BENCH_ROUNDS=2 rounds per k)

#[path = "standin_twilio.rs"]
mod standin_twilio;

use standin_twilio::*;
use std::process::Command;
use std::time::Duration;
use tgvoice::testkit::bin_path;

const QUESTIONS: [&str; 3] = ["What is the capital of France?", "How many legs does a spider have?", "What color is the sky on a clear day?"];

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn uptime() -> String {
    Command::new("uptime").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn summary(name: &str, v: &[f64], asked: usize) {
    println!(
        "{name}: {} of {asked} answered, voice-to-voice median {:.0} ms, p90 {:.0} ms  [{}]",
        v.len(),
        percentile(v, 0.5),
        percentile(v, 0.9),
        uptime()
    );
}

/// The port scripts/voicecall gives an instance's local LLM server: 20000 + cksum(name) % 20000.
fn llm_port(instance: &str) -> u16 {
    let out = Command::new("sh").arg("-c").arg(format!("printf '%s' '{instance}' | cksum | cut -d' ' -f1")).output().unwrap();
    (20000 + String::from_utf8(out.stdout).unwrap().trim().parse::<u64>().unwrap() % 20000) as u16
}

async fn phone_turns(front: &PhoneFront, calls: usize, rounds: usize, questions: &[Vec<i16>]) -> Vec<f64> {
    let mut all = vec![];
    let base = front.base_url();
    let mut lines = vec![];
    for i in 0..calls {
        lines.push(PhoneCall::dial(&base, &format!("+1555000{:04}", 3000 + i)).await);
    }
    for c in &lines {
        if let Some(g) = c.voice_after(c.started, Duration::from_secs(10)).await {
            c.quiet_after(g, Duration::from_millis(600), Duration::from_secs(10)).await;
        }
    }
    for round in 0..rounds {
        let asks = lines.iter().enumerate().map(|(i, c)| {
            let q = &questions[(i + round) % questions.len()];
            async move {
                let (_, last) = c.say_all(q).await;
                let reply = c.voice_after(last, Duration::from_secs(60)).await;
                if reply.is_some() {
                    c.quiet_after(std::time::Instant::now(), Duration::from_millis(1500), Duration::from_secs(60)).await;
                }
                reply.map(|r| (r - last).as_secs_f64() * 1e3)
            }
        });
        all.extend(futures_util::future::join_all(asks).await.into_iter().flatten());
    }
    for c in lines {
        c.hang_up().await;
    }
    all
}

fn main() {
    let rounds: usize = std::env::var("PHONE_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let max_k: usize = std::env::var("PHONE_BENCH_MAX_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let questions: Vec<Vec<i16>> = QUESTIONS.iter().enumerate().map(|(i, q)| espeak_8k(dir.path(), &format!("q{i}"), q)).collect();
    let wavs: Vec<String> = QUESTIONS
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let p = dir.path().join(format!("w{i}.wav"));
            assert!(Command::new("espeak-ng").args(["-v", "en-us", "-s", "150", "-w"]).arg(&p).arg(q).status().unwrap().success());
            p.display().to_string()
        })
        .collect();

    let front = PhoneFront::start("phonebench", max_k, max_k);
    rt.block_on(front.wait_warm(max_k as u64, Duration::from_secs(300)));

    // 1. The bridge's own cost: the same questions, alternately through phone-bridge (one call)
    //    and through callsim on a plain instance sharing the LLM server, so that both see the
    //    same load (this machine is shared; the load average is printed with each summary).
    let n = QUESTIONS.len() * rounds;
    let plain = format!("{}-plain", front.instance);
    let llm = format!("http://127.0.0.1:{}/v1", llm_port(&front.instance));
    let plain_vc = |cmd: &str| {
        tgvoice::testkit::voicecall(&root(), &plain, front.state.path())
            .arg(cmd)
            .env("TGVOICE_LLM_BASE_URL", &llm)
            .env("TGVOICE_LLM_MODEL", "SmolLM2-135M-Instruct")
            .env("TGVOICE_PHONE_LINE", "1")
            .output()
            .unwrap()
    };
    let out = plain_vc("start");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_secs(8)); // models load
    let rd = Command::new(bin_path("tgvoice-rundir")).args(["--instance", &plain, "-q"]).env_remove("TGVOICE_RUN_DIR").output().unwrap();
    let run_dir = String::from_utf8(rd.stdout).unwrap().trim().to_string();
    let call = rt.block_on(async {
        let c = PhoneCall::dial(&front.base_url(), "+15550003999").await;
        if let Some(g) = c.voice_after(c.started, Duration::from_secs(10)).await {
            c.quiet_after(g, Duration::from_millis(600), Duration::from_secs(10)).await;
        }
        c
    });
    let (mut phone, mut direct) = (vec![], vec![]);
    for i in 0..n {
        let q = i % QUESTIONS.len();
        let v = rt.block_on(async {
            let (_, last) = call.say_all(&questions[q]).await;
            let reply = call.voice_after(last, Duration::from_secs(60)).await;
            call.quiet_after(std::time::Instant::now(), Duration::from_millis(1500), Duration::from_secs(60)).await;
            reply.map(|r| (r - last).as_secs_f64() * 1e3)
        });
        phone.extend(v);
        let cs = Command::new(bin_path("callsim")).args(["--run-dir", &run_dir, "--reply-timeout", "60", &wavs[q]]).output().unwrap();
        direct.extend(
            String::from_utf8_lossy(&cs.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["voice_to_voice_ms"].as_f64()),
        );
    }
    rt.block_on(call.hang_up());
    plain_vc("stop");
    summary("phone-bridge, 1 call", &phone, n);
    summary("callsim (no bridge), 1 call", &direct, n);
    println!(
        "bridge cost: median {:+.0} ms, p90 {:+.0} ms (phone-bridge − callsim; includes 8 kHz μ-law in both directions)",
        percentile(&phone, 0.5) - percentile(&direct, 0.5),
        percentile(&phone, 0.9) - percentile(&direct, 0.9)
    );

    // 2. k calls at once.
    let mut holds = 0;
    for k in 1..=max_k {
        rt.block_on(front.wait_warm(k as u64, Duration::from_secs(300)));
        let v = rt.block_on(phone_turns(&front, k, rounds, &questions));
        summary(&format!("{k} call(s) at once"), &v, k * rounds);
        if v.len() == k * rounds && percentile(&v, 0.9) < 2000.0 {
            holds = k;
        }
    }
    println!("summary: {holds} concurrent call(s) hold voice-to-voice p90 < 2 s on this machine  [{}]", uptime());
    front.stop();
}

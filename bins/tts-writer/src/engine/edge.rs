//! `--engine edge`: Microsoft Edge's online voices through the `edge-tts` program (PyPI
//! edge-tts 7.3.1; scripts/setup installs it into the project's venv). edge-tts sends the text
//! to Microsoft's speech service and writes MP3 (24 kHz mono; it has no raw output), which
//! ffmpeg decodes to s16le as it arrives: `edge-tts --voice V --text T --write-media - |
//! ffmpeg -f mp3 -i pipe:0 -f s16le -ac 1 -ar 24000 pipe:1`. The text leaves the machine.
//! A failure is one line: edge-tts's own last word (its exception), e.g. that the service's
//! host could not be reached.

use super::wire::{self, PcmStream};
use super::{Audio, SpeechEngine};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tgvoice::cli::{exit, fail};

/// The rate ffmpeg is asked for (Edge's own MP3 rate, so nothing is resampled twice).
const RATE: u32 = 24_000;

pub struct EdgeEngine {
    program: PathBuf,
    voice: String,
    timeout: Duration,
    label: String,
}

/// `edge-tts` from the project's venv ($TGVOICE_VENV, else <cache>/venv), else on PATH.
fn find_program() -> Option<PathBuf> {
    let venv = std::env::var_os("TGVOICE_VENV").map(PathBuf::from).unwrap_or_else(|| tgvoice::paths::cache_dir().join("venv"));
    let in_venv = venv.join("bin/edge-tts");
    if in_venv.is_file() {
        return Some(in_venv);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("edge-tts")).find(|p| p.is_file())
}

impl EdgeEngine {
    /// Find edge-tts and ffmpeg (exit 69 naming what to install when one is missing).
    pub fn new(voice: &str, timeout: Duration) -> Result<EdgeEngine> {
        let program = find_program().ok_or_else(|| {
            fail(exit::UNAVAILABLE, "edge-tts not found (in $TGVOICE_VENV/bin or on PATH); run `scripts/setup venv` (PyPI edge-tts==7.3.1) or `pip install edge-tts`")
        })?;
        let ffmpeg = Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !ffmpeg.map(|s| s.success()).unwrap_or(false) {
            return Err(fail(exit::UNAVAILABLE, "ffmpeg not found (it decodes edge-tts's MP3); run `scripts/setup apt` or apt-get install ffmpeg"));
        }
        let label = format!("edge-tts {voice}");
        Ok(EdgeEngine { program, voice: voice.to_string(), timeout, label })
    }
}

/// Reads a child's stderr to the end on a thread of its own (so a chatty child never blocks).
fn collect(stream: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = stream {
            let _ = r.read_to_string(&mut s);
        }
        s
    })
}

/// The last line of a program's complaint (a Python traceback ends with the exception), with
/// aiohttp's `ssl:<ssl.SSLContext object at 0x…>` left out.
fn last_line(stderr: &str) -> String {
    let mut line = stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no message").to_string();
    if let Some(a) = line.find(" ssl:<") {
        if let Some(b) = line[a..].find('>') {
            line.replace_range(a..a + b + 1, "");
        }
    }
    line.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_line_of_a_traceback_is_the_cause() {
        let err = "Traceback (most recent call last):\n  File \"x\", line 1\naiohttp.client_exceptions.ClientConnectorDNSError: Cannot connect to host speech.platform.bing.com:443 ssl:<ssl.SSLContext object at 0x7f26eaea3ec0> [Name or service not known]\n\n";
        assert_eq!(
            super::last_line(err),
            "aiohttp.client_exceptions.ClientConnectorDNSError: Cannot connect to host speech.platform.bing.com:443 [Name or service not known]"
        );
    }
}

struct Running {
    edge: Child,
    ffmpeg: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Both are ours (spawned here); a finished one ignores the kill.
        for c in [&mut self.edge, &mut self.ffmpeg] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl SpeechEngine for EdgeEngine {
    fn name(&self) -> &str {
        &self.label
    }

    fn synthesize(&mut self, text: &str, emit: &mut dyn FnMut(Audio) -> bool) -> Result<()> {
        let mut edge = Command::new(&self.program)
            // `--text=…`: a reply starting with "-" is not taken for an option
            .args(["--voice", &self.voice, "--write-media", "-", &format!("--text={text}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.program.display()))?;
        let mp3 = edge.stdout.take().expect("piped");
        let ffmpeg = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "mp3", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", &RATE.to_string(), "pipe:1"])
            .stdin(Stdio::from(mp3))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut ffmpeg = match ffmpeg {
            Ok(f) => f,
            Err(e) => {
                let _ = edge.kill();
                let _ = edge.wait();
                bail!("cannot run ffmpeg: {e}");
            }
        };
        let edge_err = collect(edge.stderr.take());
        let ffmpeg_err = collect(ffmpeg.stderr.take());
        let mut out = ffmpeg.stdout.take().expect("piped");
        let mut run = Running { edge, ffmpeg };
        let mut pcm = PcmStream::new(RATE, 2, 1)?;
        let mut buf = [0u8; 8192];
        let mut last = Instant::now();
        loop {
            let mut pfd = libc::pollfd { fd: out.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ready = unsafe { libc::poll(&mut pfd, 1, wire::POLL.as_millis() as i32) };
            if ready <= 0 {
                if !wire::still_wanted(emit) {
                    return Ok(()); // `run` kills both
                }
                if last.elapsed() >= self.timeout {
                    bail!("edge-tts sent no audio for {} ms (--tts-timeout)", self.timeout.as_millis());
                }
                continue;
            }
            let n = out.read(&mut buf).context("reading ffmpeg's output")?;
            if n == 0 {
                break;
            }
            last = Instant::now();
            if !pcm.push(&buf[..n], emit) {
                return Ok(());
            }
        }
        pcm.flush(emit); // what came is played, whatever follows
        let edge_status = run.edge.wait()?;
        let ffmpeg_status = run.ffmpeg.wait()?;
        if !edge_status.success() {
            bail!("edge-tts failed ({edge_status}): {}", last_line(&edge_err.join().unwrap_or_default()));
        }
        if !ffmpeg_status.success() {
            bail!("ffmpeg could not decode edge-tts's MP3 ({ffmpeg_status}): {}", last_line(&ffmpeg_err.join().unwrap_or_default()));
        }
        if pcm.emitted == 0 {
            bail!("edge-tts gave no audio");
        }
        Ok(())
    }
}

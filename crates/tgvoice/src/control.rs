//! Call control (fifo-layout.md "Call control"): the numbers a call may be transferred to, as
//! llm-relay (`--transfer-to`), phone-bridge (`--transfer-to`) and `scripts/voicecall`
//! (`TGVOICE_TRANSFER_TO`) take them: `NAME=NUMBER`, NUMBER in E.164.

/// The `hangup` and `transfer` events (llm-relay → tts-writer → the line owner).
pub const HANGUP: &str = "hangup";
pub const TRANSFER: &str = "transfer";

/// One entry of `--transfer-to NAME=NUMBER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub number: String,
}

/// Parse `NAME=NUMBER` (NUMBER in E.164: `+` and 7–15 digits).
pub fn parse_target(s: &str) -> Result<Target, String> {
    let Some((name, number)) = s.split_once('=') else {
        return Err(format!("--transfer-to {s:?}: expected NAME=NUMBER, e.g. sales=+15551230000"));
    };
    let (name, number) = (name.trim(), number.trim());
    let digits = number.strip_prefix('+').unwrap_or("");
    if name.is_empty() || !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("--transfer-to {s:?}: expected NAME=NUMBER with a name and an E.164 number (+ and 7-15 digits)"));
    }
    Ok(Target { name: name.to_string(), number: number.to_string() })
}

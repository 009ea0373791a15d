//! The TwiML answers to Twilio's voice webhook.

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

const HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Connect the call to our WebSocket. Twilio allows no query string in the stream URL, so the
/// caller's number travels as a `<Parameter>` (it arrives in `start.customParameters`).
pub fn connect_stream(stream_url: &str, params: &[(&str, &str)]) -> String {
    let mut x = format!("{HEAD}<Response><Connect><Stream url=\"{}\">", xml_escape(stream_url));
    for (name, value) in params {
        x.push_str(&format!("<Parameter name=\"{}\" value=\"{}\"/>", xml_escape(name), xml_escape(value)));
    }
    x.push_str("</Stream></Connect></Response>");
    x
}

/// Every line is busy: say so politely and hang up.
pub fn say_and_hang_up(message: &str) -> String {
    format!("{HEAD}<Response><Say>{}</Say><Hangup/></Response>", xml_escape(message))
}

/// Call control `transfer` (fifo-layout.md "Call control"): the live call goes to `number`.
/// The assistant has already said the notice, so `say` is for a line that has not (None: no
/// `<Say>`).
pub fn dial(number: &str, say: Option<&str>) -> String {
    let say = say.map(|s| format!("<Say>{}</Say>", xml_escape(s))).unwrap_or_default();
    format!("{HEAD}<Response>{say}<Dial>{}</Dial></Response>", xml_escape(number))
}

/// A caller we do not take (allowlist/denylist).
pub fn reject() -> String {
    format!("{HEAD}<Response><Reject reason=\"rejected\"/></Response>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let x = connect_stream("wss://h.example/stream", &[("from", "+1555\"<&>")]);
        assert!(x.contains(r#"<Stream url="wss://h.example/stream"><Parameter name="from" value="+1555&quot;&lt;&amp;&gt;"/>"#), "{x}");
        assert!(say_and_hang_up("a < b").contains("<Say>a &lt; b</Say><Hangup/>"));
        assert!(dial("+15551230000", None).ends_with("<Response><Dial>+15551230000</Dial></Response>"));
        assert!(dial("+1<5", Some("Hold on & wait")).contains("<Say>Hold on &amp; wait</Say><Dial>+1&lt;5</Dial>"));
    }
}

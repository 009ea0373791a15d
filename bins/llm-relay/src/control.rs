//! Call control as built-in tools (README.md "Call control", fifo-layout.md "Call control").
//!
//! `end_call` and `transfer_call` are offered next to the MCP tools when the line says it can
//! do them (`controls` on `call-start`). A successful call gives the model a result telling it
//! what to say, and an [`Action`]: the relay writes its event after the reply's `reply-end`.

use crate::provider::{ToolCall, ToolDef, ToolResult};
use serde_json::{json, Value};
use tgvoice::Event;

pub const END_CALL: &str = "end_call";
pub const TRANSFER_CALL: &str = "transfer_call";
pub use tgvoice::control::{HANGUP, TRANSFER};

/// What the line owner can do, from `call-start`'s `controls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controls {
    pub end: bool,
    pub transfer: bool,
}

impl Controls {
    /// The controls a `call-start` declares (unknown names are ignored, a bad field is none).
    pub fn of_call_start(e: &Event) -> Controls {
        let mut c = Controls::default();
        let Some(list) = e.extra.get("controls").and_then(Value::as_array) else {
            return c;
        };
        for v in list {
            match v.as_str() {
                Some("end") => c.end = true,
                Some("transfer") => c.transfer = true,
                _ => {}
            }
        }
        c
    }
}

pub use tgvoice::control::{parse_target, Target};

/// What the line owner is to do after the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Hangup,
    Transfer(Target),
}

impl Action {
    /// The event written after the reply of `turn` ended (fifo-layout.md `hangup`, `transfer`).
    pub fn event(&self, turn: u64) -> Event {
        match self {
            Action::Hangup => Event::new(HANGUP)
                .with_turn(turn)
                .with("reason", "assistant"),
            Action::Transfer(t) => Event::new(TRANSFER)
                .with_turn(turn)
                .with("to", t.number.as_str())
                .with("name", t.name.as_str()),
        }
    }
}

/// The built-in tools on offer for a line with `controls`.
pub fn defs(controls: Controls, targets: &[Target]) -> Vec<ToolDef> {
    let mut out = vec![];
    if controls.end {
        out.push(ToolDef {
            name: END_CALL.into(),
            description:
                "End the phone call. Use it when the caller says goodbye or asks to hang up; \
                          after it, say one short goodbye."
                    .into(),
            schema: json!({"type": "object", "properties": {}}),
        });
    }
    if controls.transfer && !targets.is_empty() {
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        out.push(ToolDef {
            name: TRANSFER_CALL.into(),
            description: format!(
                "Transfer the caller to another line. Only these are possible: {}. After it, tell the caller \
                 in one short sentence that you are putting them through.",
                names.join(", ")
            ),
            schema: json!({"type": "object", "properties": {"to": {"type": "string", "enum": names,
                "description": "who to transfer to"}}, "required": ["to"]}),
        });
    }
    out
}

/// Run `call` if it is a built-in tool on offer (None: not ours). Never fails: a refusal is an
/// error result (one log line) and no action.
pub fn call(
    call: &ToolCall,
    controls: Controls,
    targets: &[Target],
) -> Option<(ToolResult, Option<Action>)> {
    let offered = defs(controls, targets);
    if !offered.iter().any(|d| d.name == call.name) {
        return None;
    }
    let result = |content: String, is_error: bool| ToolResult {
        id: call.id.clone(),
        content,
        is_error,
    };
    if call.name == END_CALL {
        log::info!("tool {END_CALL:?}: the call ends after this reply");
        return Some((
            result("The call will end right after this answer. Say one short goodbye now, nothing else.".into(), false),
            Some(Action::Hangup),
        ));
    }
    let to = call
        .input
        .get("to")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    let found = targets
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(to) || t.number == to);
    let Some(target) = found else {
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        log::warn!("tool {TRANSFER_CALL:?}: {to:?} is not on the --transfer-to list; refused, told the LLM");
        return Some((
            result(
                format!(
                    "Not transferred: {to:?} is not a possible destination. The only ones are: {}.",
                    names.join(", ")
                ),
                true,
            ),
            None,
        ));
    };
    log::info!(
        "tool {TRANSFER_CALL:?}: the caller goes to {:?} after this reply",
        target.name
    );
    Some((
        result(
            format!("The caller will be transferred to {} right after this answer. Tell them so in one short sentence now.", target.name),
            false,
        ),
        Some(Action::Transfer(target.clone())),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<Target> {
        vec![
            parse_target("sales=+15551230000").unwrap(),
            parse_target("Front desk = +442071234567").unwrap(),
        ]
    }

    fn tool(name: &str, input: Value) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            input,
        }
    }

    const BOTH: Controls = Controls {
        end: true,
        transfer: true,
    };

    #[test]
    fn call_start_controls_are_read_and_unknown_ones_ignored() {
        let e =
            Event::new(tgvoice::event::kind::CALL_START).with("controls", json!(["end", "fly", 3]));
        assert_eq!(
            Controls::of_call_start(&e),
            Controls {
                end: true,
                transfer: false
            }
        );
        let e = Event::new(tgvoice::event::kind::CALL_START).with("controls", "end");
        assert_eq!(Controls::of_call_start(&e), Controls::default());
        assert_eq!(
            Controls::of_call_start(&Event::new(tgvoice::event::kind::CALL_START)),
            Controls::default()
        );
    }

    #[test]
    fn transfer_targets_must_be_name_equals_e164() {
        assert_eq!(
            targets()[1],
            Target {
                name: "Front desk".into(),
                number: "+442071234567".into()
            }
        );
        for bad in [
            "sales",
            "=+15551230000",
            "sales=15551230000",
            "sales=+1555",
            "sales=+1555123000a",
            "x=+1234567890123456",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tools_are_offered_only_as_the_line_allows() {
        let names = |c, t: &[Target]| defs(c, t).into_iter().map(|d| d.name).collect::<Vec<_>>();
        assert!(names(Controls::default(), &targets()).is_empty());
        assert_eq!(
            names(
                Controls {
                    end: true,
                    transfer: false
                },
                &targets()
            ),
            [END_CALL]
        );
        assert_eq!(names(BOTH, &[]), [END_CALL]);
        assert_eq!(names(BOTH, &targets()), [END_CALL, TRANSFER_CALL]);
        assert_eq!(
            defs(BOTH, &targets())[1].schema["properties"]["to"]["enum"],
            json!(["sales", "Front desk"])
        );
        // Not on offer: not ours (the MCP toolbox answers it).
        assert!(call(&tool(END_CALL, json!({})), Controls::default(), &targets()).is_none());
        assert!(call(&tool("get_current_time", json!({})), BOTH, &targets()).is_none());
    }

    #[test]
    fn end_call_gives_a_hangup_and_asks_for_a_goodbye() {
        let (r, a) = call(&tool(END_CALL, json!({})), BOTH, &targets()).unwrap();
        assert!(!r.is_error && r.content.contains("goodbye"), "{r:?}");
        assert_eq!(a, Some(Action::Hangup));
        let e = Action::Hangup.event(7);
        assert_eq!(
            (e.kind.as_str(), e.turn, e.get_str("reason")),
            (HANGUP, Some(7), Some("assistant"))
        );
    }

    #[test]
    fn transfer_goes_only_to_a_listed_name_or_number() {
        for to in ["sales", "SALES", "+15551230000"] {
            let (r, a) = call(&tool(TRANSFER_CALL, json!({"to": to})), BOTH, &targets()).unwrap();
            assert!(!r.is_error, "{to}: {r:?}");
            let e = a.unwrap().event(3);
            assert_eq!(
                (e.get_str("to"), e.get_str("name")),
                (Some("+15551230000"), Some("sales"))
            );
        }
        for input in [
            json!({"to": "+15559999999"}),
            json!({"to": "police"}),
            json!({}),
        ] {
            let (r, a) = call(&tool(TRANSFER_CALL, input.clone()), BOTH, &targets()).unwrap();
            assert!(
                r.is_error && r.content.contains("sales, Front desk"),
                "{input}: {r:?}"
            );
            assert_eq!(a, None, "{input}");
        }
    }
}

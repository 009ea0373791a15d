//! The conversation, kept on disk so a restarted `llm-relay` continues it.
//!
//! Layout under the state directory:
//!
//! ```text
//! <state>/current-conversation         id of the conversation in progress (one line)
//! <state>/conversations/<id>.jsonl     one message per line:
//!     {"role":"user","text":"…","turn":3,"t":1700000000000000}
//!     {"role":"assistant","text":"…","turn":3,"t":…,"interrupted":true}
//!     {"role":"assistant","text":"","turn":4,"t":…,"calls":[{"id":"…","name":"get_current_time","input":{…}}]}
//!     {"role":"user","text":"","turn":4,"t":…,"results":[{"id":"…","content":"…","is_error":true}]}
//! ```
//!
//! A tool exchange is two lines: the assistant's calls, then a user message with their
//! results (the Claude Messages shape; provider.rs turns it into `tool` messages for
//! OpenAI-compatible servers, or into plain text when no tools are declared).
//!
//! A `call-start` begins a new conversation (new file, `current` updated); the files are
//! append-only, so they double as a transcript log. What is *sent* to the model is trimmed to a
//! budget of messages and approximate tokens (≈ 4 characters per token), always starting with a
//! user message. The window's start only moves forward, and when it must move it jumps to
//! where the rest fits *half* the budget: consecutive requests then share a long identical
//! prefix, which a local server (llama.cpp) reuses from its cache instead of re-evaluating the
//! whole history every turn (a sliding window cost 2.5–3 s per turn on 2 cores). Messages
//! are otherwise sent as and alternating roles (consecutive same-role messages are merged). An
//! interrupted assistant message holds only what was handed to TTS and is sent with
//! " [interrupted]" appended, so the model knows the caller cut it off.

use crate::provider::{ChatMessage, Role, ToolCall, ToolResult};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

pub const INTERRUPTED_MARK: &str = "[interrupted]";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub role: Role,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u64>,
    #[serde(default)]
    pub t: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    /// Tool calls made in this (assistant) message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<ToolCall>,
    /// Results of the calls of the message before (a user message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ToolResult>,
}

/// How much history goes into a request.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_messages: usize,
    pub max_tokens: usize,
}

pub struct Conversation {
    dir: PathBuf,
    id: String,
    entries: Vec<Entry>,
    /// `None` when the state directory could not take a new conversation (disk full): the
    /// call goes on from memory.
    file: Option<File>,
    save_errors: tgvoice::log::LogLimit,
    /// First entry of the window sent to the model (only moves forward; see the module doc).
    window_start: std::cell::Cell<usize>,
}

impl Conversation {
    /// Continue the conversation recorded in `dir`, or start one.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir.join("conversations"))
            .with_context(|| format!("cannot create the state directory {}; set --state-dir", dir.display()))?;
        let current = fs::read_to_string(dir.join("current-conversation")).ok().map(|s| s.trim().to_string());
        match current.filter(|id| !id.is_empty() && Self::path_of(dir, id).exists()) {
            Some(id) => Self::load(dir, id),
            None => Self::create(dir, None),
        }
    }

    /// Start a new conversation (a new call), named after the call id if given.
    pub fn start_new(&mut self, call: Option<&str>) -> Result<()> {
        match Self::create(&self.dir, call) {
            Ok(c) => *self = c,
            Err(e) => {
                log::warn!("cannot start a new conversation file ({e:#}); this call is kept in memory only");
                self.entries.clear();
                self.window_start.set(0);
                self.file = None;
            }
        }
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> PathBuf {
        Self::path_of(&self.dir, &self.id)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Record a message. Saving it is best effort: a full disk or an unwritable state
    /// directory is logged (a few lines, not one per turn) and the call goes on from memory,
    /// since the caller is better served by an answer than by a stage that exits.
    pub fn append(&mut self, role: Role, text: &str, turn: Option<u64>, interrupted: bool) -> Result<()> {
        let entry = Entry { role, text: text.to_string(), turn, t: tgvoice::clock::now_us(), interrupted, calls: vec![], results: vec![] };
        self.push(entry)
    }

    /// Record a tool exchange of `turn`: the assistant's calls, then their results (a user
    /// message). Saved like [`Self::append`].
    pub fn append_tools(&mut self, calls: Vec<ToolCall>, results: Vec<ToolResult>, turn: Option<u64>) -> Result<()> {
        let t = tgvoice::clock::now_us();
        self.push(Entry { role: Role::Assistant, text: String::new(), turn, t, interrupted: false, calls, results: vec![] })?;
        self.push(Entry { role: Role::User, text: String::new(), turn, t, interrupted: false, calls: vec![], results })
    }

    fn push(&mut self, entry: Entry) -> Result<()> {
        let mut line = serde_json::to_string(&entry)?;
        line.push('\n');
        self.entries.push(entry);
        if let Some(file) = self.file.as_mut() {
            if let Err(e) = file.write_all(line.as_bytes()) {
                let path = Self::path_of(&self.dir, &self.id);
                self.save_errors.log(log::Level::Warn, "cannot save", format_args!(
                    "cannot append to {} ({e}); the conversation goes on from memory", path.display()
                ));
            }
        }
        Ok(())
    }

    /// Replace the last message, a user message whose reply was never heard, with `text` (the
    /// caller went on speaking: both parts are one message). The file is rewritten atomically
    /// (temporary file + rename), so a crash leaves the old or the new version, never half.
    /// Falls back to appending when the last message is not the user's.
    pub fn replace_last_user(&mut self, text: &str, turn: Option<u64>) -> Result<()> {
        if self.entries.last().is_none_or(|e| e.role != Role::User || !e.results.is_empty()) {
            return self.append(Role::User, text, turn, false);
        }
        let last = self.entries.last_mut().unwrap();
        last.text = text.to_string();
        last.turn = turn.or(last.turn);
        // Best effort, as in `append`: the call goes on from memory if the disk is full.
        if let Err(e) = self.rewrite() {
            self.save_errors.log(log::Level::Warn, "cannot save", format_args!(
                "{e:#}; the conversation goes on from memory"
            ));
        }
        Ok(())
    }

    /// The interrupted reply of `turn` was heard only up to `text` (tts-writer's `reply-played`):
    /// the last assistant message, if it is that reply, keeps what was heard. Rewritten like
    /// [`Self::replace_last_user`].
    pub fn heard_only(&mut self, turn: u64, text: &str) -> Result<()> {
        let Some(last) = self.entries.iter_mut().rev().find(|e| e.role == Role::Assistant) else { return Ok(()) };
        if last.turn != Some(turn) || !last.interrupted || text.is_empty() || last.text == text {
            return Ok(());
        }
        log::info!("turn {turn}: the caller heard {text:?} of the reply before they cut it off");
        last.text = text.to_string();
        if let Err(e) = self.rewrite() {
            self.save_errors.log(log::Level::Warn, "cannot save", format_args!("{e:#}; the conversation goes on from memory"));
        }
        Ok(())
    }

    fn rewrite(&mut self) -> Result<()> {
        let path = self.path();
        let tmp = path.with_extension("jsonl.tmp");
        let mut body = String::new();
        for e in &self.entries {
            body.push_str(&serde_json::to_string(e)?);
            body.push('\n');
        }
        fs::write(&tmp, body).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
        let file = OpenOptions::new().append(true).open(&path).with_context(|| format!("cannot reopen {}", path.display()))?;
        self.file = Some(file);
        Ok(())
    }

    /// The messages to send, newest last, trimmed to `budget` in jumps (see the module doc).
    pub fn messages(&self, budget: Budget) -> Vec<ChatMessage> {
        let (messages, start) = Self::window(&self.entries, self.window_start.get(), budget);
        self.window_start.set(start);
        messages
    }

    /// The messages [`messages`](Self::messages) would give once the caller's `text` is
    /// recorded: appended, or (`merge`) replacing the last user message. Nothing changes: this
    /// is what a reply started early (a preview) is asked, and it stands only if the real
    /// request turns out the same.
    pub fn messages_if_user_said(&self, text: &str, merge: bool, budget: Budget) -> Vec<ChatMessage> {
        let mut entries = self.entries.clone();
        let entry = Entry { role: Role::User, text: text.to_string(), turn: None, t: 0, interrupted: false, calls: vec![], results: vec![] };
        match entries.last_mut() {
            Some(last) if merge && last.role == Role::User && last.results.is_empty() => *last = entry,
            _ => entries.push(entry),
        }
        Self::window(&entries, self.window_start.get(), budget).0
    }

    /// The window of `entries` to send from `start` on, and where the window starts now.
    fn window(entries: &[Entry], start: usize, budget: Budget) -> (Vec<ChatMessage>, usize) {
        let msgs: Vec<ChatMessage> = entries
            .iter()
            .map(|e| {
                let text = if e.interrupted && e.role == Role::Assistant {
                    format!("{} {INTERRUPTED_MARK}", e.text).trim().to_string()
                } else {
                    e.text.trim().to_string()
                };
                ChatMessage { role: e.role, text, calls: e.calls.clone(), results: e.results.clone() }
            })
            .collect();
        let empty = |m: &ChatMessage| m.text.is_empty() && m.calls.is_empty() && m.results.is_empty();
        let size = |m: &ChatMessage| {
            m.text.len()
                + m.calls.iter().map(|c| c.name.len() + c.input.to_string().len()).sum::<usize>()
                + m.results.iter().map(|r| r.content.len()).sum::<usize>()
        };
        let fits = |from: usize, max_messages: usize, max_chars: usize| {
            let kept: Vec<&ChatMessage> = msgs[from..].iter().filter(|m| !empty(m)).collect();
            kept.len() <= max_messages && kept.iter().map(|m| size(m)).sum::<usize>() <= max_chars
        };
        let mut start = start.min(msgs.len());
        if !fits(start, budget.max_messages, budget.max_tokens * 4) {
            // Over budget: jump to where the rest fits half of it (always keeping the newest).
            let (half_messages, half_chars) = ((budget.max_messages / 2).max(1), budget.max_tokens * 4 / 2);
            while start + 1 < msgs.len() && !fits(start, half_messages, half_chars) {
                start += 1;
            }
        }
        let mut picked: Vec<ChatMessage> = msgs[start..].iter().filter(|m| !empty(m)).cloned().collect();
        // Start with the caller's words: not an answer, nor the results of calls cut off.
        while picked.first().is_some_and(|m| m.role != Role::User || !m.results.is_empty()) {
            picked.remove(0);
        }
        let mut merged: Vec<ChatMessage> = vec![];
        for m in picked {
            match merged.last_mut() {
                Some(last) if last.role == m.role => {
                    if !m.text.is_empty() {
                        if !last.text.is_empty() {
                            last.text.push('\n');
                        }
                        last.text.push_str(&m.text);
                    }
                    last.calls.extend(m.calls);
                    last.results.extend(m.results);
                }
                _ => merged.push(m),
            }
        }
        (merged, start)
    }

    fn path_of(dir: &Path, id: &str) -> PathBuf {
        dir.join("conversations").join(format!("{id}.jsonl"))
    }

    fn create(dir: &Path, call: Option<&str>) -> Result<Self> {
        let stamp = tgvoice::clock::now_us();
        let safe_call: String = call
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(40)
            .collect();
        let id = if safe_call.is_empty() { format!("conv-{stamp}") } else { format!("call-{safe_call}-{stamp}") };
        let path = Self::path_of(dir, &id);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let tmp = dir.join("current.tmp");
        fs::write(&tmp, format!("{id}\n")).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, dir.join("current-conversation"))?;
        Ok(Conversation {
            dir: dir.to_path_buf(),
            id,
            entries: vec![],
            file: Some(file),
            save_errors: Default::default(),
            window_start: Default::default(),
        })
    }

    fn load(dir: &Path, id: String) -> Result<Self> {
        let path = Self::path_of(dir, &id);
        let mut entries = vec![];
        let reader = BufReader::new(File::open(&path).with_context(|| format!("cannot read {}", path.display()))?);
        for (n, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Entry>(&line) {
                Ok(e) => entries.push(e),
                Err(e) => log::warn!("{}:{}: skipping a line that is not a message ({e})", path.display(), n + 1),
            }
        }
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Conversation {
            dir: dir.to_path_buf(),
            id,
            entries,
            file: Some(file),
            save_errors: Default::default(),
            window_start: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_new_call_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::open(dir.path()).unwrap();
        c.append(Role::User, "my name is Ada", Some(1), false).unwrap();
        c.append(Role::Assistant, "Hello Ada.", Some(1), false).unwrap();
        let id = c.id().to_string();
        drop(c);
        let mut c = Conversation::open(dir.path()).unwrap();
        assert_eq!(c.id(), id);
        assert_eq!(c.entries().len(), 2);
        c.start_new(Some("call/42")).unwrap();
        assert!(c.id().starts_with("call-call42-"));
        assert!(c.entries().is_empty());
        drop(c);
        assert!(Conversation::open(dir.path()).unwrap().entries().is_empty());
    }

    #[test]
    fn budget_trims_from_the_oldest_and_starts_with_user() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::open(dir.path()).unwrap();
        for i in 0..10 {
            c.append(Role::User, &format!("question {i}"), Some(i), false).unwrap();
            c.append(Role::Assistant, &format!("answer {i}"), Some(i), i == 9).unwrap();
        }
        c.append(Role::User, "last", Some(10), false).unwrap();
        let m = c.messages(Budget { max_messages: 6, max_tokens: 1000 });
        let texts: Vec<&str> = m.iter().map(|m| m.text.as_str()).collect();
        // Over 6 messages: the window jumps to where 3 fit (half the budget).
        assert_eq!(texts, vec!["question 9", "answer 9 [interrupted]", "last"]);
        let c2 = Conversation::open(dir.path()).unwrap();
        let m = c2.messages(Budget { max_messages: 100, max_tokens: 20 });
        // 80 characters of budget → jump to 40: last, answer 9 [interrupted], question 9.
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[0].role, Role::User);
    }

    #[test]
    fn the_sent_prefix_stays_the_same_until_the_budget_is_exceeded_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::open(dir.path()).unwrap();
        let budget = Budget { max_messages: 8, max_tokens: 1000 };
        let mut firsts = vec![];
        for i in 0..12 {
            c.append(Role::User, &format!("question {i}"), Some(i), false).unwrap();
            let m = c.messages(budget);
            assert!(m.len() <= 8 && m[0].role == Role::User, "{m:?}");
            assert_eq!(m.last().unwrap().text, format!("question {i}"));
            firsts.push(m[0].text.clone());
            c.append(Role::Assistant, &format!("answer {i}"), Some(i), false).unwrap();
        }
        // The first message sent changes in jumps, not every turn: a sliding window would
        // change it 8 times over these 12 turns.
        let changes = firsts.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes <= 3, "the window start moved {changes} times: {firsts:?}");
    }

    #[test]
    fn what_was_heard_of_an_interrupted_reply_replaces_it_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::open(dir.path()).unwrap();
        c.append(Role::User, "Tell me a story.", Some(1), false).unwrap();
        c.append(Role::Assistant, "Once upon a time. There was a cat.", Some(1), true).unwrap();
        c.heard_only(7, "Once").unwrap(); // another turn's report: nothing changes
        c.heard_only(1, "Once upon a").unwrap();
        c.append(Role::User, "Stop.", Some(2), false).unwrap();
        drop(c);
        let c = Conversation::open(dir.path()).unwrap();
        let texts: Vec<(&str, bool)> = c.entries().iter().map(|e| (e.text.as_str(), e.interrupted)).collect();
        assert_eq!(texts, vec![("Tell me a story.", false), ("Once upon a", true), ("Stop.", false)]);
    }

    #[test]
    fn replacing_the_last_user_message_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::open(dir.path()).unwrap();
        c.append(Role::User, "hi", Some(1), false).unwrap();
        c.append(Role::Assistant, "Hello.", Some(1), false).unwrap();
        c.append(Role::User, "I'd like a table for", Some(2), false).unwrap();
        c.replace_last_user("I'd like a table for four people", Some(3)).unwrap();
        c.append(Role::Assistant, "Sure.", Some(3), false).unwrap();
        drop(c);
        let c = Conversation::open(dir.path()).unwrap();
        let texts: Vec<(Role, &str, Option<u64>)> = c.entries().iter().map(|e| (e.role, e.text.as_str(), e.turn)).collect();
        assert_eq!(
            texts,
            vec![
                (Role::User, "hi", Some(1)),
                (Role::Assistant, "Hello.", Some(1)),
                (Role::User, "I'd like a table for four people", Some(3)),
                (Role::Assistant, "Sure.", Some(3)),
            ]
        );
    }

    #[test]
    fn same_role_messages_are_merged_and_empty_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::open(dir.path()).unwrap();
        c.append(Role::User, "one", None, false).unwrap();
        c.append(Role::Assistant, "", None, false).unwrap();
        c.append(Role::User, "two", None, false).unwrap();
        let m = c.messages(Budget { max_messages: 10, max_tokens: 100 });
        assert_eq!(m, vec![ChatMessage::text(Role::User, "one\ntwo")]);
    }

    #[test]
    fn tool_exchanges_survive_reopen_and_the_window_never_starts_with_results() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::open(dir.path()).unwrap();
        c.append(Role::User, "What time is it in Paris?", Some(1), false).unwrap();
        let call = ToolCall { id: "t1".into(), name: "get_current_time".into(), input: json!({"timezone": "Europe/Paris"}) };
        let result = ToolResult { id: "t1".into(), content: "{\"datetime\": \"…\"}".into(), is_error: false };
        c.append_tools(vec![call.clone()], vec![result.clone()], Some(1)).unwrap();
        c.append(Role::Assistant, "It is noon.", Some(1), false).unwrap();
        drop(c);
        let mut c = Conversation::open(dir.path()).unwrap();
        let m = c.messages(Budget { max_messages: 10, max_tokens: 1000 });
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!((m[1].role, &m[1].calls), (Role::Assistant, &vec![call.clone()]));
        assert_eq!((m[2].role, &m[2].results), (Role::User, &vec![result.clone()]));
        assert_eq!(m[3].text, "It is noon.");
        // A reply cancelled after its tools, before any words: the next words join the
        // results' message (Claude: tool_result blocks, then the text).
        let call2 = ToolCall { id: "t2".into(), ..call.clone() };
        let result2 = ToolResult { id: "t2".into(), ..result.clone() };
        c.append_tools(vec![call2.clone()], vec![result2.clone()], Some(2)).unwrap();
        c.append(Role::User, "And in Tokyo?", Some(3), false).unwrap();
        let m = c.messages(Budget { max_messages: 10, max_tokens: 1000 });
        // (the turn-2 calls join the answer before them: text, then tool_use)
        assert_eq!(m.len(), 5, "{m:?}");
        assert_eq!((m[3].text.as_str(), &m[3].calls), ("It is noon.", &vec![call2]));
        assert_eq!((m[4].text.as_str(), &m[4].results), ("And in Tokyo?", &vec![result2]));
        // A window that would start at the results skips them (no result without its call).
        let c = Conversation::open(dir.path()).unwrap();
        let m = c.messages(Budget { max_messages: 4, max_tokens: 1000 });
        assert_eq!(m, vec![ChatMessage::text(Role::User, "And in Tokyo?")]);
    }
}

//! The conversation, kept on disk so a restarted `llm-relay` continues it.
//!
//! Layout under the state directory:
//!
//! ```text
//! <state>/current-conversation         id of the conversation in progress (one line)
//! <state>/conversations/<id>.jsonl     one message per line:
//!     {"role":"user","text":"…","turn":3,"t":1700000000000000}
//!     {"role":"assistant","text":"…","turn":3,"t":…,"interrupted":true}
//! ```
//!
//! A `call-start` begins a new conversation (new file, `current` updated); the files are
//! append-only, so they double as a transcript log. What is *sent* to the model is trimmed to a
//! budget of messages and approximate tokens (≈ 4 characters per token), always starting with a
//! user message and alternating roles (consecutive same-role messages are merged). An
//! interrupted assistant message holds only what was handed to TTS and is sent with
//! " [interrupted]" appended, so the model knows the caller cut it off.

use crate::provider::{ChatMessage, Role};
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
    file: File,
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
        *self = Self::create(&self.dir, call)?;
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

    pub fn append(&mut self, role: Role, text: &str, turn: Option<u64>, interrupted: bool) -> Result<()> {
        let entry = Entry { role, text: text.to_string(), turn, t: tgvoice::clock::now_us(), interrupted };
        let mut line = serde_json::to_string(&entry)?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).with_context(|| format!("cannot append to {}", self.path().display()))?;
        self.entries.push(entry);
        Ok(())
    }

    /// The messages to send, newest last, trimmed to `budget`.
    pub fn messages(&self, budget: Budget) -> Vec<ChatMessage> {
        let mut picked: Vec<ChatMessage> = vec![];
        let mut chars = 0usize;
        for e in self.entries.iter().rev() {
            let text = if e.interrupted && e.role == Role::Assistant {
                format!("{} {INTERRUPTED_MARK}", e.text).trim().to_string()
            } else {
                e.text.trim().to_string()
            };
            if text.is_empty() {
                continue;
            }
            // Always keep the newest message, however long.
            if !picked.is_empty() && (picked.len() >= budget.max_messages || chars + text.len() > budget.max_tokens * 4)
            {
                break;
            }
            chars += text.len();
            picked.push(ChatMessage { role: e.role, text });
        }
        picked.reverse();
        while picked.first().is_some_and(|m| m.role != Role::User) {
            picked.remove(0);
        }
        let mut merged: Vec<ChatMessage> = vec![];
        for m in picked {
            match merged.last_mut() {
                Some(last) if last.role == m.role => {
                    last.text.push('\n');
                    last.text.push_str(&m.text);
                }
                _ => merged.push(m),
            }
        }
        merged
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
        Ok(Conversation { dir: dir.to_path_buf(), id, entries: vec![], file })
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
        Ok(Conversation { dir: dir.to_path_buf(), id, entries, file })
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
        let m = c.messages(Budget { max_messages: 4, max_tokens: 1000 });
        let texts: Vec<&str> = m.iter().map(|m| m.text.as_str()).collect();
        // 4 newest are: answer 8, question 9, answer 9 [interrupted], last → drop the leading
        // assistant message.
        assert_eq!(texts, vec!["question 9", "answer 9 [interrupted]", "last"]);
        let m = c.messages(Budget { max_messages: 100, max_tokens: 10 });
        assert_eq!(m.len(), 3, "{m:?}"); // 40 characters of budget: last, answer 9, question 9
        assert_eq!(m[0].role, Role::User);
    }

    #[test]
    fn same_role_messages_are_merged_and_empty_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::open(dir.path()).unwrap();
        c.append(Role::User, "one", None, false).unwrap();
        c.append(Role::Assistant, "", None, false).unwrap();
        c.append(Role::User, "two", None, false).unwrap();
        let m = c.messages(Budget { max_messages: 10, max_tokens: 100 });
        assert_eq!(m, vec![ChatMessage { role: Role::User, text: "one\ntwo".into() }]);
    }
}

//! The executor: carries out what the turn policy ([`crate::policy`]) decides.
//!
//! It feeds the policy the input events, each reply stream's chunks and the time, and does
//! the I/O the policy must not: the streaming tasks (one per reply, abortable so a cancel
//! drops the HTTP connection), the frames written to the sink, the traces, and the
//! conversation file. Reply text becomes speakable chunks in the streaming task
//! ([`CodeFenceFilter`] → [`SentenceSplitter`] → [`clean_for_speech`]); which of them are
//! written, held or dropped is the policy's call.

use crate::conversation::{Budget, Conversation};
use crate::policy::{Command, Host, Input, Policy, PolicyConfig, ReplyId};
use crate::provider::{ChatMessage, Offer, Provider, Role, ToolCall, ToolResult};
use crate::speakable::{clean_for_speech, CodeFenceFilter, SentenceSplitter};
use crate::stream::{stream_turn, StreamOptions};
use crate::control::{Action, Controls};
use crate::tools::Toolbox;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tgvoice::event::{kind, trace_key};
use tgvoice::sink::SinkHandle;
use tgvoice::{Event, Frame, TurnTrace};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

pub struct RelayConfig {
    pub provider: Provider,
    pub stream: StreamOptions,
    pub first_clause_min_words: usize,
    /// A reply ends after this many sentences (`--max-sentences`; 0 = no limit).
    pub max_sentences: usize,
    pub policy: PolicyConfig,
    /// `--end-judge`: asked when the policy sends [`Command::Judge`].
    pub end_judge: Option<crate::judge::EndJudge>,
    /// The tools offered to the LLM (None: no tools file, no tools).
    pub tools: Option<Arc<Toolbox>>,
    /// Requests with tool results per reply, at most (`--max-tool-rounds`); the last one
    /// asks for words.
    pub max_tool_rounds: usize,
    /// Tool calls per reply, at most (`--max-tool-calls`); more are answered with an error.
    pub max_tool_calls: usize,
    /// `--transfer-to`: where `transfer_call` may send the caller.
    pub transfer_to: Vec<crate::control::Target>,
    /// Offer call control at all (`--call-control`); the line's `controls` decide which.
    pub call_control: bool,
}

/// What a streaming task reports.
enum StreamMsg {
    /// The first token arrived (µs, wall clock).
    FirstToken(u64),
    Chunk(String),
    /// The stream ended: complete, or failed (why).
    Done(Option<String>),
    /// Tool calls started (true) or ended (false).
    Tools(bool),
    /// A tool exchange to record: the calls and their results.
    Exchange(Vec<ToolCall>, Vec<ToolResult>),
    /// A call-control tool succeeded: its event goes out after the reply's `reply-end`.
    Control(Action),
}

/// Turns one reply's text deltas into speakable chunks, and ends the reply after
/// `--max-sentences`.
struct Speaker {
    turn: u64,
    filter: CodeFenceFilter,
    splitter: SentenceSplitter,
    /// 0 = no limit; else the reply ends after this many sentences.
    max_sentences: usize,
    sentences: usize,
}

impl Speaker {
    fn push(&mut self, text: &str, out: &mut impl FnMut(String)) -> ControlFlow<()> {
        if self.said_enough() {
            return ControlFlow::Break(());
        }
        let plain = self.filter.push(text);
        for chunk in self.splitter.push(&plain) {
            self.emit(&chunk, out);
            if self.said_enough() {
                log::info!("turn {}: reply ends after {} sentence(s) (--max-sentences)", self.turn, self.sentences);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn said_enough(&self) -> bool {
        self.max_sentences > 0 && self.sentences >= self.max_sentences
    }

    fn finish(&mut self, out: &mut impl FnMut(String)) {
        if self.said_enough() {
            return;
        }
        let rest = self.filter.finish();
        let mut chunks = self.splitter.push(&rest);
        chunks.extend(self.splitter.finish());
        for chunk in chunks {
            self.emit(&chunk, out);
        }
    }

    fn emit(&mut self, chunk: &str, out: &mut impl FnMut(String)) {
        let Some(text) = clean_for_speech(chunk) else { return };
        // A first chunk cut at a clause is not a sentence.
        if text.ends_with(['.', '!', '?', '…']) {
            self.sentences += 1;
        }
        out(text);
    }
}

/// Run one message's tool calls (at once) and give their results in order. A call whose
/// arguments are unusable, or beyond `--max-tool-calls` for the reply (`made` so far), is not
/// run: its result is an error saying why, so the model can answer anyway.
async fn run_calls(
    tools: Option<&Toolbox>,
    builtin: (Controls, &[crate::control::Target]),
    calls: &[(ToolCall, Option<String>)],
    turn: u64,
    max_calls: usize,
    made: &mut usize,
) -> (Vec<ToolResult>, Vec<Action>) {
    let mut actions = vec![];
    let mut results = vec![None; calls.len()];
    let mut runs = vec![];
    for (i, (call, bad)) in calls.iter().enumerate() {
        let refused = |content: String| Some(ToolResult { id: call.id.clone(), content, is_error: true });
        if let Some(why) = bad {
            log::warn!("turn {turn}: the LLM's call of {:?} is unusable ({why}); told it so", call.name);
            results[i] = refused(format!("Not called: {why}."));
        } else if *made >= max_calls {
            log::warn!("turn {turn}: more than {max_calls} tool calls (--max-tool-calls); {:?} not called", call.name);
            results[i] = refused("Not called: too many tool calls for one answer; answer with what you have.".into());
        } else if let Some((result, action)) = crate::control::call(call, builtin.0, builtin.1) {
            *made += 1;
            results[i] = Some(result);
            actions.extend(action);
        } else if tools.is_none() {
            log::warn!("turn {turn}: the LLM called a tool {:?} that is not on offer; told it so", call.name);
            results[i] = refused(format!("There is no tool named {:?} available now.", call.name));
        } else {
            *made += 1;
            runs.push((i, call));
        }
    }
    if let Some(tools) = tools {
        let done = futures_util::future::join_all(runs.iter().map(|(_, c)| tools.call(c))).await;
        for ((i, _), r) in runs.iter().zip(done) {
            results[*i] = Some(r);
        }
    }
    (results.into_iter().flatten().collect(), actions)
}

/// A reply stream the policy started and has not ended.
struct Running {
    task: Option<JoinHandle<()>>,
    trace: TurnTrace,
    /// Chunks written.
    chunks: u64,
    /// For a reply started early: the first token counts from the transcript on.
    first_token_floor: Option<u64>,
    turn: u64,
    /// Started from a preview and not released yet: its tool exchanges wait in `exchanges`
    /// until the caller's message is recorded (at the release).
    held: bool,
    exchanges: Vec<(Vec<ToolCall>, Vec<ToolResult>)>,
    /// A call-control action to carry out after the reply (the last one called wins).
    control: Option<Action>,
}

/// Everything the policy reaches through [`Host`].
struct Outside {
    cfg: Arc<RelayConfig>,
    client: reqwest::Client,
    sink: SinkHandle,
    conversation: Conversation,
    running: HashMap<ReplyId, Running>,
    /// Aborted tasks, awaited after the step (so their HTTP connections are closed).
    stopped: Vec<JoinHandle<()>>,
    /// The reply stopped last, for its `reply-end` (a cancel stops the stream, then ends it).
    last_stopped: Option<(ReplyId, Running)>,
    streams: UnboundedSender<(ReplyId, StreamMsg)>,
    /// The end judge's verdicts: (key, complete?).
    verdicts: UnboundedSender<(String, Option<bool>)>,
    /// What the line can do (`controls` of the last `call-start`; none after `call-end`).
    controls: Controls,
}

pub struct Relay {
    policy: Policy,
    outside: Outside,
    streams: UnboundedReceiver<(ReplyId, StreamMsg)>,
    verdicts: UnboundedReceiver<(String, Option<bool>)>,
}

/// Sleeps until `at` (forever when None).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

enum Step {
    Frame(Option<Frame>),
    Stream(Option<(ReplyId, StreamMsg)>),
    Verdict(Option<(String, Option<bool>)>),
    Tick,
}

impl Relay {
    pub fn new(cfg: RelayConfig, sink: SinkHandle, conversation: Conversation) -> anyhow::Result<Self> {
        let client = crate::stream::client(&cfg.stream)?;
        let (tx, streams) = unbounded_channel();
        let (verdict_tx, verdicts) = unbounded_channel();
        let policy = Policy::new(cfg.policy.clone());
        let outside = Outside {
            cfg: Arc::new(cfg),
            client,
            sink,
            conversation,
            running: HashMap::new(),
            stopped: vec![],
            last_stopped: None,
            streams: tx,
            verdicts: verdict_tx,
            controls: Controls::default(),
        };
        Ok(Relay { policy, outside, streams, verdicts })
    }

    /// Run until the input ends (then let the reply in progress finish).
    pub async fn run(mut self, mut inputs: UnboundedReceiver<Frame>) -> anyhow::Result<()> {
        loop {
            let wake = self.policy.next_wake();
            let step = tokio::select! {
                biased;
                f = inputs.recv() => Step::Frame(f),
                m = self.streams.recv() => Step::Stream(m),
                v = self.verdicts.recv() => Step::Verdict(v),
                _ = sleep_until(wake), if wake.is_some() => Step::Tick,
            };
            if self.outside.sink.is_closed() {
                // A reader that leaves ends the writer quietly, like any pipeline tool.
                log::info!("output closed; stopping");
                self.feed(Input::OutputClosed).await;
                return Ok(());
            }
            match step {
                Step::Frame(None) => break,
                Step::Frame(Some(Frame::Event(e))) => {
                    if e.is(kind::CALL_START) || e.is(kind::CALL_END) {
                        self.outside.set_controls(&e);
                    }
                    self.feed(Input::Event(e)).await
                }
                Step::Frame(Some(audio)) => self.outside.sink.send(audio), // not ours: forward unchanged
                Step::Stream(Some(m)) => self.stream_msg(m).await,
                Step::Stream(None) | Step::Verdict(None) => unreachable!("the relay holds a sender"),
                Step::Verdict(Some((text, complete))) => self.feed(Input::Judged { text, complete }).await,
                Step::Tick => self.feed(Input::Tick).await,
            }
        }
        // End of input: answer what is left, and let the reply in progress finish.
        self.feed(Input::EndOfInput).await;
        while self.policy.replying() {
            match self.streams.recv().await {
                Some(m) => self.stream_msg(m).await,
                None => break,
            }
        }
        Ok(())
    }

    async fn feed(&mut self, input: Input) {
        self.policy.handle(Instant::now(), input, &mut self.outside);
        for task in self.outside.stopped.drain(..) {
            let _ = task.await;
        }
    }

    async fn stream_msg(&mut self, (reply, msg): (ReplyId, StreamMsg)) {
        match msg {
            StreamMsg::FirstToken(t) => {
                if let Some(r) = self.outside.running.get_mut(&reply) {
                    r.trace.mark(trace_key::LLM_FIRST_TOKEN, r.first_token_floor.map_or(t, |f| t.max(f)));
                }
            }
            StreamMsg::Chunk(text) => self.feed(Input::Chunk { reply, text }).await,
            StreamMsg::Done(failure) => self.feed(Input::Done { reply, failure }).await,
            StreamMsg::Tools(running) => self.feed(Input::Tools { reply, running }).await,
            StreamMsg::Control(action) => {
                if let Some(r) = self.outside.running.get_mut(&reply) {
                    r.control = Some(action);
                }
            }
            StreamMsg::Exchange(calls, results) => {
                let Some(r) = self.outside.running.get_mut(&reply) else { return };
                if r.held {
                    r.exchanges.push((calls, results));
                } else if let Err(e) = self.outside.conversation.append_tools(calls, results, Some(r.turn)) {
                    log::error!("cannot record a tool exchange: {e:#}");
                }
            }
        }
    }
}

impl Outside {
    fn send(&self, event: Event) {
        self.sink.send(Frame::Event(event));
    }

    /// A `call-start` declares what the line can do; a `call-end` takes it away.
    fn set_controls(&mut self, e: &Event) {
        let offered = self.cfg.call_control && e.is(kind::CALL_START);
        let controls = if offered { Controls::of_call_start(e) } else { Controls::default() };
        if controls != self.controls {
            log::info!("{}: call control {:?}", e.kind, controls);
        }
        self.controls = controls;
    }

    /// Stream a reply to `messages` in a task of its own; it reports through `streams`. With
    /// tools, the model's calls are run and their results sent back, round after round, until
    /// it answers in words (bounded by `--max-tool-rounds` and `--max-tool-calls`).
    fn spawn_reply(&self, reply: ReplyId, turn: u64, mut messages: Vec<ChatMessage>) -> JoinHandle<()> {
        let (cfg, client, tx) = (self.cfg.clone(), self.client.clone(), self.streams.clone());
        let controls = self.controls;
        tokio::spawn(async move {
            let mut speaker = Speaker {
                turn,
                filter: CodeFenceFilter::new(),
                splitter: SentenceSplitter::new(cfg.first_clause_min_words),
                max_sentences: cfg.max_sentences,
                sentences: 0,
            };
            let chunk_tx = tx.clone();
            let said = std::sync::atomic::AtomicUsize::new(0);
            let said_ref = &said;
            let mut out = move |text: String| {
                said_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = chunk_tx.send((reply, StreamMsg::Chunk(text)));
            };
            let mut first = true;
            let mut calls_made = 0;
            let mut round = 0;
            let mut defs: Vec<crate::provider::ToolDef> = vec![];
            let result = loop {
                // A tool offered earlier in this reply stays declared (its call is in the
                // messages) even if its server went away meanwhile (calling it then gives an error).
                let mut now_on_offer = crate::control::defs(controls, &cfg.transfer_to);
                now_on_offer.extend(cfg.tools.as_ref().map(|t| t.defs()).unwrap_or_default());
                for d in std::mem::take(&mut defs) {
                    if !now_on_offer.iter().any(|n| n.name == d.name) {
                        now_on_offer.push(d);
                    }
                }
                defs = now_on_offer;
                let offer = Offer { tools: &defs, allow: round < cfg.max_tool_rounds };
                let mut said_enough = false;
                let mut round_text = String::new();
                let result = AssertUnwindSafe(stream_turn(&client, &cfg.provider, &messages, offer, &cfg.stream, |t| {
                    if first {
                        first = false;
                        let _ = tx.send((reply, StreamMsg::FirstToken(tgvoice::clock::now_us())));
                    }
                    round_text.push_str(t);
                    let flow = speaker.push(t, &mut out);
                    said_enough = flow.is_break();
                    flow
                }))
                .catch_unwind()
                .await;
                let Ok(Ok((_, calls))) = &result else { break result };
                if calls.is_empty() || said_enough || defs.is_empty() {
                    break result;
                }
                if !offer.allow {
                    // Told to answer in words (`tool_choice: none`), it called again.
                    log::warn!("turn {turn}: the LLM still calls tools after {round} round(s) (--max-tool-rounds); not run");
                    break result;
                }
                // What was said before the calls is complete: out it goes before the wait.
                speaker.finish(&mut out);
                round += 1;
                let _ = tx.send((reply, StreamMsg::Tools(true)));
                let builtin = (controls, cfg.transfer_to.as_slice());
                let (results, actions) =
                    run_calls(cfg.tools.as_deref(), builtin, calls, turn, cfg.max_tool_calls, &mut calls_made).await;
                for action in actions {
                    let _ = tx.send((reply, StreamMsg::Control(action)));
                }
                let _ = tx.send((reply, StreamMsg::Tools(false)));
                let calls: Vec<ToolCall> = calls.iter().map(|(c, _)| c.clone()).collect();
                let _ = tx.send((reply, StreamMsg::Exchange(calls.clone(), results.clone())));
                // The model's own turn as it was (its words before the calls, then the calls);
                // the conversation file keeps the words in the answer it records at the end.
                let text = round_text.trim().to_string();
                messages.push(ChatMessage { role: Role::Assistant, text, calls, results: vec![] });
                messages.push(ChatMessage { role: Role::User, text: String::new(), calls: vec![], results });
            };
            // The last sentence is complete now (also for a held reply: it can go out ahead).
            speaker.finish(&mut out);
            let failure = match result {
                // Tools ran and then the model said nothing: the caller gets the apology, not
                // silence.
                Ok(Ok(_)) if round > 0 && said.load(std::sync::atomic::Ordering::Relaxed) == 0 => {
                    Some(format!("the LLM said nothing after {round} round(s) of tool calls"))
                }
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!(
                    "{} ({} attempt(s){})",
                    e.message,
                    e.attempts,
                    if e.partial { ", cut off mid-reply" } else { "" }
                )),
                Err(_) => Some("the reply task failed (panic)".to_string()),
            };
            let _ = tx.send((reply, StreamMsg::Done(failure)));
        })
    }

    /// Ask the end judge about `text` in a task of its own; the verdict comes back through
    /// `verdicts` (None when the judge fails: the words alone decide then).
    fn judge(&self, text: String, messages: Vec<ChatMessage>) {
        let (cfg, client, tx) = (self.cfg.clone(), self.client.clone(), self.verdicts.clone());
        tokio::spawn(async move {
            let Some(judge) = cfg.end_judge.as_ref() else {
                let _ = tx.send((text, None));
                return;
            };
            let t0 = Instant::now();
            let verdict = match judge.complete(&client, &cfg.provider.system_prompt, &messages).await {
                Ok(complete) => {
                    log::info!(
                        "end judge: {text:?} {} ({:.0} ms)",
                        if complete { "can stand as a request" } else { "wants more" },
                        t0.elapsed().as_secs_f64() * 1e3
                    );
                    Some(complete)
                }
                Err(e) => {
                    log::warn!("end judge: no verdict on {text:?}: {e}; going by the words");
                    None
                }
            };
            let _ = tx.send((text, verdict));
        });
    }

    /// The held reply stands: `trace` is the final transcript's; the LLM's first token counts
    /// from the transcript on if it came before (the steps still add up to voice-to-voice,
    /// and "llm" is what the caller waited for the LLM after the transcript).
    fn release(r: &mut Running, mut trace: TurnTrace) {
        let transcript = trace.get(trace_key::TRANSCRIPT).unwrap_or_else(tgvoice::clock::now_us);
        if let Some(t) = r.trace.get(trace_key::LLM_REQUEST) {
            trace.mark(trace_key::LLM_REQUEST, t);
            trace.mark(trace_key::PREEMPT, t);
        }
        if let Some(t) = r.trace.get(trace_key::LLM_FIRST_TOKEN) {
            trace.mark(trace_key::LLM_FIRST_TOKEN, t.max(transcript));
        }
        r.first_token_floor = Some(transcript);
        r.trace = trace;
    }
}

impl Host for Outside {
    fn run(&mut self, command: Command) {
        match command {
            Command::Forward(event) => self.send(event),
            Command::Start { reply, turn, messages, mut trace, held } => {
                if !held {
                    log::info!("turn {turn}: {} message(s) of history → {}", messages.len(), self.cfg.provider.url());
                }
                trace.mark_now(trace_key::LLM_REQUEST);
                let task = self.spawn_reply(reply, turn, messages);
                self.running.insert(
                    reply,
                    Running { task: Some(task), trace, chunks: 0, first_token_floor: None, turn, held, exchanges: vec![], control: None },
                );
            }
            Command::Stop { reply } => {
                if let Some(mut r) = self.running.remove(&reply) {
                    if let Some(task) = r.task.take() {
                        task.abort(); // drops the HTTP stream: the server stops generating
                        self.stopped.push(task);
                    }
                    self.last_stopped = Some((reply, r));
                }
            }
            Command::Ahead { turn, seq, text, .. } => {
                self.send(Event::new(kind::REPLY_AHEAD).with_turn(turn).with_text(text).with("seq", seq));
            }
            Command::Release { reply, trace } => {
                if let Some(r) = self.running.get_mut(&reply) {
                    Self::release(r, trace);
                    // The caller's message is recorded now: the tool exchanges follow it.
                    r.held = false;
                    for (calls, results) in std::mem::take(&mut r.exchanges) {
                        if let Err(e) = self.conversation.append_tools(calls, results, Some(r.turn)) {
                            log::error!("cannot record a tool exchange: {e:#}");
                        }
                    }
                }
            }
            Command::Chunk { reply, turn, seq, text } => {
                let Some(r) = self.running.get_mut(&reply) else { return };
                r.trace.mark_now(trace_key::FIRST_CHUNK);
                r.chunks += 1;
                let event =
                    Event::new(kind::REPLY_CHUNK).with_turn(turn).with_text(text).with_trace(r.trace.clone()).with("seq", seq);
                self.send(event);
            }
            Command::Failed { turn, message, .. } => {
                // Informational, for the supervisor/bridge (fifo-layout.md `error`).
                self.send(Event::new(kind::ERROR).with_turn(turn).with("stage", "llm-relay").with("message", message));
            }
            Command::End { reply, turn, cancelled, error } => {
                let r = self.running.remove(&reply).or_else(|| {
                    self.last_stopped.take_if(|(id, _)| *id == reply).map(|(_, r)| r)
                });
                let trace = r.as_ref().map(|r| r.trace.clone()).unwrap_or_default();
                let mut end = Event::new(kind::REPLY_END).with_turn(turn).with_trace(trace.clone()).with("cancelled", cancelled);
                if error {
                    end = end.with("error", true);
                }
                self.send(end);
                // Call control goes out after the reply that said goodbye (or the notice);
                // a reply cut off by the caller carries it no further.
                match r.as_ref().and_then(|r| r.control.as_ref()) {
                    Some(action) if !cancelled => {
                        log::info!("turn {turn}: {} after the reply", action.event(turn).kind);
                        self.send(action.event(turn));
                    }
                    Some(action) => log::info!("turn {turn}: the reply was cut off; no {}", action.event(turn).kind),
                    None => {}
                }
                if !cancelled && !error {
                    let ms =
                        |to| trace.span_ms(trace_key::LLM_REQUEST, to).map(|v| format!("{v:.0} ms")).unwrap_or("?".into());
                    log::info!(
                        "turn {turn}: reply complete, {} chunk(s); request → first token {}, → first chunk {}",
                        r.map_or(0, |r| r.chunks),
                        ms(trace_key::LLM_FIRST_TOKEN),
                        ms(trace_key::FIRST_CHUNK)
                    );
                }
            }
            Command::Resume { turn } => self.send(Event::new(kind::RESUME).with_turn(turn)),
            Command::CancelUpTo { turn } => self.send(Event::new(kind::CANCEL).with_turn(turn)),
            Command::Judge { text, messages } => self.judge(text, messages),
            Command::NewConversation { call } => {
                if let Err(e) = self.conversation.start_new(call.as_deref()) {
                    log::error!("cannot start a new conversation: {e:#}");
                }
                log::info!("call-start: new conversation {}", self.conversation.path().display());
            }
        }
    }

    fn withdraw_unwritten(&mut self, turn: u64) -> Vec<u64> {
        let mut withdrawn = vec![];
        self.sink.retain(|f| match f {
            Frame::Event(e) if e.is(kind::REPLY_CHUNK) && e.turn == Some(turn) => {
                withdrawn.extend(e.get_u64("seq"));
                false
            }
            _ => true,
        });
        withdrawn
    }

    fn append(&mut self, role: Role, text: &str, turn: Option<u64>, interrupted: bool) {
        if let Err(e) = self.conversation.append(role, text, turn, interrupted) {
            log::error!("cannot record a message: {e:#}");
        }
    }

    fn replace_last_user(&mut self, text: &str, turn: Option<u64>) {
        if let Err(e) = self.conversation.replace_last_user(text, turn) {
            log::error!("cannot record a message: {e:#}");
        }
    }

    fn heard_only(&mut self, turn: u64, text: &str) {
        if let Err(e) = self.conversation.heard_only(turn, text) {
            log::error!("cannot record what was heard: {e:#}");
        }
    }

    fn messages(&mut self, budget: Budget) -> Vec<ChatMessage> {
        self.conversation.messages(budget)
    }

    fn messages_if_user_said(&mut self, text: &str, merge: bool, budget: Budget) -> Vec<ChatMessage> {
        self.conversation.messages_if_user_said(text, merge, budget)
    }
}

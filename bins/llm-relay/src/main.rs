//! llm-relay — reads final transcripts and events (text.frames), keeps the conversation on
//! disk, streams a reply from Claude, an OpenAI-compatible server, or the local llama.cpp
//! server, and writes speakable `reply-chunk`s plus a `reply-end` (reply.frames) for
//! tts-writer. The turn policy is `policy.rs`; `relay.rs` carries it out.

use llm_relay::{config, conversation, relay};

use tgvoice::cli;
use tgvoice::source::Input;
use tgvoice::{FrameSource, TapFormat, TextView};

fn main() {
    let args: config::Args = tgvoice::cli::parse_args();
    cli::run("llm-relay", &args.log.clone(), move || {
        let mut cfg = config::resolve(&args)?;
        let conversation = conversation::Conversation::open(&cfg.state_dir)?;
        log::info!(
            "conversation {} ({} earlier message(s)) in {}",
            conversation.id(),
            conversation.entries().len(),
            cfg.state_dir.display()
        );
        let source = FrameSource::open(args.link.input())?;
        let sink = args.link.open_output(TapFormat::JsonLines, TextView::Reply)?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let played = args.played.as_ref().map(|p| FrameSource::open(tgvoice::Endpoint::Path(p.clone()))).transpose()?;
        let inputs = bridge_inputs(source, played);
        if !cfg.tool_servers.is_empty() {
            // In the background: the first reply never waits for a server.
            let _in_runtime = runtime.enter();
            cfg.relay.tools = Some(llm_relay::tools::Toolbox::start(cfg.tool_servers, cfg.tool_options));
        }
        let relay = relay::Relay::new(cfg.relay, sink.handle(), conversation)?;
        // Ready (fifo-layout.md §5): configured, inputs open.
        cli::notify_ready();
        runtime.block_on(relay.run(inputs))?;
        let stats = sink.finish();
        log::info!(
            "end of input; {} frames delivered, {} dropped",
            stats.delivered,
            stats.dropped_no_reader + stats.dropped_overflow
        );
        Ok(())
    })
}

/// FrameSource reads on its own thread; hand its frames to the async loop. tts-writer's
/// playback reports (`--played`) join them; only the main input's end ends the loop.
fn bridge_inputs(source: FrameSource, played: Option<FrameSource>) -> tokio::sync::mpsc::UnboundedReceiver<tgvoice::Frame> {
    let rx = source.spawn();
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    if let Some(played) = played {
        let reports = played.spawn();
        let weak = tx.downgrade();
        std::thread::Builder::new()
            .name("played bridge".into())
            .spawn(move || {
                for input in reports {
                    if let Input::Frame(f @ tgvoice::Frame::Event(_)) = input {
                        let Some(tx) = weak.upgrade() else { break };
                        if tx.send(f).is_err() {
                            break;
                        }
                    }
                }
            })
            .expect("spawn played bridge");
    }
    std::thread::Builder::new()
        .name("input bridge".into())
        .spawn(move || {
            for input in rx {
                if let Input::Frame(f) = input {
                    if tx.send(f).is_err() {
                        break;
                    }
                }
            }
        })
        .expect("spawn input bridge");
    out
}

//! Property tests ("fuzzing") of the frame decoder: arbitrary bytes, valid streams cut at
//! arbitrary points, and valid streams with garbage spliced in. The decoder must never panic,
//! never return a frame that was not encoded, and recover every frame after the garbage.

use proptest::prelude::*;
use tgvoice::frame::{encode, FrameDecoder, MAGIC};
use tgvoice::{AudioFrame, Event, Frame};

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        // Valid frames claim a plausible rate (fifo-layout.md §2); implausible ones are
        // rejected, which `frame::tests::implausible_sample_rates_and_channels_are_rejected` covers.
        (prop::collection::vec(any::<i16>(), 0..600), any::<u64>(), any::<u64>(), tgvoice::frame::SAMPLE_RATES).prop_map(
            |(samples, turn, ts, rate)| Frame::Audio(AudioFrame {
                sample_rate: rate,
                channels: 1,
                turn,
                capture_us: ts,
                sample_index: ts / 3,
                samples
            })
        ),
        ("[a-z-]{1,12}", any::<Option<u64>>(), ".{0,40}").prop_map(|(kind, turn, text)| {
            let mut e = Event::new(&kind).with_text(text);
            e.turn = turn;
            Frame::Event(e)
        }),
    ]
}

fn decode_chunked(bytes: &[u8], cuts: &[usize]) -> (Vec<Frame>, usize) {
    let mut d = FrameDecoder::new();
    let mut frames = vec![];
    let mut errors = 0;
    let mut last = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort();
    points.push(bytes.len());
    for p in points {
        d.push(&bytes[last..p]);
        last = p;
        while let Some(r) = d.next() {
            match r {
                Ok(f) => frames.push(f),
                Err(_) => errors += 1,
            }
        }
    }
    if d.finish().is_some() {
        errors += 1;
    }
    (frames, errors)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096),
                                   cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let (frames, _) = decode_chunked(&bytes, &cuts);
        // Random bytes almost never contain a valid header; whatever decodes must re-encode.
        for f in frames {
            let again = encode(&f);
            prop_assert_eq!(&again[..4], &MAGIC[..]);
        }
    }

    #[test]
    fn valid_streams_round_trip_under_any_chunking(frames in prop::collection::vec(arb_frame(), 1..8),
                                                   cuts in prop::collection::vec(any::<usize>(), 0..16)) {
        let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
        let (got, errors) = decode_chunked(&bytes, &cuts);
        prop_assert_eq!(errors, 0);
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn frames_after_garbage_are_recovered(before in prop::collection::vec(arb_frame(), 0..4),
                                          garbage in prop::collection::vec(any::<u8>(), 1..3000),
                                          after in prop::collection::vec(arb_frame(), 1..4),
                                          cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        // Garbage must not itself contain the magic (that would be a frame boundary claim).
        prop_assume!(!garbage.windows(4).any(|w| w == MAGIC));
        let mut bytes: Vec<u8> = before.iter().flat_map(encode).collect();
        bytes.extend(&garbage);
        let tail: Vec<u8> = after.iter().flat_map(encode).collect();
        bytes.extend(&tail);
        let (got, errors) = decode_chunked(&bytes, &cuts);
        prop_assert!(errors >= 1);
        // Every frame after the garbage is recovered, in order, at the end of the output.
        prop_assert!(got.len() >= after.len());
        prop_assert_eq!(&got[got.len() - after.len()..], &after[..]);
    }

    #[test]
    fn truncated_streams_report_and_keep_earlier_frames(frames in prop::collection::vec(arb_frame(), 1..5),
                                                        cut in any::<usize>()) {
        let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
        let cut = cut % bytes.len();
        let (got, _) = decode_chunked(&bytes[..cut], &[]);
        prop_assert!(got.len() <= frames.len());
        prop_assert_eq!(&got[..], &frames[..got.len()]);
    }
}

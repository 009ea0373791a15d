#!/usr/bin/env python3
"""Reference numbers for vadseg's Smart Turn front end and model (smart_turn_reference.json).

Runs pipecat 1.14.0's own preprocessing — `truncate_audio_to_last_n_seconds` of
local_smart_turn_v3.py (keep the last 8 s, zero-pad at the start) and the numpy Whisper
log-mel code it vendors (`_whisper_features.py`, taken from the wheel itself) — and the model
through onnxruntime 1.22.1 with pipecat's session options, on the clips listed below (16 kHz
WAVs in this directory joined with silences), and writes a subsample of the features, their
mean and the model's probability.

Regenerate (a throwaway venv is enough; nothing here is needed at run time):
    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install numpy onnxruntime==1.22.1
    pip download --no-deps -d /tmp/ref pipecat-ai==1.14.0
    /tmp/ref/bin/python smart_turn_reference.py /tmp/ref/pipecat_ai-1.14.0-py3-none-any.whl \
        ~/.cache/tgvoice/models/smart-turn-v3.2-cpu.onnx > smart_turn_reference.json
The clips are Piper (en_US-joe-medium) via `tts-writer --engine piper`, resampled to 16 kHz
by sox (make_clips.sh).
"""
import json, pathlib, sys, types, wave, zipfile

import numpy as np
import onnxruntime as ort

HERE = pathlib.Path(__file__).parent
RATE = 16000
# name → parts: a WAV file, or a number = that many ms of silence. The last clip is longer than
# the model's 8 s window, so the truncation side is checked too.
CLIPS = {
    "complete": ["capital-of-france.wav", 200],
    "incomplete": ["table-for-um.wav", 200],
    "hesitation-resumed": ["table-for.wav", 800, "four-people.wav", 200],
    "over-8-s": ["capital-of-france.wav", 500, "table-for.wav", 800, "four-people.wav", 500,
                 "capital-of-france.wav", 500, "table-for.wav", 800, "four-people.wav", 200],
}
FIRST_FRAME, FRAME_STEP = 600, 7


def load_whisper_features(wheel):
    with zipfile.ZipFile(wheel) as z:
        src = z.read("pipecat/audio/turn/smart_turn/_whisper_features.py").decode()
    mod = types.ModuleType("_whisper_features")
    exec(compile(src, "_whisper_features.py", "exec"), mod.__dict__)
    return mod


def read_wav(path):
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def clip_audio(parts):
    pieces = [np.zeros(RATE * p // 1000, np.int16) if isinstance(p, int) else read_wav(HERE / p) for p in parts]
    return np.concatenate(pieces)


def truncate_audio_to_last_n_seconds(audio_array, n_seconds=8, sample_rate=RATE):
    # verbatim from pipecat/audio/turn/smart_turn/local_smart_turn_v3.py
    max_samples = n_seconds * sample_rate
    if len(audio_array) > max_samples:
        return audio_array[-max_samples:]
    elif len(audio_array) < max_samples:
        padding = max_samples - len(audio_array)
        return np.pad(audio_array, (padding, 0), mode="constant", constant_values=0)
    return audio_array


def main(wheel, model):
    wf = load_whisper_features(wheel)
    so = ort.SessionOptions()
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, sess_options=so)
    out = {"generator": "smart_turn_reference.py (pipecat-ai 1.14.0 feature code, onnxruntime %s)" % ort.__version__,
           "first_frame": FIRST_FRAME, "frame_step": FRAME_STEP, "clips": []}
    for name, parts in CLIPS.items():
        audio = clip_audio(parts).astype(np.float32) / 32768.0
        x = truncate_audio_to_last_n_seconds(audio)
        feats = wf.compute_whisper_log_mel_features(x, do_normalize=True)
        p = session.run(None, {"input_features": feats[None]})[0].reshape(-1)[0].item()
        sub = feats[:, FIRST_FRAME::FRAME_STEP]
        out["clips"].append({"name": name, "parts": parts, "samples": int(audio.size), "p_complete": p,
                             "mean": float(feats.astype(np.float64).mean()),
                             "features": [round(float(v), 6) for v in sub.reshape(-1)]})
        print(f"{name}: {audio.size / RATE:.2f} s, p(complete) = {p:.4f}", file=sys.stderr)
    json.dump(out, sys.stdout, indent=None, separators=(",", ":"))
    print()


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""Option B measurement: time to first audio of piper-tts 1.8.0 (Python) kept loaded in a
persistent process, for comparison with tts-writer's in-process ONNX Runtime engine.

Usage: python piper_python_ttfa.py MODEL.onnx [N]   (needs `pip install piper-tts==1.8.0`)
"""
import statistics
import sys
import time

from piper import PiperVoice
from piper.config import SynthesisConfig

model = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 10
t0 = time.perf_counter()
voice = PiperVoice.load(model)
load_ms = (time.perf_counter() - t0) * 1000
short = "Hello, how can I help you today?"
long_text = ("The quick brown fox jumps over the lazy dog. " * 4).strip()
cfg = SynthesisConfig()
next(iter(voice.synthesize(short, cfg)))  # warm up
ttfa = []
for _ in range(n):
    t = time.perf_counter()
    next(iter(voice.synthesize(short, cfg)))
    ttfa.append((time.perf_counter() - t) * 1000)
t = time.perf_counter()
samples = sum(len(c.audio_int16_array) for c in voice.synthesize(long_text, cfg))
rtf = (time.perf_counter() - t) / (samples / voice.config.sample_rate)
print(f"piper-python load {load_ms:.0f} ms, time to first audio median {statistics.median(ttfa):.0f} ms "
      f"(min {min(ttfa):.0f}, max {max(ttfa):.0f}, n={n}), RTF {rtf:.3f}")

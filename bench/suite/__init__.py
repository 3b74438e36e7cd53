"""The benchmark suite: TimeSpeak, CueSpeak, turn-taking, latency, RepCount and ProactiveVideoQA, black box
over WebRTC.

    microturn bench [timespeak|cuespeak|turntaking|latency|repcount|proactivevqa|all] [--model NAME ...] ...

- cases.py     the case format (JSON): the user's timed script, typed events, expected agent behaviour
- generate.py  deterministic case generation from a seed; lexicon.py the words cases are made of
- speech.py    the user's audio: flite / espeak-ng synthesis, word timings, the mixed time line
- server.py    the `microturn serve` processes a run starts (shared with bench/latency.py)
- network.py   packet loss and jitter on the client's outgoing audio
- runner.py    one case over WebRTC (service/client.py's AgentClient; a CameraTrack for video cases)
- audio.py     agent speech segments by energy, their words by the offline recogniser
- scoring.py   pure scoring functions per suite, and their summaries
- report.py    the result JSON, the markdown tables, a PNG time line per case
- nullserver.py  the transport floor: a server that falls silent the instant user audio arrives
- cli.py       `microturn bench`
"""

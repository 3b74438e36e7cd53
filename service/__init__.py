"""microturn media node: signalling, sessions, micro-turn assembly, output audio, worker runner."""

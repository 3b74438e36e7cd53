"""Vision for micro-turns: synthetic camera clips with ground truth, and cheap per-micro-turn video features.

- :mod:`model.video.synthetic` draws exercise clips (push-ups, squats, jumping jacks) and visual-event scenes
  (a light changing colour, an object appearing, a number card changing) with their ground truth;
- :mod:`model.video.replay` hands a clip to a consumer the way the media node delivers camera frames;
- :mod:`model.video.features` turns each session's frames of a micro-turn into features and events
  (motion, repetitions, colour changes, appearances, numbers read off a card, stale/frozen/dark flags);
- :mod:`model.video.evaluate` measures those features on generated benchmark-split clips.

``docs/vision.md`` describes the design and the measured numbers.
"""

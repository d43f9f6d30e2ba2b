"""Test doubles shipped with the package: local stand-ins for the paid endpoints, for tests, benchmarks and demos.

- :mod:`vlmrl.testing.stub_llm`: an OpenAI-compatible text endpoint that judges NetHack messages and fails on
  a script (ONI's annotation server and judge are tested against it);
- :mod:`vlmrl.testing.stub_vlm`: an OpenAI-compatible chat endpoint that looks at two images and prefers the
  more folded cloth (``python -m vlmrl.testing.stub_vlm --port 8011``), with :func:`render_toy_cloth` frames.
"""

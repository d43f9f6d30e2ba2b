"""User jobs: each module ``<job>.py`` has ``main(cfg) -> dict`` and is run by ``vlmrl <job>``."""

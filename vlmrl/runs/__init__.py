"""Run folders and atomic writes: the one place every job reads and writes a run's files."""

from vlmrl.runs.atomic import append_jsonl, atomic_path, write_bytes, write_json, write_text
from vlmrl.runs.fingerprint import NOT_SHAPING, DifferentJob, check_fingerprint, job_fingerprint, refuse_if_different
from vlmrl.runs.folder import CONTRACT_KEYS, EpisodeTracker, LabelStats, RunFolder, latest_checkpoint

__all__ = [
    "CONTRACT_KEYS",
    "NOT_SHAPING",
    "DifferentJob",
    "EpisodeTracker",
    "LabelStats",
    "RunFolder",
    "append_jsonl",
    "atomic_path",
    "check_fingerprint",
    "job_fingerprint",
    "latest_checkpoint",
    "refuse_if_different",
    "write_bytes",
    "write_json",
    "write_text",
]

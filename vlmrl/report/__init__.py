"""Inspecting runs: videos with a reward overlay, plots, the HTML run report, reward-evaluation pages.

The agreement numbers themselves (Spearman, Kendall, EPIC) live next to the rewards, in :mod:`vlmrl.rewards.quality`.

Import the parts directly (``from vlmrl.report.run_report import write_report``); this package
imports nothing itself so that importing one part never pulls in matplotlib or a browser.
"""

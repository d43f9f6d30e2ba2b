"""Inspecting runs: videos with a reward overlay, plots, the HTML run report, reward-quality analysis.

Import the parts directly (``from vlmrl.report.run_report import write_report``); this package
imports nothing itself so that importing one part never pulls in matplotlib or a browser.
"""

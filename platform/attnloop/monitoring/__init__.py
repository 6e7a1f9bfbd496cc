"""Production monitoring: the scoring rows summarised over time per line (:mod:`.stats`), drift
against the serving model's reference (:mod:`.reference`, :mod:`.drift`), and the alerts a monitor
run raises (:mod:`.run`, thresholds in :mod:`.thresholds`). The flow is ``flows/monitor.py``; the page
``attnloop.apps.monitor_page``. docs/architecture.md shows where it sits in the data flow.
"""

"""The phishing application, a plugin on the core: brand galleries, the (screenshot, URL) detector, capture and
triage of reported links, its CLI commands (cli.py) and its :classify hook for the server (serving.py)."""

from cnnkit.apps.phishing.check import Detector
from cnnkit.apps.phishing.decision import Verdict

__all__ = ["Detector", "Verdict"]

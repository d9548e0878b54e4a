"""Clinical safety: the detector that decides, before any conversation sees a client's
free text, whether it takes the crisis path (``risk``), the boundary response (``boundary``:
rescripting or memory work, which happen only in a session) or neither (``none``).

    from bot.safety import SafetyDetector, Verdict
    detector = SafetyDetector.from_content()
    detector.classify("Can you guide me through rescripting?")   # Verdict("boundary", ...)

The rules are data: ``content/safety_rules.<language>.yaml`` (content/README.md).
"""

from bot.safety.detector import SafetyDetector, Verdict, default_detector
from bot.safety.normalise import base_tokens, fold
from bot.safety.rules import ROUTES, SafetyRulesError, example_problems, load_rules

__all__ = [
    "ROUTES",
    "SafetyDetector",
    "SafetyRulesError",
    "Verdict",
    "base_tokens",
    "default_detector",
    "example_problems",
    "fold",
    "load_rules",
]

"""The streetlight's commands (docs/protocol.md section 8): loaded when one arrives, then
dropped again (:meth:`roles.streetlight_core.StreetlightCore.command`), since they are rare.

``lamp.mode`` (auto/on/off), ``lamp.level`` (0-100: the level of mode "on", and in auto mode
the level for the rest of the night), ``lamp.schedule`` (the dimming profile), ``lamp.test``
(``s`` seconds at 100 %, then back to the mode before).
"""

_MODES = ("auto", "on", "off")


def profile_error(v):
    """None when ``v`` is a valid dimming profile, else what is wrong (as the gateway checks)."""
    if not isinstance(v, list) or not 0 < len(v) <= 8:
        return "a list of 1 to 8 [minutes after dusk, level] pairs"
    for p in v:
        if not (isinstance(p, list) and len(p) == 2):
            return "a list of [minutes after dusk, level] pairs"
        for x, hi in ((p[0], 900), (p[1], 100)):
            if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= hi:
                return "pairs of minutes 0-900 and levels 0-100"
    return None


def apply(core, op, a, now):
    """Apply ``op`` with arguments ``a`` to ``core``; None when done, else an error code."""
    if not isinstance(a, dict):
        return "arg"
    if op == "lamp.mode":
        m = a.get("mode")
        if m not in _MODES:
            return "range"
        core._test_until = core._test_prev = None
        core.mode = m
    elif op == "lamp.level":
        lv = a.get("level")
        if not isinstance(lv, int) or isinstance(lv, bool) or not 0 <= lv <= 100:
            return "range"
        core.manual = lv
        core.night_level = lv
    elif op == "lamp.schedule":
        p = a.get("profile")
        if profile_error(p):
            return "range"
        core.profile = sorted(p)
    elif op == "lamp.test":
        s = a.get("s")
        if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= 600:
            return "range"
        if core._test_until is None:
            core._test_prev = core.mode
        core.mode = "test"
        core._test_until = now + s
    else:
        return "op"
    return None

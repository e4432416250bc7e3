# Pet scanner logic (roles.petscan_core) on MicroPython. Prints JSON lines {"k": ...};
# run by tests/test_role_petscan.py. GOOD/BAD tags come from the test (made by linli.pettag).
from rolesim import heap, out

from roles import settings
from roles.petscan_core import PetscanCore

heap("imported")


def core(**kw):
    return PetscanCore(settings.load("petscan", kw))


def trace(c, t0, t1, step=10):
    """(ms, colour, pattern) each time the LED changes between t0 and t1 (ticks every step)."""
    seen = []
    prev = None
    for now in range(t0, t1, step):
        c.tick(now)
        if c.led != prev:
            seen.append([now, c.led[0], c.led[1]])
            prev = c.led
    return seen


def online():
    c = core()
    ev = c.scan(GOOD, 1000, online=True)
    led0 = list(c.led)
    before = trace(c, 1000, 1180)
    shown = c.answer({"tag": GOOD_ID, "status": "green", "buzz": "ok"}, 1180)
    out("online", ev=ev, led0=led0, before=before, shown=shown, led=list(c.led), buzz=c.take_buzz(), buzz2=c.take_buzz(),
        after=trace(c, 1180, 6000))


def no_answer():
    c = core()
    ev = c.scan(GOOD, 1000, online=True)
    seen = trace(c, 1000, 1700)
    buzz = c.take_buzz()
    late = c.answer({"tag": GOOD_ID, "status": "red", "buzz": "alarm"}, 2500)
    out("no_answer", ev=ev, seen=seen, buzz=buzz, late=late, led=list(c.led), buzz2=c.take_buzz())
    # Too late: after answer_ms + late_ms the answer is not shown any more.
    c = core(late_ms=1000)
    c.scan(GOOD, 1000, online=True)
    trace(c, 1000, 3000)
    out("too_late", shown=c.answer({"tag": GOOD_ID, "status": "green"}, 3000), led=list(c.led))


def offline():
    c = core()
    ev = c.scan(GOOD, 1000, online=False)
    out("offline", ev=ev, led=list(c.led), buzz=c.take_buzz(), seen=trace(c, 1000, 6000, 50))


def rejected():
    c = core()
    res = []
    for text in BAD:
        res.append([text, c.scan(text, 1000), list(c.led), c.take_buzz()])
    out("rejected", res=res, count=c.rejected)


def repeats():
    c = core(repeat_ms=3000)
    sent = []
    for now in range(0, 10000, 200):  # held in front of the scanner for 10 s: one scan
        if c.scan(GOOD, now):
            sent.append(now)
    sent2 = []
    for now in (14000, 14100, 20000):  # taken away for 4 s, shown again: a new scan
        if c.scan(GOOD, now):
            sent2.append(now)
    other = c.scan(GOOD2, 20050)
    out("repeats", sent=sent, sent2=sent2, other=other is not None)


def wrong_answer():
    c = core()
    c.scan(GOOD, 1000)
    a = c.answer({"tag": "ZZZZZZZZ", "status": "green"}, 1100)
    b = c.answer({"tag": GOOD_ID, "status": "purple"}, 1100)
    forged = c.answer({"tag": None, "status": "red", "buzz": "alarm"}, 1200)
    out("wrong_answer", other_pet=a, bad_status=b, forged=forged, led=list(c.led), buzz=c.take_buzz())
    c = core()
    out("unsolicited", shown=c.answer({"tag": GOOD_ID, "status": "green"}, 10))


def button():
    c = core(debounce_ms=50, fouling_gap_s=10)
    c.scan(GOOD, 1000)
    evs = []
    # idle high (pull-up), a bouncy press at 5000, release at 5400; another press at 8000
    # (within the gap: ignored) and at 20000 (sent, the scan is now old... still < 120 s).
    script = [(5000, 0), (5003, 1), (5006, 0), (5010, 1), (5015, 0), (5400, 1), (5404, 0), (5408, 1), (8000, 0), (8300, 1),
              (20000, 0), (20500, 1), (200000, 0), (200500, 1)]
    level = 1
    i = 0
    for now in range(4000, 201000, 5):
        while i < len(script) and script[i][0] <= now:
            level = script[i][1]
            i += 1
        e = c.button(level, now, online=now < 100000)
        if e:
            e["at"] = now
            e["led"] = c.led[0]
            e["buzz"] = c.take_buzz()
            evs.append(e)
    out("button", events=evs)


online()
no_answer()
offline()
rejected()
repeats()
wrong_answer()
button()
heap("end")

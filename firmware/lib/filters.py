"""Small filters for noisy sensor readings, and the ultrasound temperature compensation.

Each filter keeps its window in lists allocated once, in the constructor; ``add()`` allocates
nothing for int readings::

    from filters import Median, Hampel, EMA, echo_mm

    med = Median(5)
    level = med.add(mm)              # median of the last 5 readings (of fewer at the start)

    spikes = Hampel(7, k=3, floor=20)
    mm = spikes.add(raw_mm)          # a spike comes back as the window's median instead
    if spikes.last_rejected:
        log("sonar: spike of %d mm dropped", raw_mm)

    ema = EMA(0.2)
    smooth = ema.add(lux)

    mm = echo_mm(echo_us, t_c=31.5)  # HC-SR04 echo time -> mm at 31.5 degC air
"""


def _median(src, tmp, k):
    """Median of ``src[0:k]``, sorted in ``tmp`` (insertion sort: k is small, nothing allocated)."""
    for i in range(k):
        x = src[i]
        j = i
        while j and tmp[j - 1] > x:
            tmp[j] = tmp[j - 1]
            j -= 1
        tmp[j] = x
    m = k >> 1
    if k & 1:
        return tmp[m]
    return (tmp[m - 1] + tmp[m]) / 2


def median(values):
    """Median of a list (sorted in place); the mean of the two middle values for an even count."""
    k = len(values)
    if not k:
        raise ValueError("median of nothing")
    values.sort()
    m = k >> 1
    if k & 1:
        return values[m]
    return (values[m - 1] + values[m]) / 2


class Median:
    """Running median of the last ``n`` readings (``n`` odd is best: no averaging)."""

    def __init__(self, n=5):
        if n < 1:
            raise ValueError("Median window %d < 1" % n)
        self._win = [0] * n
        self._tmp = [0] * n
        self._i = 0
        self.count = 0

    def add(self, x):
        """Add a reading; return the median of the window so far."""
        win = self._win
        n = len(win)
        win[self._i] = x
        self._i = (self._i + 1) % n
        if self.count < n:
            self.count += 1
        return _median(win, self._tmp, self.count)

    def reset(self):
        self._i = 0
        self.count = 0


class Hampel:
    """Outlier rejection: a reading further than ``k`` robust sigmas from the median of the
    last ``n`` readings is replaced by that median.

    The robust sigma is 1.4826 * MAD (median absolute deviation), never below ``floor`` (in the
    readings' unit), so a perfectly steady window does not reject every small change. The raw
    reading still enters the window: a real step (a bin just emptied) is accepted once it has
    filled half the window, a lone spike never is. The first 3 readings pass unchecked.
    """

    def __init__(self, n=7, k=3, floor=0):
        if n < 3:
            raise ValueError("Hampel window %d < 3" % n)
        self._win = [0] * n
        self._tmp = [0] * n
        self._i = 0
        self.count = 0
        self._k = k * 1.4826
        self._floor = floor
        self.rejected = 0
        self.last_rejected = False

    def add(self, x):
        """Add a reading; return it, or the window's median if it is an outlier."""
        win = self._win
        tmp = self._tmp
        k = self.count
        out = x
        self.last_rejected = False
        if k >= 3:
            med = _median(win, tmp, k)
            for i in range(k):
                d = win[i] - med
                tmp[i] = -d if d < 0 else d
            # Sorted in place: insertion sort reads tmp[i] before it writes anything at or past i.
            mad = _median(tmp, tmp, k)
            limit = self._k * mad
            if limit < self._floor:
                limit = self._floor
            d = x - med
            if (-d if d < 0 else d) > limit:
                out = med
                self.rejected += 1
                self.last_rejected = True
        n = len(win)
        win[self._i] = x
        self._i = (self._i + 1) % n
        if k < n:
            self.count = k + 1
        return out

    def reset(self):
        self._i = 0
        self.count = 0


class EMA:
    """Exponential moving average: ``value += alpha * (x - value)``; the first reading seeds it."""

    def __init__(self, alpha):
        if not 0 < alpha <= 1:
            raise ValueError("EMA alpha %r outside (0, 1]" % (alpha,))
        self.alpha = alpha
        self.value = None

    def add(self, x):
        v = self.value
        self.value = x if v is None else v + self.alpha * (x - v)
        return self.value

    def reset(self):
        self.value = None


def speed_of_sound(t_c=20):
    """Speed of sound in dry air in m/s at ``t_c`` degC: 331.3 + 0.606 * T."""
    return 331.3 + 0.606 * t_c


def echo_mm(echo_us, t_c=20):
    """Distance in mm (rounded) from a round-trip echo time in us, in air at ``t_c`` degC."""
    # echo_us * c [m/s] = echo_us * c / 1000 mm there and back: half of it is the distance.
    return int(echo_us * speed_of_sound(t_c) / 2000 + 0.5)


def compensate_mm(mm, t_c, ref_c=20):
    """Rescale a distance a module computed for air at ``ref_c`` degC to air at ``t_c`` degC."""
    return int(mm * speed_of_sound(t_c) / speed_of_sound(ref_c) + 0.5)

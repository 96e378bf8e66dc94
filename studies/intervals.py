"""The words an interval needs beside it: that it rests on too few values to mean much, and that a
bound lies where its metric cannot (docs/tuning.md, "Intervals over few runs"). studies.tune writes
t-intervals of means, studies.compare bootstrap intervals of differences."""
from errors import counted

# The fewest values an interval of each kind needs to mean much, from what it does below them (95%):
# a t-interval's half-width is t(0.975, n - 1) standard errors, 12.71, 4.30 and 3.18 at n = 2, 3 and 4
# (2.78 at 5), of a standard deviation itself estimated from n - 1 = 1 to 3 degrees of freedom;
# scipy's bootstrap interval (BCa) of the mean of n normal values held the true mean in 51% of 1000
# draws at n = 2, 83% at 5, 89% at 8 and 90% at 10 (93% at 20).
FEWEST = {"t": 5, "bootstrap": 10}


def too_few(n, kind, described, confidence=0.95):
    """The words for an interval of `kind` ("t" or "bootstrap") over `n` values, `described` saying
    what they are (e.g. "2 models"); None when they are enough."""
    if n >= FEWEST[kind]:
        return None
    if n < 2:
        return f"n = {described}: no interval, the one value itself"
    if kind == "t":
        from scipy import stats

        why = (f"its half-width is {stats.t.ppf((1 + confidence) / 2, n - 1):.2f} standard errors, of a spread "
               f"estimated on {counted(n - 1, 'degree', 'degrees')} of freedom")
    else:
        why = "below that it holds the true value less often than its level says"
    return f"n = {described}: too few for a {kind} interval to mean much ({why}; {FEWEST[kind]} or more)"


def beyond_range(intervals):
    """The words for the bounds of t-intervals ({metric: (low, high)}) that lie outside the values their
    metric can take; None when every bound is one the metric can take."""
    from evaluation import metrics

    outside = []
    for name, interval in intervals.items():
        lowest, highest = metrics.bounds(name)
        bounds = [f"{bound:.4f}" for bound in interval if not lowest <= bound <= highest]
        if bounds:
            outside.append(f"{name} {' and '.join(bounds)} (its range [{lowest:g}, {highest:g}])")
    if not outside:
        return None
    return (f"beyond the metric's range: {', '.join(outside)}: the t-interval's bounds (mean ± t x standard "
            "error), not values the metric can take")

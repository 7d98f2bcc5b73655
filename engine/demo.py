"""Deterministic synthetic gateway traffic: a realistic tenant population plus scripted incidents.

Throughput: ~2.1 M rows/s on one core. generate_day(rows=5_000_000) takes ~2.3 s of CPU (2.2 s wall on
an idle core, ~3 s on a busy shared one); numpy 2.4, pyarrow 26.

Each day is drawn, fully vectorised, from its own RNG seeded by (seed, day ordinal). The population
(masters, keys, models, providers) is fixed, so INCIDENTS and DEMO_QUOTAS can name its ids.

Quiet by construction. The alert seed defaults judge 5-minute windows of >= 20 requests, and plain
random failures would trip them by chance on keys and masters with ~20-60 requests a window. So a
request whose key (master) has < 20 requests within +-5 minutes may fail freely: no judged window can
contain it. A "dense" one may only fail on its key's failure slots, every 20th request of that key
(for 429s: every 40th of its master, and only where every window around it holds >= 21 requests).
Any window of n >= 20 requests then has < 10 % errors and < 5 % 429s, wherever it starts. No baseline
failure falls within 5 minutes of midnight, so windows across two generated days are clean too. Only
the incidents, in their windows and scopes, break these rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.schema import LOG_RECORD_SCHEMA

_MINUTE = 60_000_000  # microseconds
_DAY = 1440 * _MINUTE
_MAX_ROWS = 20_000_000  # request ids hold 8 digits; string columns must fit 32-bit offsets

# Quiet traffic, see the module docstring.
_MIN_SAMPLES = 20
_KEY_SLOT = 20
_MASTER_SLOT = 40
_EDGE = 5 * _MINUTE
_ERROR_RATE = 0.01  # baseline errors (4xx/5xx other than 429), refusals included
_LIMIT_RATE = 0.003  # baseline 429s

# ---------------------------------------------------------------------------------------------------
# The fixed population
# ---------------------------------------------------------------------------------------------------

_GROUPS = ("default", "vip", "batch")
_GROUP_PRICE = np.array([1.0, 1.5, 0.5], np.float32)  # billing multiplier of the group
_GROUP_STREAM = np.array([0.72, 0.75, 0.05], np.float32)  # share of streams: batch jobs rarely stream

_PROVIDERS = (  # provider_id, provider_type, number of provider keys (provider_key_id = id * 100 + n)
    (1, "openai", 5),
    (2, "openai", 3),
    (3, "openai", 4),
    (4, "anthropic", 4),
    (5, "anthropic", 2),
    (6, "claude_code", 5),
    (7, "gemini", 3),
    (8, "gemini", 2),
    (9, "codex", 4),
    (10, "openai", 2),  # an OpenAI-compatible endpoint in front of Qwen
)
_PROVIDER_TYPES = ("openai", "anthropic", "gemini", "codex", "claude_code")
_IP_POOL = pa.array([f"203.0.113.{i}" for i in range(1, 33)] + [f"198.51.100.{i}" for i in range(1, 33)])
_OPENAI = ((1, 0.6), (2, 0.25), (3, 0.15))
_ANTHROPIC = ((4, 0.75), (5, 0.25))
_GEMINI = ((7, 0.8), (8, 0.2))


class _Model(NamedTuple):
    name: str
    price: float  # quota units per prompt token (500,000 units = $1)
    completion_price: float  # a completion token costs this many prompt tokens
    ttft_ms: float  # median time to first token
    ms_per_token: float
    completion_median: float
    share: tuple[float, float, float]  # traffic weight in the default, vip and batch groups
    providers: tuple[tuple[int, float], ...]  # (provider_id, routing weight)


_MODELS = (
    _Model("gpt-4o-mini", 0.075, 4, 350, 9, 220, (25, 10, 45), _OPENAI),
    _Model("gpt-4o", 1.25, 4, 600, 18, 300, (18, 28, 5), _OPENAI),
    _Model("gpt-4.1", 1.0, 4, 550, 16, 320, (5, 8, 3), _OPENAI),
    _Model("o1-mini", 0.55, 4, 2500, 12, 1200, (4, 6, 0), _OPENAI),
    _Model("claude-3-5-sonnet", 1.5, 5, 800, 20, 350, (16, 22, 4), _ANTHROPIC),
    _Model("claude-3-haiku", 0.125, 5, 400, 8, 200, (8, 3, 20), _ANTHROPIC),
    _Model("claude-sonnet-4", 1.5, 5, 900, 22, 450, (5, 8, 0), ((6, 0.7), (4, 0.3))),
    _Model("gemini-1.5-pro", 0.625, 4, 700, 15, 320, (6, 7, 3), _GEMINI),
    _Model("gemini-1.5-flash", 0.0375, 4, 300, 6, 200, (8, 3, 18), _GEMINI),
    _Model("codex-mini-latest", 0.75, 4, 700, 14, 600, (4, 4, 2), ((9, 1.0),)),
    _Model("通义千问-max", 0.8, 3, 600, 18, 280, (1, 1, 0), ((10, 1.0),)),
)


class _Outcome(NamedTuple):
    status: int
    latency_ms: float  # median latency of a failure; a success's latency follows from its tokens
    latency_sigma: float
    error_type: str | None = None
    message: str | None = None
    refused: bool = False  # by the gateway itself, before routing: no provider


_OUTCOMES = {
    "ok": _Outcome(200, 0, 0),
    "bad_request": _Outcome(400, 250, 0.6, "invalid_request", "max_tokens exceeds the context window"),
    "upstream_auth": _Outcome(401, 200, 0.5, "auth_error", "Upstream rejected the provider key"),
    "server_error": _Outcome(500, 900, 0.7, "upstream_error", "Upstream returned 500 Internal Server Error"),
    "bad_gateway": _Outcome(502, 700, 0.7, "upstream_error", "Bad gateway: upstream connection reset"),
    "unavailable": _Outcome(503, 500, 0.6, "upstream_error", "Service unavailable: model overloaded"),
    "timeout": _Outcome(504, 60_000, 0.01, "timeout", "Upstream did not answer within 60 s"),
    "upstream_limit": _Outcome(429, 150, 0.5, "rate_limited", "Upstream rate limit reached"),
    "refused_limit": _Outcome(429, 4, 0.5, "rate_limited", "Rate limit exceeded for this account", True),
    "refused_auth": _Outcome(401, 4, 0.5, "auth_error", "Invalid or revoked API key", True),
    "refused_forbidden": _Outcome(403, 5, 0.5, "forbidden", "Model not allowed for this key's group", True),
}
_OUTCOME = {name: i for i, name in enumerate(_OUTCOMES)}
# Failure mixes, by weight.
_BASELINE_MIX = {
    "bad_request": 35,
    "upstream_auth": 4,
    "server_error": 14,
    "bad_gateway": 12,
    "unavailable": 12,
    "timeout": 13,
    "refused_auth": 5,
    "refused_forbidden": 5,
}
_SPIKE_MIX = {"bad_request": 40, "server_error": 20, "bad_gateway": 20, "timeout": 20}
_OUTAGE_MIX = {"bad_gateway": 50, "unavailable": 50}
_LIMIT_MIX = {"upstream_limit": 2, "refused_limit": 1}  # a third from the gateway's own limiter


def _cumulative(weight: np.ndarray) -> np.ndarray:
    """Cumulative distribution of the weights, ending exactly at 1.0."""
    cum = np.cumsum(weight, dtype=np.float64) / np.sum(weight)
    cum[-1] = 1.0
    return cum


class _Categorical:
    """Categorical distributions sampled by table lookup: one multiply and one gather a row.

    Each distribution is cut into 2**bits equal cells, a cell taking the value its midpoint falls in,
    so a category's probability is off by < 2**-bits. (searchsorted over a few hundred categories
    costs ~80 ns a row on random input, several times this.)
    """

    def __init__(self, weights: list[np.ndarray], values: list[np.ndarray] | None = None, bits: int = 12):
        midpoints = (np.arange(1 << bits) + 0.5) / (1 << bits)
        tables = []
        for i, weight in enumerate(weights):
            value = np.arange(len(weight)) if values is None else np.asarray(values[i])
            tables.append(value[np.searchsorted(_cumulative(weight), midpoints)])
        self._bits = bits
        self._lookup = np.concatenate(tables).astype(np.int16)

    def draw(self, u: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        """The value drawn for each uniform u in [0, 1), from distribution `table[i]` (default the first)."""
        cell = (u * (1 << self._bits)).astype(np.int32)  # exact: a power-of-two multiple of u < 1
        if table is not None:
            cell += np.left_shift(table, self._bits, dtype=np.int32)
        return self._lookup[cell]


def _masters() -> tuple[np.ndarray, np.ndarray]:
    """Master ids in Zipf rank order (busiest first) and each one's share of the traffic."""
    ranks = np.arange(1, 201)
    ids = (ranks * 37) % 200 + 1  # a fixed permutation: the busiest tenants are not ids 1, 2, 3...
    weight = ranks**-1.05
    return ids.astype(np.int64), weight / weight.sum()


def _keys_of(master_ids: np.ndarray, master_share: np.ndarray) -> dict[str, np.ndarray]:
    """All keys: 1-20 per master (big tenants have more), key_id = master_id * 100 + n."""
    keys: list[tuple[int, int, int, float, int]] = []
    for rank, (master_id, share) in enumerate(zip(master_ids.tolist(), master_share, strict=True)):
        n_keys = int(np.clip(round(20 * (rank + 1) ** -0.55) + (rank * 7919) % 3 - 1, 1, 20))
        weight = np.arange(1, n_keys + 1) ** -1.2
        for n, key_share in enumerate(weight / weight.sum(), start=1):
            # A tenant's first key is its default one; the others mix groups by a fixed hash.
            group = 0 if n == 1 else (0, 0, 0, 1, 1, 2, 2)[(master_id * 31 + n * 17) % 7]
            # A key runs on one machine; a tenant's keys share 1-3 addresses of the pool.
            ip = (rank * 7 + n % (1 + rank % 3)) % len(_IP_POOL)
            keys.append((master_id * 100 + n, rank, group, share * key_share, ip))
    columns = list(zip(*keys, strict=True))
    return {
        "key_id": np.array(columns[0], np.int64),
        "master": np.array(columns[1], np.uint8),  # small ints: a stable argsort is a radix sort
        "group": np.array(columns[2], np.int8),
        "share": np.array(columns[3], np.float64),
        "ip": np.array(columns[4], np.int8),
    }


def _routing() -> _Categorical:
    """Per model, the provider key serving a request: providers by weight, their keys by 1/sqrt(n)."""
    weights, values = [], []
    for model in _MODELS:
        routes = [
            (_PK_INDEX[p * 100 + n], w / np.sqrt(n))
            for p, w in model.providers
            for n in range(1, _PROVIDERS[p - 1][2] + 1)
        ]
        values.append(np.array([pk for pk, _ in routes]))
        weights.append(np.array([w for _, w in routes]))
    return _Categorical(weights, values)


_MASTER_IDS, _MASTER_SHARE = _masters()
_KEYS = _keys_of(_MASTER_IDS, _MASTER_SHARE)
_KEY_INDEX = {int(k): i for i, k in enumerate(_KEYS["key_id"])}
_PK_ID = np.array([p * 100 + n for p, _, count in _PROVIDERS for n in range(1, count + 1)], np.int64)
_PK_PROVIDER = _PK_ID // 100
_PK_TYPE = np.array([_PROVIDER_TYPES.index(t) for _, t, count in _PROVIDERS for _ in range(count)], np.int8)
_PK_INDEX = {int(k): i for i, k in enumerate(_PK_ID)}

_KEY_SAMPLER = _Categorical([_KEYS["share"]], bits=20)  # 2 MB; the rarest key still gets ~230 cells
_MODEL_SAMPLER = _Categorical([np.array([m.share[g] for m in _MODELS], np.float64) for g in range(3)])
_ROUTE_SAMPLER = _routing()
_MODEL_ATTR = {
    name: np.array([getattr(m, name) for m in _MODELS], np.float32)
    for name in ("price", "completion_price", "ttft_ms", "ms_per_token", "completion_median")
}
_STATUS = np.array([o.status for o in _OUTCOMES.values()], np.int16)
_REFUSED = np.array([o.refused for o in _OUTCOMES.values()])
_FAIL_LATENCY = np.array([(o.latency_ms, o.latency_sigma) for o in _OUTCOMES.values()], np.float32)
_ERROR_TYPES = pa.array([o.error_type for o in _OUTCOMES.values()], pa.string())
_ERROR_MESSAGES = pa.array([o.message for o in _OUTCOMES.values()], pa.string())
_GROUP_NAMES = pa.array(_GROUPS)
_MODEL_NAMES = pa.array([m.name for m in _MODELS])
_PROVIDER_TYPE_NAMES = pa.array(_PROVIDER_TYPES)

# ---------------------------------------------------------------------------------------------------
# Incidents and quotas
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """A scripted anomaly that recurs on every generated day, in [start, end) after 00:00 UTC.

    `scope` is `master`, `key` or `provider_key` and `scope_id` that entity's id; `alert_type` is the
    alert a correct detector raises for it.
    """

    name: str
    alert_type: str
    scope: str
    scope_id: int
    start: dt.timedelta
    end: dt.timedelta
    description: str

    def window(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """The incident's [start, end) on `day`, as aware UTC datetimes."""
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        return midnight + self.start, midnight + self.end


def _clock(hh_mm: str) -> dt.timedelta:
    hours, minutes = hh_mm.split(":")
    return dt.timedelta(hours=int(hours), minutes=int(minutes))


def _top_key(master_rank: int) -> int:
    """The busiest key of the master with this Zipf rank (1 = busiest)."""
    return int(_MASTER_IDS[master_rank - 1]) * 100 + 1


INCIDENTS: tuple[Incident, ...] = (
    Incident(
        name="provider_key_outage",
        alert_type="provider_down",
        scope="provider_key",
        scope_id=101,
        start=_clock("09:00"),
        end=_clock("09:30"),
        description="the main OpenAI provider key (~10 % of traffic) fails ~98 % of requests with 502/503",
    ),
    Incident(
        name="key_error_spike",
        alert_type="error_spike",
        scope="key",
        scope_id=_top_key(1),
        start=_clock("11:00"),
        end=_clock("11:30"),
        description="the busiest key (~7 % of traffic) fails ~40 % of requests with 400/500/502/504",
    ),
    Incident(
        name="master_traffic_spike",
        alert_type="traffic_spike",
        scope="master",
        scope_id=int(_MASTER_IDS[11]),
        start=_clock("14:00"),
        end=_clock("14:20"),
        description="a mid-size master (Zipf rank 12, ~1.4 % of traffic) sends 8x its usual rate",
    ),
    Incident(
        name="master_rate_limit_storm",
        alert_type="rate_limit",
        scope="master",
        scope_id=int(_MASTER_IDS[2]),
        start=_clock("16:00"),
        end=_clock("16:30"),
        description="the gateway refuses ~60 % of a busy master's requests with 429 rate_limited",
    ),
    Incident(
        name="key_near_quota",
        alert_type="quota_exceeded",
        scope="key",
        scope_id=_top_key(6),
        start=_clock("20:00"),
        end=_clock("24:00"),
        description="a key crosses 90 % of its daily quota inside this window and ends the day at 95 %",
    ),
)
_OUTAGE, _SPIKE, _SURGE, _STORM, _QUOTA = INCIDENTS
_SURGE_RANK = _MASTER_IDS.tolist().index(_SURGE.scope_id)
_STORM_RANK = _MASTER_IDS.tolist().index(_STORM.scope_id)
_SURGE_OWN_KEYS = np.flatnonzero(_KEYS["master"] == _SURGE_RANK)
_SURGE_KEYS = _Categorical([_KEYS["share"][_SURGE_OWN_KEYS]], [_SURGE_OWN_KEYS])
_OUTAGE_PROVIDER = _OUTAGE.scope_id // 100
_OUTAGE_MODELS = np.array([any(p == _OUTAGE_PROVIDER for p, _ in m.providers) for m in _MODELS])
_HEALTHY_PKS = np.array(
    [i for i, pk in enumerate(_PK_ID.tolist()) if pk // 100 == _OUTAGE_PROVIDER and pk != _OUTAGE.scope_id]
)

_QUOTA_LIMIT = 40_000_000  # $80 a day; about what the key would spend at 1,000,000 rows a day
_QUOTA_EVENING_SHARE = 0.15  # of the limit, spent after 20:00: 90 % is crossed inside the window
_QUOTA_DAY_SHARE = 0.95

DEMO_QUOTAS: dict[int, tuple[int, str]] = {
    # The near-quota key: its quota_cost is rescaled each day, keeping the relative costs of its
    # requests, to exactly 80 % of the limit before 20:00 and 95 % by midnight. So the limit holds at
    # any rows_per_day; the price of one of its requests is what scales with rows_per_day.
    _QUOTA.scope_id: (_QUOTA_LIMIT, "daily"),
    # Comfortable quotas: under 30 % used per period even at 5,000,000 rows a day (30 days for never).
    int(_MASTER_IDS[1]) * 100 + 2: (50_000_000_000, "monthly"),
    _top_key(40): (2_000_000_000, "weekly"),
    _top_key(150): (3_000_000_000, "never"),
}

# ---------------------------------------------------------------------------------------------------
# One day
# ---------------------------------------------------------------------------------------------------


def _us(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _window(t: np.ndarray, incident: Incident) -> np.ndarray:
    """Indices of the requests inside the incident's window (t is sorted, so a range)."""
    lo, hi = np.searchsorted(t, [_us(incident.start), _us(incident.end)])
    return np.arange(lo, hi)


def _timestamps(rng: np.random.Generator, rows: int, surge: float) -> np.ndarray:
    """Strictly increasing microseconds after midnight, following the diurnal curve.

    Sorted uniforms come from normalised exponential spacings, mapped through the inverse CDF of a
    per-minute rate: no sort needed.
    """
    hours = (np.arange(1440) + 0.5) / 60
    # One broad peak over the European afternoon and American morning, quiet around 02:00-04:00.
    rate = 1 + 0.62 * np.cos(2 * np.pi * (hours - 14.5) / 24) + 0.1 * np.cos(4 * np.pi * (hours - 10) / 24)
    rate[_us(_SURGE.start) // _MINUTE : _us(_SURGE.end) // _MINUTE] *= 1 + surge
    cdf = np.concatenate(([0.0], _cumulative(rate)))
    spacing = np.cumsum(rng.standard_exponential(rows + 1))
    t = np.interp(spacing[:-1] / spacing[-1], cdf, np.arange(1441) * float(_MINUTE)).astype(np.int64)
    # Ties would make a scope's order ambiguous: nudge them apart by a microsecond, inside the day.
    index = np.arange(rows, dtype=np.int64)
    t = np.minimum(t, _DAY - rows + index)
    return np.maximum.accumulate(t - index) + index


def _draw_keys(rng: np.random.Generator, t: np.ndarray, surge: float) -> np.ndarray:
    """Key index per request, Zipf-skewed; in its window, the surge master's extra requests.

    The surge window's rate is (1 + surge) times the usual one and a surge / (1 + surge) share of it
    goes to the surge master on top of its own share, multiplying its rate by 1 + surge / share.
    """
    key = _KEY_SAMPLER.draw(rng.random(len(t)))
    window = _window(t, _SURGE)
    extra = window[rng.random(len(window)) < surge / (1 + surge)]
    key[extra] = _SURGE_KEYS.draw(rng.random(len(extra)))
    return key


class _Sequence:
    """Each scope's (key's or master's) requests in time order: failure slots and neighbour counts."""

    def __init__(self, scope: np.ndarray, n_scopes: int, t: np.ndarray, slot: int, rng: np.random.Generator):
        self._scope, self._t = scope, t
        order = np.argsort(scope, kind="stable")  # a radix sort; a scope's rows stay in time order
        self._sorted = ((scope.astype(np.int64) << 37) + t)[order]  # as _position: t < 2**37
        # Slots: every `slot`-th request of a scope from a random first one, as sorted positions.
        size = np.bincount(scope, minlength=n_scopes)
        first = rng.integers(0, slot, n_scopes)
        per_scope = np.maximum(size - first + slot - 1, 0) // slot
        step = np.arange(per_scope.sum()) - np.repeat(np.cumsum(per_scope) - per_scope, per_scope)
        self.slot = np.zeros(len(t), bool)
        self.slot[order[np.repeat(np.cumsum(size) - size + first, per_scope) + step * slot]] = True

    def _position(self, rows: np.ndarray, shift: int = 0) -> np.ndarray:
        """(scope, time + shift) as one sortable integer; times are < 2**37 microseconds."""
        return (self._scope[rows].astype(np.int64) << 37) + np.clip(self._t[rows] + shift, 0, _DAY - 1)

    def count(self, rows: np.ndarray, before: int, after: int) -> np.ndarray:
        """Requests of each row's scope in [t - before, t + after], within the day."""
        # Queries in (scope, time) order walk the sorted array forward, ~3x faster than in time order.
        order = np.argsort(self._position(rows))
        rows = rows[order]
        hi = np.searchsorted(self._sorted, self._position(rows, after), side="right")
        lo = np.searchsorted(self._sorted, self._position(rows, -before), side="left")
        counts = np.empty(len(rows), np.int64)
        counts[order] = hi - lo
        return counts

    def dense(self, rows: np.ndarray) -> np.ndarray:
        """Whether a 5-minute window around each row may hold >= _MIN_SAMPLES requests of its scope."""
        return self.count(rows, 5 * _MINUTE, 5 * _MINUTE) >= _MIN_SAMPLES


def _mix(rng: np.random.Generator, mix: dict[str, int], size: int) -> np.ndarray:
    """`size` outcome indices drawn from a {outcome name: weight} mix."""
    cum = _cumulative(np.array(list(mix.values()), np.float64))
    outcomes = np.array([_OUTCOME[name] for name in mix], np.int8)
    return outcomes[np.searchsorted(cum, rng.random(size), side="right")]


def _reroute_outage(
    rng: np.random.Generator, t: np.ndarray, model: np.ndarray, pk: np.ndarray, keys: _Sequence
) -> None:
    """During the outage, route to the failing provider key only requests that may fail.

    Sparse keys keep their routes. A dense key's requests go there only on that key's failure slots
    and otherwise to the provider's healthy keys (as a health check sheds load), so the outage
    raises no error spike on the keys using it.
    """
    outage_pk = _PK_INDEX[_OUTAGE.scope_id]
    rows = _window(t, _OUTAGE)
    rows = rows[_OUTAGE_MODELS[model[rows]]]
    dense = keys.dense(rows)
    pk[rows[dense & keys.slot[rows]]] = outage_pk
    shed = rows[dense & ~keys.slot[rows] & (pk[rows] == outage_pk)]
    pk[shed] = _HEALTHY_PKS[rng.integers(0, len(_HEALTHY_PKS), len(shed))]


def _baseline(rng: np.random.Generator, t: np.ndarray, keys: _Sequence, masters: _Sequence) -> np.ndarray:
    """Outcome index per request, incidents aside: ~1 % errors and ~0.3 % 429s, quiet by design."""
    outcome = np.zeros(len(t), np.int8)
    lo, hi = np.searchsorted(t, [_EDGE, _DAY - _EDGE])

    u = rng.random(hi - lo, dtype=np.float32)
    rows = lo + np.flatnonzero((u < _ERROR_RATE) | (keys.slot[lo:hi] & (u < _ERROR_RATE * _KEY_SLOT)))
    hit = np.where(keys.dense(rows), keys.slot[rows], u[rows - lo] < _ERROR_RATE)
    outcome[rows[hit]] = _mix(rng, _BASELINE_MIX, int(hit.sum()))

    u = rng.random(hi - lo, dtype=np.float32)
    rows = lo + np.flatnonzero((u < _LIMIT_RATE) | (masters.slot[lo:hi] & (u < _LIMIT_RATE * _MASTER_SLOT)))
    # A judged window around a 429 must hold >= 21 requests (1 in 20 is already 5 %). Any 5-minute
    # window around t contains [t - 2.5 min, t] or [t, t + 2.5 min], so both must.
    half = 150_000_000
    solid = np.minimum(masters.count(rows, half, 0), masters.count(rows, 0, half)) > _MIN_SAMPLES
    hit = np.where(masters.dense(rows), masters.slot[rows] & solid, u[rows - lo] < _LIMIT_RATE)
    outcome[rows[hit]] = _mix(rng, _LIMIT_MIX, int(hit.sum()))
    return outcome


def _apply_incidents(
    rng: np.random.Generator,
    outcome: np.ndarray,
    t: np.ndarray,
    key: np.ndarray,
    master: np.ndarray,
    pk: np.ndarray,
) -> None:
    """Overwrite outcomes in the windows of the outage, the error spike and the rate-limit storm."""
    rows = _window(t, _OUTAGE)
    rows = rows[pk[rows] == _PK_INDEX[_OUTAGE.scope_id]]
    failed = rng.random(len(rows)) < 0.98
    outcome[rows] = np.where(failed, _mix(rng, _OUTAGE_MIX, len(rows)), _OUTCOME["ok"])

    rows = _window(t, _SPIKE)
    rows = rows[(key[rows] == _KEY_INDEX[_SPIKE.scope_id]) & (rng.random(len(rows)) < 0.4)]
    outcome[rows] = _mix(rng, _SPIKE_MIX, len(rows))

    rows = _window(t, _STORM)
    outcome[rows[(master[rows] == _STORM_RANK) & (rng.random(len(rows)) < 0.6)]] = _OUTCOME["refused_limit"]


def _usage(
    rng: np.random.Generator, model: np.ndarray, group: np.ndarray, outcome: np.ndarray
) -> dict[str, np.ndarray]:
    """Streaming flag, tokens, latency, ttft and quota cost; a failed request has no completion."""
    n = len(model)
    # Three independent normals per row for the price of one draw: row i reads positions i, i + k and
    # i + 2k of one i.i.d. sequence.
    k = int(rng.integers(1_000, 1_000_000))
    z = rng.standard_normal(n + 2 * k, dtype=np.float32)
    z_prompt, z_completion, z_latency = z[:n], z[k : n + k], z[2 * k :]
    ok = outcome == _OUTCOME["ok"]
    attr = {name: values[model] for name, values in _MODEL_ATTR.items()}
    prompt = np.minimum(np.exp(6.8 + 1.1 * z_prompt) + 1, 120_000).astype(np.int32)  # median ~900
    completion = np.minimum(attr["completion_median"] * np.exp(0.9 * z_completion) + 1, 16_384)
    completion = completion.astype(np.int32) * ok
    first_token = attr["ttft_ms"] * np.exp(0.45 * z_latency)
    latency = first_token + completion * attr["ms_per_token"] + 15
    failed = np.flatnonzero(~ok)
    median, sigma = _FAIL_LATENCY[outcome[failed]].T
    latency[failed] = median * np.exp(sigma * z_latency[failed])
    prompt[failed[_REFUSED[outcome[failed]]]] = 0  # never reached a tokenizer
    stream = rng.random(n, dtype=np.float32) < _GROUP_STREAM[group]
    cost = (prompt + completion * attr["completion_price"]) * (attr["price"] * _GROUP_PRICE[group])
    return {
        "is_stream": stream,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "latency_ms": np.minimum(latency, 600_000).astype(np.int32),
        "ttft_ms": first_token.astype(np.int32),
        "has_ttft": stream & ok,
        "quota_cost": np.ceil(cost).astype(np.int64) * ok,
    }


def _calibrate_quota(t: np.ndarray, key: np.ndarray, cost: np.ndarray) -> None:
    """Rescale the near-quota key's costs to 80 % of its limit before 20:00 and 95 % by midnight."""
    own = key == _KEY_INDEX[_QUOTA.scope_id]
    evening = t >= _us(_QUOTA.start)
    parts = ((own & ~evening, _QUOTA_DAY_SHARE - _QUOTA_EVENING_SHARE), (own & evening, _QUOTA_EVENING_SHARE))
    for part, share in parts:
        rows = np.flatnonzero(part)
        weight = cost[rows].astype(np.float64)
        if weight.sum() > 0:
            # Rounding the running total keeps integers and hits the target sum exactly.
            running = np.round(np.cumsum(weight) / weight.sum() * round(share * _QUOTA_LIMIT))
            cost[rows] = np.diff(running.astype(np.int64), prepend=0)


# "0000".."9999" as little-endian 32-bit words, to write request ids four digits at a time.
_DIGITS = ((np.arange(10_000)[:, None] // np.array([1000, 100, 10, 1])) % 10 + 48).astype(np.uint8)
_DIGIT_WORDS = _DIGITS.view("<u4").ravel()


def _request_ids(day: dt.date, rows: int) -> pa.Array:
    """`req-YYYYMMDD-000nnnnnnnn`, n the row index, built as fixed-width Arrow buffers (24 bytes a row).

    pyarrow's cast + utf8_lpad + binary_join took ~0.6 s per 5 M rows; tiling 32-bit words ~50 ms.
    """
    blocks = -(-rows // 10_000)
    block = np.empty((10_000, 6), "<u4")
    block[:, :4] = np.frombuffer(f"req-{day:%Y%m%d}-000".encode(), "<u4")
    block[:, 5] = _DIGIT_WORDS  # the last four digits repeat every 10,000 rows
    words = np.tile(block, (blocks, 1))[:rows]
    words[:, 4] = np.repeat(_DIGIT_WORDS[:blocks], 10_000)[:rows]
    offsets = np.arange(0, 24 * (rows + 1), 24, dtype=np.int32)
    return pa.StringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(words))


def _strings(values: pa.Array, index: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """values[index] as a plain string column, null where `null` is set."""
    return pc.take(values, pa.array(index, mask=null))


def generate_day(day: dt.date, rows: int, seed: int) -> pa.Table:
    """All log records of one UTC day, deterministic in (day, rows, seed).

    Args:
        day: the UTC day; every `created_at` falls in [day 00:00, next day 00:00).
        rows: exactly how many records the day holds. Incident requests are part of the count: the
            traffic spike's extra requests replace other traffic rather than being added on top.
        seed: seeds the RNG together with the day's ordinal, so a day never depends on other days.

    Returns:
        A table with schema `LOG_RECORD_SCHEMA`, sorted by strictly increasing `created_at`, its
        `request_id` being `req-YYYYMMDD-000nnnnnnnn` (the row index: unique across days).

    Raises:
        ValueError: rows is negative or above 20,000,000.
    """
    if not 0 <= rows <= _MAX_ROWS:
        raise ValueError(f"rows must be in [0, {_MAX_ROWS:,}], got {rows}")
    rng = np.random.default_rng([seed, day.toordinal()])
    surge = 7 * _MASTER_SHARE[_SURGE_RANK]  # extra rate: 8x the master's own in all
    t = _timestamps(rng, rows, surge)
    key = _draw_keys(rng, t, surge)
    master, group = _KEYS["master"][key], _KEYS["group"][key]
    model = _MODEL_SAMPLER.draw(rng.random(rows), group)
    pk = _ROUTE_SAMPLER.draw(rng.random(rows), model)
    keys = _Sequence(key, len(_KEYS["key_id"]), t, _KEY_SLOT, rng)
    masters = _Sequence(master, len(_MASTER_IDS), t, _MASTER_SLOT, rng)
    _reroute_outage(rng, t, model, pk, keys)
    outcome = _baseline(rng, t, keys, masters)
    _apply_incidents(rng, outcome, t, key, master, pk)
    usage = _usage(rng, model, group, outcome)
    _calibrate_quota(t, key, usage["quota_cost"])
    refused = _REFUSED[outcome]
    midnight = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000
    columns = [
        _request_ids(day, rows),
        pa.array(t + midnight, pa.timestamp("us", tz="UTC")),
        pa.array(_MASTER_IDS[master]),
        pa.array(_KEYS["key_id"][key]),
        _strings(_GROUP_NAMES, group),
        _strings(_MODEL_NAMES, model),
        pa.array(_PK_PROVIDER[pk], mask=refused),
        _strings(_PROVIDER_TYPE_NAMES, _PK_TYPE[pk], refused),
        pa.array(_PK_ID[pk], mask=refused),
        pa.array(_STATUS[outcome]),
        _strings(_ERROR_TYPES, outcome),
        _strings(_ERROR_MESSAGES, outcome),
        pa.array(usage["latency_ms"]),
        pa.array(usage["ttft_ms"], mask=~usage["has_ttft"]),
        pa.array(usage["prompt_tokens"]),
        pa.array(usage["completion_tokens"]),
        pa.array(usage["quota_cost"]),
        pa.array(usage["is_stream"]),
        _strings(_IP_POOL, _KEYS["ip"][key]),
    ]
    return pa.Table.from_arrays(columns, schema=LOG_RECORD_SCHEMA)


def generate(days: int, rows_per_day: int, seed: int, end_day: dt.date) -> Iterator[tuple[dt.date, pa.Table]]:
    """The `days` consecutive days ending with `end_day` (inclusive), oldest first, generated lazily.

    Each day is `generate_day(day, rows_per_day, seed)`, so any sub-range yields the same tables.

    Raises:
        ValueError: days is negative (on the first `next`, as for a bad rows_per_day).
    """
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    for back in range(days - 1, -1, -1):
        day = end_day - dt.timedelta(days=back)
        yield day, generate_day(day, rows_per_day, seed)


def request_prefix(day: dt.date) -> str:
    """What the request ids of a demo day start with."""
    return f"req-{day:%Y%m%d}-"


def until(table: pa.Table, now: dt.datetime) -> pa.Table:
    """The records of a demo day (sorted by created_at) that happened before `now`: a gateway has sent
    nothing from the future."""
    times = table.column("created_at")
    cut = int(np.searchsorted(times.to_numpy(), np.datetime64(now.astimezone(dt.UTC).replace(tzinfo=None), "us")))
    return table.slice(0, cut)


# ---------------------------------------------------------------------------------------------------
# Names for the registry
# ---------------------------------------------------------------------------------------------------

_FIRST = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell", "Cyberdyne",
          "Soylent", "Aperture", "Vandelay", "Pied Piper", "Gringotts", "Oscorp", "Monarch", "Nakatomi", "Dunder",
          "Sterling", "Prestige", "Massive", "Blue Sun", "Vehement", "Oceanic", "Virtucon", "Axiom", "Weyland",
          "Zorg", "Kaiju")
_SECOND = ("Labs", "Corp", "AI", "Systems", "Health", "Media", "Logistics", "Bank", "Studio", "Robotics",
           "Retail", "Analytics", "Games", "Legal", "Travel", "Energy", "Cloud", "Bio", "Foods", "Security")
_KEY_USES = ("prod", "staging", "batch", "web", "mobile", "ci", "support-bot", "search", "agents", "eval",
             "backfill", "internal", "partner", "sandbox", "reports", "ingest", "chat", "summaries", "translate",
             "dev")
_PROVIDER_NAMES = ("OpenAI (primary)", "OpenAI (EU)", "Azure OpenAI", "Anthropic", "Anthropic (backup)",
                   "Claude Code", "Google Gemini", "Vertex AI Gemini", "OpenAI Codex", "Qwen (OpenAI-compatible)")


def registry() -> dict[str, list[dict[str, object]]]:
    """Display names for the demo's masters, keys, providers and provider keys, as a registry document
    (`PUT /admin/registry`): deterministic, so every demo lake names the same ids the same way."""
    masters = []
    for master_id in sorted(_MASTER_IDS.tolist()):
        first = _FIRST[master_id % len(_FIRST)]
        second = _SECOND[(master_id // len(_FIRST)) % len(_SECOND)]
        masters.append({"master_id": master_id, "name": f"{first} {second}", "status": "active"})
    keys = []
    for key_id in _KEYS["key_id"].tolist():
        master_id, n = divmod(key_id, 100)
        slug = _FIRST[master_id % len(_FIRST)].lower().replace(" ", "-")
        keys.append({"key_id": key_id, "master_id": master_id, "name": f"{slug}-{_KEY_USES[(n - 1) % len(_KEY_USES)]}",
                     "status": "active"})
    providers = [{"provider_id": pid, "name": _PROVIDER_NAMES[pid - 1], "provider_type": ptype, "status": "active"}
                 for pid, ptype, _ in _PROVIDERS]
    provider_keys = [{"provider_key_id": pid * 100 + n, "provider_id": pid,
                      "name": f"{_PROVIDER_NAMES[pid - 1].split(' (')[0].lower().replace(' ', '-')}-key-{n}",
                      "status": "active"}
                     for pid, _, count in _PROVIDERS for n in range(1, count + 1)]
    return {"masters": masters, "keys": keys, "providers": providers, "provider_keys": provider_keys}

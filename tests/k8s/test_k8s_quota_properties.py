"""Properties of quota placement and dispatch order, over generated fleets."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from gpufleet.model import QueueRef
from gpufleet.schema import Queue, Team
from k8s import kueue

ACCS = ["h100-80gb", "a100-80gb"]


@st.composite
def fleets(draw):
    n_sites = draw(st.integers(2, 5))
    sites = []
    for i in range(n_sites):
        is_aws = draw(st.booleans())
        cap = Counter({a: draw(st.integers(0, 64)) for a in ACCS})
        sites.append(SimpleNamespace(name=f"{'aws' if is_aws else 'dc'}-{i}", is_aws=is_aws, capacity=cap))
    for s in sites:
        s.gpu_capacity = (lambda c: lambda: Counter(c))(s.capacity)
    names = [s.name for s in sites]
    restricted = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
    refs = []
    for q in range(draw(st.integers(1, 4))):
        qsites = draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
        regulated = draw(st.booleans()) and bool(set(qsites) & set(restricted))
        if regulated:
            qsites = [s for s in qsites if s in restricted]
        quota = {a: draw(st.integers(1, 80)) for a in draw(st.lists(st.sampled_from(ACCS), min_size=1, unique=True))}
        queue = Queue(name=f"q{q}", priority=draw(st.integers(0, 3)), sites=qsites, quota=quota, data_class="regulated" if regulated else None)
        refs.append(QueueRef(Team(name=f"t{q}", namespace=f"ns{q}", queues=[queue]), queue))
    by_name = {s.name: s for s in sites}
    fleet = SimpleNamespace(
        hub="hub",
        sites=sites,
        queues=refs,
        site=lambda n: by_name[n],
        allowed_sites=lambda dc: list(restricted) if dc else None,
    )
    return fleet


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_quota_placement_never_overcommits_and_fills_in_dispatch_order(fleet):
    nominal = kueue.allocate_quota(fleet)
    used: dict[str, Counter] = {s.name: Counter() for s in fleet.sites}
    for ref in fleet.queues:
        order = kueue.dispatch_order(fleet, ref)
        assert list(nominal[ref.name]) == order
        for site, q in nominal[ref.name].items():
            used[site].update(q)
    for site in fleet.sites:
        for acc, n in used[site.name].items():
            assert n <= site.capacity[acc]
    for ref in fleet.queues:
        for acc, want in ref.queue.quota.items():
            placed = sum(nominal[ref.name][s][acc] for s in nominal[ref.name])
            assert placed <= want
            if placed < want:  # short only when every one of its sites is full
                assert all(used[s][acc] == fleet.site(s).capacity[acc] for s in nominal[ref.name])


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_dispatch_order_puts_data_centres_first_and_respects_residency(fleet):
    for ref in fleet.queues:
        order = kueue.dispatch_order(fleet, ref)
        kinds = [fleet.site(s).is_aws for s in order]
        assert kinds == sorted(kinds)  # False (data centre) before True (AWS)
        declared = [s for s in ref.queue.sites if s in order]
        assert [s for s in order if not fleet.site(s).is_aws] == [s for s in declared if not fleet.site(s).is_aws]
        assert [s for s in order if fleet.site(s).is_aws] == [s for s in declared if fleet.site(s).is_aws]
        allowed = fleet.allowed_sites(ref.queue.data_class)
        if allowed is not None:
            assert set(order) <= set(allowed)

"""Golden rulesets: each cluster in tests/golden/<case>/input.yaml renders byte for byte to its
reviewed expected.rules, and every ruleset's jump graph is closed (no unknown targets, no
orphan chains).

Regenerate after an intended change, then review the diff like code:

    PYKUBEPROXY_UPDATE_GOLDEN=1 uv run pytest tests/unit/test_golden.py
"""

from __future__ import annotations

import os

import pytest

from pykubeproxy.backends.iptables.diff import normalize_rule
from pykubeproxy.backends.iptables.ruleset import format_restore
from tests.support.netns import Netns
from tests.support.paths import GOLDEN
from tests.support.rendering import (
    orphan_chains,
    render_golden_case,
    rendered_rules,
    restore_errors,
    saved_rules,
    unknown_targets,
)

UPDATE = os.environ.get("PYKUBEPROXY_UPDATE_GOLDEN") == "1"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").is_file())


def test_every_golden_directory_is_a_case() -> None:
    directories = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
    assert directories == CASES
    assert len(CASES) >= 18


@pytest.mark.parametrize("case", CASES)
def test_ruleset_matches_the_reviewed_golden_file(case: str) -> None:
    expected_file = GOLDEN / case / "expected.rules"
    rendered = format_restore(render_golden_case(case).ruleset())
    if UPDATE:
        expected_file.write_text(rendered, encoding="utf-8")
    assert expected_file.is_file(), "no golden file; run with PYKUBEPROXY_UPDATE_GOLDEN=1"
    assert rendered == expected_file.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", CASES)
def test_every_jump_goes_to_a_declared_builtin_or_standard_target(case: str) -> None:
    assert unknown_targets(render_golden_case(case).ruleset()) == []


@pytest.mark.parametrize("case", CASES)
def test_every_declared_chain_is_jumped_to(case: str) -> None:
    assert orphan_chains(render_golden_case(case).ruleset()) == []


def test_rendering_the_same_cluster_twice_gives_identical_text() -> None:
    first = format_restore(render_golden_case("examples").ruleset())
    assert format_restore(render_golden_case("examples").ruleset()) == first


def test_every_golden_ruleset_is_accepted_by_both_iptables_backends(netns: Netns) -> None:
    for case in CASES:
        expected = (GOLDEN / case / "expected.rules").read_text(encoding="utf-8")
        assert restore_errors(netns, expected) == [], case


def test_services_left_out_of_a_golden_ruleset_are_reported_with_their_reason() -> None:
    skipped = {
        (s.name, s.invalid): s.reason
        for s in render_golden_case("skipped-services").state.skipped
        if s.kind == "Service"
    }
    assert set(skipped) == {
        ("payments-gateway", False),
        ("db", False),
        ("mesh", False),
        ("labelled-headless", False),
        ("v6only", True),
        ("typo", True),
    }
    assert skipped[("typo", True)] == "unknown type 'NodePrt'"


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_the_kernel_reports_every_golden_ruleset_exactly_as_rendered(
    netns: Netns, backend: str
) -> None:
    # Rendered text is iptables-save's canonical form, so the sync can diff it with the kernel's
    # (after normalize_rule, which allows for the kernel's 31-bit statistic probabilities).
    for case in CASES:
        ruleset = render_golden_case(case).ruleset()
        saved = saved_rules(netns, backend, format_restore(ruleset))
        for key, rules in rendered_rules(ruleset).items():
            kernel = [normalize_rule(r) for r in saved.get(key, ["(no such chain)"])]
            assert kernel == [normalize_rule(r) for r in rules], (case, key)

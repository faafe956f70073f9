"""The iptables rules kube-proxy writes the same way in iptables and IPVS mode.

Pure. Both renderers (`iptables/render.py`, `ipvs/rules.py`) take these rules from here, so a
node moving between the modes keeps them byte for byte. `mark` is the masquerade mark in hex
(`0x4000` for --masquerade-bit 14).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pykubeproxy.backends.iptables import chains as c
from pykubeproxy.backends.iptables.ruleset import Chain, quote, spec

# A jump from a built-in chain: (target chain, comment, only for NEW connections).
Jump = tuple[str, str, bool]


def comment(text: str) -> str:
    """A rule's `-m comment` match, quoted as iptables-save prints it."""
    return f"-m comment --comment {quote(text)}"


def jump_chains(jumps: Mapping[str, Sequence[Jump]]) -> list[Chain]:
    """The built-in chains with kube-proxy's jumps into its own, in the order given."""
    result = []
    for builtin, entries in jumps.items():
        rules = tuple(
            spec("-m conntrack --ctstate NEW" if new_only else None, comment(text), f"-j {target}")
            for target, text, new_only in entries
        )
        result.append(Chain(builtin, rules))
    return result


# The nat table's jumps, the same in both modes.
NAT_JUMPS: dict[str, tuple[Jump, ...]] = {
    "PREROUTING": ((c.KUBE_SERVICES, "kubernetes service portals", False),),
    "OUTPUT": ((c.KUBE_SERVICES, "kubernetes service portals", False),),
    "POSTROUTING": ((c.KUBE_POSTROUTING, "kubernetes postrouting rules", False),),
}


def forward_rules(mark: str) -> tuple[str, ...]:
    """KUBE-FORWARD: drop INVALID packets, accept marked Service traffic and its replies."""
    return (
        "-m conntrack --ctstate INVALID -j DROP",
        f"{comment('kubernetes forwarding rules')} -m mark --mark {mark}/{mark} -j ACCEPT",
        f"{comment('kubernetes forwarding conntrack rule')} "
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    )


def postrouting_rules(mark: str) -> tuple[str, ...]:
    """KUBE-POSTROUTING's masquerade: unmarked packets return, marked ones lose the mark and
    are masqueraded (IPVS mode puts its hairpin rule in front of these)."""
    return (
        f"-m mark ! --mark {mark}/{mark} -j RETURN",
        f"-j MARK --set-xmark {mark}/0x0",
        f"{comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully",
    )


def mark_masq_rules(mark: str) -> tuple[str, ...]:
    """KUBE-MARK-MASQ: set the masquerade mark (KUBE-POSTROUTING acts on it)."""
    return (f"-j MARK --set-xmark {mark}/{mark}",)

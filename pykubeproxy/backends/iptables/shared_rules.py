"""The iptables rules kube-proxy writes the same way in iptables and IPVS mode.

Pure. Both renderers (`iptables/render.py`, `ipvs/rules.py`) take these rules from here, so a
node moving between the modes keeps them byte for byte. `mark` is the masquerade mark in hex
(`0x4000` for --masquerade-bit 14).
"""

from __future__ import annotations

from pykubeproxy.backends.iptables.ruleset import quote


def comment(text: str) -> str:
    """A rule's `-m comment` match, quoted as iptables-save prints it."""
    return f"-m comment --comment {quote(text)}"


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
